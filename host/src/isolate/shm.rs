//! The memory a host and one worker process share: a `memfd`, mapped by
//! both, holding a header of atomic words and one message slot per
//! direction.
//!
//! This is an ABI boundary like the plugin loader's — a binary layout two
//! processes agree on — so it is one of the few places `unsafe` is allowed:
//! turning offsets of the mapping into atomics, and copying bytes in and
//! out. Everything else in the process tier goes through the safe methods
//! here.
//!
//! The host treats what it reads as untrusted: a worker may write anything
//! anywhere in the mapping. Lengths are checked against the slot before a
//! byte is copied, and a message is copied out before it is decoded, so a
//! worker changing it meanwhile changes only its own garbage.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use memmap2::MmapRaw;

/// Identifies a spearlet channel and its layout version.
const MAGIC: u32 = 0x5350_4331; // "SPC1"

/// Bytes of the header: each word on a cache line of its own, so the two
/// sides' writes do not bounce one line between CPUs.
const HEADER: usize = 4096;
const LINE: usize = 64;

/// The most one message may carry. The pages of a slot are only backed by
/// memory once a message touches them, so a large slot costs address space,
/// not memory.
pub const SLOT_CAPACITY: usize = 64 << 20;

/// A receive buffer larger than this is given back once messages are small again.
const SHRINK_ABOVE: usize = 1 << 20;

/// Per slot: a length word, then the message.
const SLOT_BYTES: usize = SLOT_CAPACITY + 8;

/// The channel's total size.
const SIZE: usize = HEADER + 2 * SLOT_BYTES;

/// Which way a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host to worker.
    ToWorker,
    /// Worker to host.
    ToHost,
}

/// The header's words, by position.
#[derive(Debug, Clone, Copy)]
pub(super) enum Word {
    Magic = 0,
    /// Messages posted to the worker so far (the worker waits on it).
    ToWorker = 1,
    /// Messages posted to the host so far (the host waits on it).
    ToHost = 2,
    /// The worker's waking state (awake or parked; see `wake.rs`).
    WorkerState = 3,
    /// The CPU the worker last ran on.
    WorkerCpu = 4,
    /// The host waiter's state.
    HostState = 5,
    /// The CPU the host waiter last ran on.
    HostCpu = 6,
}

/// A message that does not fit a slot, or a slot holding garbage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// A message longer than [`SLOT_CAPACITY`].
    #[error("a message of {len} bytes does not fit the channel's {SLOT_CAPACITY}-byte slot")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// A slot whose length word is out of bounds.
    #[error("the slot claims {len} bytes; it holds at most {SLOT_CAPACITY}")]
    BadLength {
        /// What the length word said.
        len: u64,
    },
}

/// One mapping of a channel.
#[derive(Debug)]
pub struct Channel {
    map: MmapRaw,
}

impl Channel {
    /// A new channel (the host's side): its memfd, sized and mapped.
    ///
    /// # Errors
    ///
    /// When the memfd cannot be made, sized or mapped.
    pub fn create() -> std::io::Result<(Channel, OwnedFd)> {
        // CLOEXEC: only the worker it is made for gets it (as its standard
        // input, which the spawn sets up with a copy that is inherited).
        // Sealed at its size: a worker truncating it would make the host's
        // next access to the mapping fault (SIGBUS) and take the host down.
        use rustix::fs::{MemfdFlags, SealFlags};
        let fd = rustix::fs::memfd_create(
            "spearlet-channel",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, SIZE as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let file = File::from(fd);
        let channel = Channel {
            map: MmapRaw::map_raw(&file)?,
        };
        channel.word(Word::Magic).store(MAGIC, Ordering::Relaxed);
        Ok((channel, OwnedFd::from(file)))
    }

    /// The worker's side: the channel the host passed as `fd`.
    ///
    /// # Errors
    ///
    /// When `fd` is not a channel of this layout.
    pub fn open(fd: impl AsFd) -> std::io::Result<Channel> {
        let size = rustix::fs::fstat(&fd)?.st_size;
        if u64::try_from(size).ok() != Some(SIZE as u64) {
            return Err(std::io::Error::other(format!(
                "the channel is {size} bytes, this worker expects {SIZE}"
            )));
        }
        let file = File::from(fd.as_fd().try_clone_to_owned()?);
        let channel = Channel {
            map: MmapRaw::map_raw(&file)?,
        };
        if channel.word(Word::Magic).load(Ordering::Relaxed) != MAGIC {
            return Err(std::io::Error::other(
                "the channel was made by another spearlet version",
            ));
        }
        Ok(channel)
    }

    /// A header word.
    pub(super) fn word(&self, word: Word) -> &AtomicU32 {
        let offset = word as usize * LINE;
        debug_assert!(offset + 4 <= HEADER);
        // SAFETY: `offset` is within the header, which is within the
        // mapping (`SIZE` bytes, sealed against shrinking, page-aligned, so
        // 4-aligned at every multiple of 64); the mapping lives as long as
        // `self`. This process accesses these words only through atomics;
        // the other process may write anything there, and every value of a
        // u32 is a valid `AtomicU32`.
        unsafe { &*self.map.as_mut_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The flag the plugin polls to know it should stop (its `cancelled`).
    pub fn cancel_flag(&self) -> &AtomicBool {
        let offset = 7 * LINE;
        // SAFETY: as in `word`: within the header, aligned, alive as long as
        // `self`. The host only stores to it (true or false). The worker
        // hands it to its plugin as the call's `cancelled` flag, and only
        // code running in the worker — the plugin itself — could put a byte
        // other than 0 or 1 there: that is the plugin corrupting its own
        // process, which the host survives like any crash of it.
        unsafe { &*self.map.as_mut_ptr().add(offset).cast::<AtomicBool>() }
    }

    fn slot(direction: Direction) -> usize {
        match direction {
            Direction::ToWorker => HEADER,
            Direction::ToHost => HEADER + SLOT_BYTES,
        }
    }

    /// Writes `message` into the slot of `direction`. The other side must
    /// not be reading it: the protocol alternates, so the writer owns the
    /// slot until it posts.
    ///
    /// # Errors
    ///
    /// [`SlotError::TooLarge`].
    pub fn write(&self, direction: Direction, message: &[u8]) -> Result<(), SlotError> {
        if message.len() > SLOT_CAPACITY {
            return Err(SlotError::TooLarge { len: message.len() });
        }
        let base = Self::slot(direction);
        let len = (message.len() as u64).to_le_bytes();
        // SAFETY: the slot's 8-byte length word and `message.len()` bytes
        // after it lie within the mapping (checked above against the
        // slot's capacity; the size is sealed); the source is a live Rust
        // slice that cannot overlap the mapping's pages. The other side
        // does not touch the slot until it is posted (a misbehaving one
        // only garbles its own next message).
        unsafe {
            let at = self.map.as_mut_ptr().add(base);
            std::ptr::copy_nonoverlapping(len.as_ptr(), at, len.len());
            std::ptr::copy_nonoverlapping(message.as_ptr(), at.add(8), message.len());
        }
        Ok(())
    }

    /// Copies the message in the slot of `direction` into `out`. The
    /// length is checked before anything is copied; the copy is what gets
    /// decoded, so the other side changing the slot meanwhile cannot change
    /// what was checked.
    ///
    /// # Errors
    ///
    /// [`SlotError::BadLength`].
    pub fn read(&self, direction: Direction, out: &mut Vec<u8>) -> Result<(), SlotError> {
        let base = Self::slot(direction);
        let mut len = [0u8; 8];
        // SAFETY: the 8-byte length word lies within the mapping; the
        // destination is a local array.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(base), len.as_mut_ptr(), 8);
        }
        let len = u64::from_le_bytes(len);
        let n = usize::try_from(len)
            .ok()
            .filter(|n| *n <= SLOT_CAPACITY)
            .ok_or(SlotError::BadLength { len })?;
        out.clear();
        // A large message once must not pin its size for the channel's life.
        if out.capacity() > SHRINK_ABOVE && n <= SHRINK_ABOVE {
            out.shrink_to(SHRINK_ABOVE);
        }
        out.reserve(n);
        // SAFETY: `n` bytes after the length word lie within the slot
        // (checked above; the size is sealed); `out` has room for `n`
        // bytes, which are all initialised by the copy before `set_len`.
        // A worker rewriting the slot meanwhile changes only bytes, never
        // their bounds, and the copy is what gets decoded.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(base + 8), out.as_mut_ptr(), n);
            out.set_len(n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_goes_across_and_a_bad_length_is_refused() {
        let (host, fd) = Channel::create().expect("channel");
        let worker = Channel::open(&fd).expect("open");
        host.write(Direction::ToWorker, b"hello").unwrap();
        let mut out = Vec::new();
        worker.read(Direction::ToWorker, &mut out).unwrap();
        assert_eq!(out, b"hello");
        worker.word(Word::ToHost).store(7, Ordering::Release);
        assert_eq!(host.word(Word::ToHost).load(Ordering::Acquire), 7);
        // A worker writing garbage into the length word.
        worker.write(Direction::ToHost, b"x").unwrap();
        let garbage = (SLOT_CAPACITY as u64 + 1).to_le_bytes();
        // SAFETY: test only: the length word of the worker's slot.
        unsafe {
            std::ptr::copy_nonoverlapping(
                garbage.as_ptr(),
                worker
                    .map
                    .as_mut_ptr()
                    .add(Channel::slot(Direction::ToHost)),
                8,
            );
        }
        assert_eq!(
            host.read(Direction::ToHost, &mut out),
            Err(SlotError::BadLength {
                len: SLOT_CAPACITY as u64 + 1
            })
        );
        assert!(matches!(
            host.write(Direction::ToWorker, &vec![0; SLOT_CAPACITY + 1]),
            Err(SlotError::TooLarge { .. })
        ));
    }
}
