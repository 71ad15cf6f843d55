//! `spearlet plugin inspect`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use spearlet::digest::Sha256Digest;
use spearlet::loader::Plugin;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Plugin files (shared libraries) to inspect.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Refuse the file unless its sha256 is this (64 hex digits, optionally
    /// prefixed `sha256:`).
    #[arg(long, value_name = "SHA256")]
    checksum: Option<Sha256Digest>,

    /// On refusal, print the loader's full report (e.g. abi_stable's
    /// description of a layout difference) after the one-line reason.
    #[arg(long, short)]
    verbose: bool,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut refused = 0;
    for (i, file) in args.files.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        match Plugin::load_verified(file, args.checksum.as_ref()) {
            Ok(plugin) => describe(&mut out, &plugin)?,
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

fn describe(out: &mut impl Write, plugin: &Plugin) -> std::io::Result<()> {
    writeln!(out, "file:      {}", plugin.path().display())?;
    writeln!(out, "sha256:    {}", plugin.digest())?;
    writeln!(out, "plugin:    {} {}", plugin.name(), plugin.version())?;
    writeln!(
        out,
        "sdk:       spear-plugin-sdk {} (plugin ABI {})",
        plugin.sdk_version(),
        plugin.abi_version()
    )?;
    writeln!(out, "functions:")?;
    let width = plugin
        .functions()
        .iter()
        .map(|f| f.name.len() + f.signature.len())
        .max()
        .unwrap_or(0);
    for f in plugin.functions() {
        let call = format!("{}{}", f.name, f.signature);
        if f.description.is_empty() {
            writeln!(out, "  {call:<width$}  {:<6}", f.kind)?;
        } else {
            writeln!(out, "  {call:<width$}  {:<6}  {}", f.kind, f.description)?;
        }
    }
    Ok(())
}
