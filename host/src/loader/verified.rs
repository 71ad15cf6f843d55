//! Hash the bytes that will be loaded, check they are a shared object for
//! this host, and load exactly those bytes.

use std::fs::File;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::elf;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// The sha256 of a file's content, read through a memory map.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be opened or mapped.
pub fn sha256_file(path: &Path) -> Result<Sha256Digest> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let map = map_file(&file).map_err(|e| Error::io(path, e))?;
    Ok(Sha256Digest::of(map.as_deref().unwrap_or_default()))
}

/// Maps `file` read-only; `None` for an empty file, which cannot be mapped.
fn map_file(file: &File) -> std::io::Result<Option<Mmap>> {
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read-only and lives no longer than its caller's
    // use of the bytes. Artifacts are read-only files spearlet owns; if
    // another process truncated one while it is mapped, reading would fault —
    // the accepted cost of hashing through mmap (see the artifact cache's
    // read-only files).
    unsafe { Mmap::map(file) }.map(Some)
}

/// An open file whose content has been hashed.
///
/// Holding the file open keeps the hashed inode alive, and
/// [`VerifiedFile::loader_path`] names that open file rather than the
/// directory entry, which may have been replaced since.
#[derive(Debug)]
pub(super) struct VerifiedFile {
    file: File,
    path: PathBuf,
    digest: Sha256Digest,
}

impl VerifiedFile {
    /// Opens and hashes `path`; fails if `expected` is given and differs, or
    /// if the bytes are not a shared object for this machine.
    pub(super) fn open(path: &Path, expected: Option<&Sha256Digest>) -> Result<Self> {
        let io_err = |e| Error::io(path, e);
        let file = File::open(path).map_err(io_err)?;
        let map = map_file(&file).map_err(io_err)?;
        let bytes: &[u8] = map.as_deref().unwrap_or_default();
        let digest = Sha256Digest::of(bytes);
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(Error::ChecksumMismatch {
                    path: path.to_owned(),
                    expected: expected.to_hex(),
                    actual: digest.to_hex(),
                });
            }
        }
        elf::check_shared_object(bytes).map_err(|reason| Error::ArtifactFormat {
            path: path.to_owned(),
            reason,
        })?;
        Ok(VerifiedFile {
            file,
            path: path.to_owned(),
            digest,
        })
    }

    /// The digest of the open file's content.
    pub(super) fn digest(&self) -> Sha256Digest {
        self.digest
    }

    /// The path the file was opened from (for messages).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// A path the dynamic loader resolves to this open file.
    ///
    /// The dynamic loader recognises an already-loaded library by this name.
    /// Once it has loaded the file, call [`VerifiedFile::keep_open`] so the
    /// descriptor number — and with it the name — is never reused for a
    /// different file.
    pub(super) fn loader_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Keeps the descriptor open for the life of the process (libraries are
    /// never unloaded, so neither is their name).
    pub(super) fn keep_open(self) {
        let _fd = self.file.into_raw_fd();
    }
}
