//! A worker's life seen from the host, on a thread per worker: its
//! standard error forwarded to the host's log, and its end recorded the
//! moment it comes.

use super::{lock, Ended, Life, TAIL};
use crate::isolate::shm::Channel;
use crate::isolate::wake::{self, Side};

/// The longest line of a worker's standard error; longer ones are split.
const LINE_CAP: usize = 4096;

/// The life of one worker, on a thread of its own: forwards what it writes
/// on standard error to the host's log (lines capped, bytes that are not
/// UTF-8 replaced), and the moment the process ends — which its pidfd
/// says, whatever holds its standard error open — records how and wakes
/// the host's waiter.
pub(super) fn reap(mut child: std::process::Child, life: &Life, channel: &Channel) {
    use rustix::event::{poll, PollFd, PollFlags};
    let id = child.id();
    let mut stderr = child.stderr.take();
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut fds = vec![PollFd::new(&life.pidfd, PollFlags::IN)];
        if let Some(err) = &stderr {
            fds.push(PollFd::new(err, PollFlags::IN));
        }
        if poll(&mut fds, None).is_err() {
            continue;
        }
        let exited = !fds[0].revents().is_empty();
        let readable = fds.get(1).is_some_and(|f| !f.revents().is_empty());
        drop(fds);
        if readable {
            // Drained in full once the process is gone, a read at a time before.
            let rounds = if exited { 64 } else { 1 };
            for _ in 0..rounds {
                match stderr.as_mut().map(|e| std::io::Read::read(e, &mut chunk)) {
                    Some(Ok(n)) if n > 0 => lines(&chunk[..n], &mut pending, life, id),
                    _ => {
                        stderr = None;
                        break;
                    }
                }
                if !exited {
                    break;
                }
            }
        }
        if exited {
            break;
        }
    }
    if !pending.is_empty() {
        let line = String::from_utf8_lossy(&pending).into_owned();
        log_line(life, id, line);
    }
    let ended = match child.wait() {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.signal(), status.code()) {
                (Some(signal), _) => Ended::Signal(signal),
                (None, Some(code)) => Ended::Exit(code),
                (None, None) => Ended::Exit(-1),
            }
        }
        Err(_) => Ended::Exit(-1),
    };
    *lock(&life.ended) = Some(ended);
    wake::wake_waiter(channel, Side::Host);
}

/// Splits what a worker wrote into lines, none longer than [`LINE_CAP`].
fn lines(bytes: &[u8], pending: &mut Vec<u8>, life: &Life, id: u32) {
    for &b in bytes {
        if b == b'\n' || pending.len() >= LINE_CAP {
            let line = String::from_utf8_lossy(pending).into_owned();
            pending.clear();
            log_line(life, id, line);
            if b == b'\n' {
                continue;
            }
        }
        pending.push(b);
    }
}

fn log_line(life: &Life, id: u32, line: String) {
    tracing::warn!(worker = id, "{}", line.escape_debug());
    let mut tail = lock(&life.tail);
    if tail.len() == TAIL {
        tail.pop_front();
    }
    tail.push_back(line);
}
