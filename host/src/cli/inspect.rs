//! `spearlet plugin inspect`.

mod describe;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use spearlet::artifact::{ArtifactSpec, ArtifactStore};
use spearlet::digest::Sha256Digest;
use spearlet::loader::Plugin;
use spearlet::Config;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Plugin files (shared libraries), or http(s):// URLs to download them
    /// from (URLs need --checksum).
    #[arg(required = true, value_name = "FILE|URL")]
    sources: Vec<String>,

    /// Refuse the artifact unless its sha256 is this (64 hex digits,
    /// optionally prefixed `sha256:`).
    #[arg(long, value_name = "SHA256")]
    checksum: Option<Sha256Digest>,

    /// Where downloads are cached (content-addressed; a second inspect of the
    /// same digest does not download again). Default: the data directory
    /// spearlet uses ($XDG_DATA_HOME/spearlet or ~/.local/share/spearlet).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// On refusal, print the loader's full report (e.g. abi_stable's
    /// description of a layout difference) after the one-line reason.
    #[arg(long, short)]
    verbose: bool,

    /// Time allowed per source (download and loading included), e.g.
    /// `2m`; a library that hangs while loading is reported as such.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,

    /// How to print: `text` for people, or `json` for scripts (one object
    /// per plugin file and per line; refusals stay on stderr).
    #[arg(long, value_enum, default_value_t = super::Format::Text)]
    format: super::Format,

    /// Inspect here, not in a child process (what each child does).
    #[arg(long, hide = true)]
    in_process: bool,
}

/// Inspects each source in a child process of its own: loading a library
/// runs its ELF constructors before any check can, so a library that
/// crashes, aborts or hangs there must take down a child, not the tool.
pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    if args.in_process {
        return inspect_here(args);
    }
    use std::os::unix::process::ExitStatusExt;
    let mut refused = 0;
    for (i, source) in args.sources.iter().enumerate() {
        if i > 0 && args.format == super::Format::Text {
            println!();
        }
        std::io::stdout().flush()?;
        let mut child = std::process::Command::new(std::env::current_exe()?);
        child.args(["plugin", "inspect", "--in-process", "--timeout"]);
        child.arg(humantime::format_duration(args.timeout).to_string());
        if args.format == super::Format::Json {
            child.args(["--format", "json"]);
        }
        if let Some(sum) = &args.checksum {
            child.args(["--checksum", &sum.to_hex()]);
        }
        if let Some(dir) = &args.data_dir {
            child.arg("--data-dir").arg(dir);
        }
        if args.verbose {
            child.arg("--verbose");
        }
        let mut child = child.arg(source).spawn()?;
        let status = super::child::wait_bounded(&mut child, args.timeout)?;
        match status {
            Some(status) if status.success() => {}
            Some(status) => {
                refused += 1;
                if let Some(signal) = status.signal() {
                    eprintln!(
                        "refused [load_crashed]: {source}: the library killed the inspecting process \
                         (signal {signal}) while loading: it crashed or aborted"
                    );
                }
            }
            None => {
                refused += 1;
                eprintln!(
                    "refused [load_hung]: {source}: not loaded within {:?} (a constructor that hangs?)",
                    args.timeout
                );
            }
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn inspect_here(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut downloads = None;
    let mut refused = 0;
    for (i, source) in args.sources.iter().enumerate() {
        if i > 0 && args.format == super::Format::Text {
            writeln!(out)?;
        }
        let loaded = if is_url(source) {
            let downloads = match &mut downloads {
                Some(d) => d,
                None => downloads.insert(Downloads::new(args)?),
            };
            downloads.load(source, args.checksum)
        } else {
            Plugin::load_verified(source.as_ref(), args.checksum.as_ref())
        };
        match loaded {
            Ok(plugin) => match args.format {
                super::Format::Text => describe::text(&mut out, &plugin)?,
                super::Format::Json => describe::json(&mut out, &plugin)?,
            },
            Err(err) => {
                refused += 1;
                out.flush()?;
                eprintln!("refused [{}]: {err}", err.kind());
                if args.verbose {
                    if let spearlet::Error::LayoutMismatch { details, .. } = &err {
                        eprintln!("{details}");
                    }
                }
            }
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// The artifact store and a runtime to drive it, made on first use.
struct Downloads {
    runtime: tokio::runtime::Runtime,
    store: ArtifactStore,
}

impl Downloads {
    fn new(args: &InspectArgs) -> anyhow::Result<Self> {
        let mut config = Config::default();
        if let Some(dir) = &args.data_dir {
            config.data_dir = dir.clone();
        }
        // The user named these URLs on their own command line: their hosts
        // are allowed, and no other (a redirect elsewhere is refused).
        config.artifacts.allowed_hosts = args
            .sources
            .iter()
            .filter(|s| is_url(s))
            .filter_map(|s| url::Url::parse(s).ok())
            .filter_map(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .collect();
        // This is the child process each file is loaded in already.
        config.tiers.first_load_in_worker = false;
        config.tiers.warm_workers = 0;
        Ok(Downloads {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            store: ArtifactStore::new(&config)?,
        })
    }

    fn load(&self, url: &str, checksum: Option<Sha256Digest>) -> spearlet::Result<Arc<Plugin>> {
        let spec =
            ArtifactSpec::at(url).with_checksum(checksum.map(|d| d.to_hex()).unwrap_or_default());
        let bar = progress_bar(url);
        let report = |received: u64, total: Option<u64>| {
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(received);
        };
        let result = self.runtime.block_on(self.store.load_with_progress(
            &spec,
            Some(&report),
            spearlet::isolate::Isolation::InProcess,
        ));
        bar.finish_and_clear();
        result
    }
}

/// A download bar on a terminal; nothing when stderr is redirected.
fn progress_bar(url: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("downloading {url}"));
    bar
}
