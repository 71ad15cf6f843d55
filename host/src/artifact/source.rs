//! Which local file an artifact was read from, so that a later call can
//! tell whether the path still names the same bytes without reading them.

/// A local file's identity: which file a path named, and its content's
/// version as far as the file system tells (size and modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFile {
    /// Device and inode.
    pub file: (u64, u64),
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: i128,
}

impl SourceFile {
    /// The identity of what `path` names now (`None` if it names nothing).
    pub fn of(path: &std::path::Path) -> Option<SourceFile> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(SourceFile {
            file: (m.dev(), m.ino()),
            size: m.size(),
            modified_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}
