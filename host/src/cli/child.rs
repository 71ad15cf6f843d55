//! Running a piece of work in a child process of this binary, bounded in
//! time: `plugin check` and `plugin inspect` load untrusted libraries there,
//! so one that crashes or hangs while loading takes down a child, not the
//! tool.
//!
//! [`run_reporting`] also gives the child a private channel to report on:
//! the library runs in the child too, and whatever it prints on stdout or
//! stderr must never read as the child's report.

use std::fs::File;
use std::io::{self, PipeReader, Read as _};
use std::os::fd::AsFd as _;
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::{Errno, FdFlags};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// Waits for `child` up to `timeout`; kills it then. `None`: it ran out of
/// time.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        // Polled: these are one-off runs, and std has no timed wait.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The variable that tells a child started by [`run_reporting`] which
/// descriptor its report channel is.
const REPORT_FD_ENV: &str = "SPEARLET_REPORT_FD";

/// The report channel's descriptor in the child: its standard input. std
/// puts a descriptor at a chosen number in a child only as one of the
/// three standard streams (anything else takes `unsafe` code, which is kept
/// to the loader), and a checking process reads nothing from its input; the
/// process tier hands its workers their channel the same way.
const REPORT_FD: &str = "0";

/// How much of the child's stdout and stderr is kept, for diagnostics.
const OUTPUT_KEPT: usize = 4 << 10;
/// How much report is kept: a checking process sends a few KiB.
const REPORT_KEPT: usize = 1 << 20;
/// How much is read from each pipe once the child has ended: what it wrote
/// before it ended is in the pipe already (a pipe holds 64 KiB by default);
/// past this, something that outlived it is still writing.
const DRAIN_LIMIT: usize = 1 << 20;
/// How long one wait for output lasts at most before the child is looked
/// at again.
const TICK: Duration = Duration::from_millis(10);

/// How a child started by [`run_reporting`] ended, and what it sent.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status; `None`: it ran out of time and was killed.
    pub status: Option<ExitStatus>,
    /// What it sent on its report channel.
    pub report: Vec<u8>,
    /// The start of what it (and whatever it started) wrote on stdout and
    /// stderr: text to show, never to parse.
    pub output: Vec<u8>,
}

/// Runs `command` with a report channel of its own (a pipe the child takes
/// with [`report_channel`]), its stdout and stderr captured apart, in a
/// process group of its own, for `timeout` at most.
///
/// Everything is bounded by that deadline: once the child has ended, or
/// the deadline has passed, its whole process group is killed (so nothing
/// it started outlives the check), and the pipes are read for what is in
/// them then, never waited on to close — a process that escaped the group
/// may hold them open for ever.
///
/// # Errors
///
/// The pipes cannot be made, or the child cannot be started or watched.
pub fn run_reporting(mut command: Command, timeout: Duration) -> io::Result<Finished> {
    let deadline = Instant::now() + timeout;
    // Both made close-on-exec: the child inherits its ends only through
    // the standard streams std sets up for it.
    let (report, report_end) = io::pipe()?;
    let (output, output_end) = io::pipe()?;
    command
        .stdin(Stdio::from(report_end))
        .stdout(Stdio::from(output_end.try_clone()?))
        .stderr(Stdio::from(output_end))
        .env(REPORT_FD_ENV, REPORT_FD)
        .process_group(0);
    let spawned = command.spawn();
    // The command holds the write ends until dropped.
    drop(command);
    let mut child = spawned?;
    let pid = Pid::from_child(&child);
    let mut streams = [
        Stream::new(report, REPORT_KEPT),
        Stream::new(output, OUTPUT_KEPT),
    ];
    let watched = watch(pid, &mut streams, deadline);
    // Whatever happened, nothing of the child outlives this call.
    kill_group(pid);
    let status = match watched {
        Ok(true) => Some(child.wait()?),
        Ok(false) => {
            let _ = child.wait();
            None
        }
        Err(e) => {
            let _ = child.wait();
            return Err(e);
        }
    };
    drain(&mut streams)?;
    let [report, output] = streams;
    Ok(Finished {
        status,
        report: report.kept,
        output: output.kept,
    })
}

/// Reads the child's pipes until it ends (`true`; it is left unreaped) or
/// `deadline` passes (`false`).
fn watch(pid: Pid, streams: &mut [Stream], deadline: Instant) -> io::Result<bool> {
    loop {
        // Looked at without reaping it: its process id, and so its group's,
        // stays its own until the group has been killed.
        let ended = rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        )?;
        if ended.is_some() {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        pump(streams, (deadline - now).min(TICK))?;
    }
}

/// Kills the process group `pid` leads: the child, and all it started that
/// did not leave the group.
fn kill_group(pid: Pid) {
    // It fails only when the group is gone already.
    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
}

/// One pipe from the child, read into a bounded buffer.
struct Stream {
    pipe: PipeReader,
    kept: Vec<u8>,
    limit: usize,
    open: bool,
}

impl Stream {
    fn new(pipe: PipeReader, limit: usize) -> Self {
        Stream {
            pipe,
            kept: Vec::new(),
            limit,
            open: true,
        }
    }

    /// One read of what is ready; keeps what fits under the limit and
    /// discards the rest, reading on so that the child never blocks on a
    /// full pipe. How many bytes came.
    fn read_ready(&mut self) -> usize {
        let mut buf = [0u8; 8 << 10];
        match (&self.pipe).read(&mut buf) {
            Ok(0) => {
                self.open = false;
                0
            }
            Ok(n) => {
                let room = self.limit.saturating_sub(self.kept.len());
                self.kept.extend_from_slice(&buf[..n.min(room)]);
                n
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => {
                self.open = false;
                0
            }
        }
    }
}

/// Waits up to `wait` for the open streams to have something, and reads
/// what they have. How many bytes came.
fn pump(streams: &mut [Stream], wait: Duration) -> io::Result<usize> {
    let open: Vec<usize> = (0..streams.len()).filter(|&i| streams[i].open).collect();
    let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    });
    let ready: Vec<bool> = {
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .map(|&i| PollFd::new(&streams[i].pipe, PollFlags::IN))
            .collect();
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        fds.iter().map(|fd| !fd.revents().is_empty()).collect()
    };
    let mut read = 0;
    for (&i, ready) in open.iter().zip(ready) {
        if ready {
            read += streams[i].read_ready();
        }
    }
    Ok(read)
}

/// Reads what the pipes hold now, without waiting for more: until nothing
/// is ready, or [`DRAIN_LIMIT`] bytes a pipe.
fn drain(streams: &mut [Stream]) -> io::Result<()> {
    let open = |streams: &[Stream]| streams.iter().filter(|s| s.open).count();
    let mut drained = 0;
    while open(streams) > 0 && drained < DRAIN_LIMIT * streams.len() {
        let before = open(streams);
        let read = pump(streams, Duration::ZERO)?;
        // Nothing came and nothing closed: nothing more is there.
        if read == 0 && open(streams) == before {
            break;
        }
        drained += read;
    }
    Ok(())
}

/// The child's end of the report channel [`run_reporting`] opened for it,
/// to be taken before anything of a plugin is loaded: a descriptor of its
/// own, closed on exec, with its standard input (where the channel came in)
/// closed on exec too, so that no program the plugin starts inherits the
/// channel.
///
/// # Errors
///
/// Not started by [`run_reporting`]: no channel named, or standard input
/// is not a pipe.
pub fn report_channel() -> anyhow::Result<File> {
    anyhow::ensure!(
        std::env::var(REPORT_FD_ENV).as_deref() == Ok(REPORT_FD),
        "this subcommand reports to the `spearlet plugin check` that starts it, on a channel \
         that process opens; run `spearlet plugin check` instead"
    );
    let stdin = io::stdin();
    let channel = File::from(
        stdin
            .as_fd()
            .try_clone_to_owned()
            .context("the report channel")?,
    );
    anyhow::ensure!(
        channel.metadata()?.file_type().is_fifo(),
        "the report channel (standard input) is not a pipe: run `spearlet plugin check` instead"
    );
    // Standard input is a number every library knows: it no longer leads
    // to the channel (the copy above, close-on-exec, does). Code running in
    // this process could still find the copy; what runs before any check
    // — constructors — is flagged by the parent, which reads the file.
    let null = File::open("/dev/null").context("/dev/null, for standard input")?;
    rustix::stdio::dup2_stdin(&null).context("the report channel")?;
    rustix::io::fcntl_setfd(&channel, FdFlags::CLOEXEC).context("the report channel")?;
    Ok(channel)
}
