//! Reading an artifact safely and hashing exactly the bytes that get loaded.
//!
//! Files in artifact roots belong to other people: they may be FIFOs, huge
//! sparse files, symlinks swapped in after a check, or be rewritten while
//! being read. So a source file is opened without blocking and without
//! following a final symlink, checked on the open descriptor (a regular
//! file, not over the size limit, an ELF shared object for this machine —
//! all before hashing), then *copied* into a file spearlet owns while being
//! hashed. The copy is what gets loaded: a new inode for every load (the
//! dynamic loader recognises libraries by inode, so an old mapping is never
//! served for new bytes), and no later change to the source can reach it.
//! Files are read with `read()`, never mapped, so a source truncated under
//! us is a short read, not a SIGBUS.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use sha2::{Digest as _, Sha256};

use super::elf;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// How much is read at a time while hashing.
const CHUNK: usize = 256 * 1024;

/// The sha256 of a file's content, read (not mapped) from a safely opened
/// regular file.
///
/// # Errors
///
/// [`Error::Io`]; [`Error::NotRegularFile`].
pub fn sha256_file(path: &Path) -> Result<Sha256Digest> {
    let file = open_regular(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut reader = &file;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(Sha256Digest::from_bytes(hasher.finalize().into()))
}

/// Opens `path` for reading without blocking (a FIFO or device cannot hang
/// the host) and without following a symlink in its last component, and
/// checks on the open descriptor that it is a regular file.
///
/// # Errors
///
/// [`Error::Io`]; [`Error::NotRegularFile`].
pub fn open_regular(path: &Path) -> Result<File> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            Error::NotRegularFile {
                path: path.to_owned(),
                kind: "symbolic link",
            }
        } else {
            Error::io(path, e.into())
        }
    })?;
    let file = File::from(fd);
    let file_type = file.metadata().map_err(|e| Error::io(path, e))?.file_type();
    if !file_type.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if file_type.is_dir() {
            "directory"
        } else if file_type.is_fifo() {
            "FIFO"
        } else if file_type.is_socket() {
            "socket"
        } else if file_type.is_char_device() || file_type.is_block_device() {
            "device"
        } else {
            "special file"
        };
        return Err(Error::NotRegularFile {
            path: path.to_owned(),
            kind,
        });
    }
    Ok(file)
}

/// A file spearlet owns whose content has been hashed, open.
///
/// Holding the file open keeps the hashed inode alive, and
/// `VerifiedFile::loader_path` names that open file rather than any
/// directory entry.
#[derive(Debug)]
pub struct VerifiedFile {
    file: File,
    path: PathBuf,
    digest: Sha256Digest,
    size: u64,
}

impl VerifiedFile {
    /// Copies `source` into `dest` (a new, empty file spearlet owns),
    /// hashing the bytes as they are written. Size and ELF header are
    /// checked before anything is hashed. `dest` is left read at offset 0.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]; [`Error::NotRegularFile`]; [`Error::ArtifactTooLarge`];
    /// [`Error::ArtifactFormat`].
    pub fn copy(source: &Path, dest: File, max_size: u64) -> Result<Self> {
        Self::copy_open(open_regular(source)?, source, dest, max_size)
    }

    /// As [`VerifiedFile::copy`], from a file a host process handed over
    /// to this (worker) process: `source` is a `/proc/PID/fd/N` link to a
    /// file the host verified and holds open, which must be followed (the
    /// worker hashes what it reads again all the same).
    ///
    /// # Errors
    ///
    /// As [`VerifiedFile::copy`].
    pub fn copy_handed_over(source: &Path, dest: File, max_size: u64) -> Result<Self> {
        let src = File::open(source).map_err(|e| Error::io(source, e))?;
        let is_file = src.metadata().map_err(|e| Error::io(source, e))?.is_file();
        if !is_file {
            return Err(Error::NotRegularFile {
                path: source.to_owned(),
                kind: "special file",
            });
        }
        Self::copy_open(src, source, dest, max_size)
    }

    fn copy_open(src: File, source: &Path, mut dest: File, max_size: u64) -> Result<Self> {
        let size = checked_size(&src, source, max_size)?;
        check_header(&src, source, size)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(size).unwrap_or(CHUNK)).max(1)];
        let mut copied = 0u64;
        let mut reader = &src;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(source, e)),
            };
            copied += n as u64;
            if copied > max_size {
                return Err(Error::ArtifactTooLarge {
                    location: source.display().to_string(),
                    size: copied,
                    limit: max_size,
                });
            }
            hasher.update(&buf[..n]);
            dest.write_all(&buf[..n])
                .map_err(|e| Error::io(source, e))?;
        }
        dest.flush().map_err(|e| Error::io(source, e))?;
        // What was copied is what counts: the source may have changed size
        // while it was read.
        let verified = VerifiedFile {
            file: dest,
            path: source.to_owned(),
            digest: Sha256Digest::from_bytes(hasher.finalize().into()),
            size: copied,
        };
        check_header(&verified.file, source, copied)?;
        Ok(verified)
    }

    /// Hashes a file spearlet owns (a read-only file of its artifact
    /// cache), by reading it.
    ///
    /// # Errors
    ///
    /// As [`VerifiedFile::copy`].
    pub fn rehash(path: &Path, max_size: u64) -> Result<Self> {
        let file = open_regular(path)?;
        let size = checked_size(&file, path, max_size)?;
        check_header(&file, path, size)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut reader = &file;
        let mut read = 0u64;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    read += n as u64;
                    hasher.update(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Ok(VerifiedFile {
            file,
            path: path.to_owned(),
            digest: Sha256Digest::from_bytes(hasher.finalize().into()),
            size: read,
        })
    }

    /// Fails unless the content's digest is `expected`.
    ///
    /// # Errors
    ///
    /// [`Error::ChecksumMismatch`].
    pub fn expect(&self, expected: Option<&Sha256Digest>) -> Result<()> {
        match expected {
            Some(expected) if *expected != self.digest => Err(Error::ChecksumMismatch {
                path: self.path.clone(),
                expected: expected.to_hex(),
                actual: self.digest.to_hex(),
            }),
            _ => Ok(()),
        }
    }

    /// The digest of the content.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }

    /// The path the bytes came from (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file holding the verified bytes.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
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

    /// The open file, given up by the verification (it stays what was hashed).
    pub(super) fn into_file(self) -> File {
        self.file
    }

    /// Keeps the descriptor open for the life of the process (libraries are
    /// never unloaded, so neither is their name).
    pub(super) fn keep_open(self) {
        let _fd = self.file.into_raw_fd();
    }
}

/// A private, anonymous file to copy an artifact into (`memfd_create`).
///
/// # Errors
///
/// [`Error::Io`].
pub fn anonymous_file(name: &str) -> Result<File> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Error::io(Path::new("memfd"), e.into()))?;
    Ok(File::from(fd))
}

fn checked_size(file: &File, path: &Path, max_size: u64) -> Result<u64> {
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size > max_size {
        return Err(Error::ArtifactTooLarge {
            location: path.display().to_string(),
            size,
            limit: max_size,
        });
    }
    Ok(size)
}

/// Checks the ELF header and that its tables fit in `size` bytes, reading
/// only the header.
fn check_header(file: &File, path: &Path, size: u64) -> Result<()> {
    let mut header = [0u8; elf::HEADER_LEN];
    let len = usize::try_from(size.min(elf::HEADER_LEN as u64)).expect("at most 64");
    file.read_exact_at(&mut header[..len], 0)
        .map_err(|e| Error::io(path, e))?;
    elf::check_shared_object(&header[..len], size).map_err(|reason| Error::ArtifactFormat {
        path: path.to_owned(),
        reason,
    })
}
