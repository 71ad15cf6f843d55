//! P3: creating a task from a local artifact — cold (evicted from the page
//! cache), warm, and a second task on an already-loaded digest — and the
//! verified plugin load against a bare `libloading` dlopen + dlsym. The warm
//! creation is also compared with its floor: hashing the file plus a bare
//! load of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use spearlet::artifact::ArtifactSpec;
use spearlet::digest::Sha256Digest;
use spearlet::invoke::{InvokeRequest, Target};
use spearlet::loader::Plugin;
use spearlet::Host;
use spearlet_test_artifacts::Artifact;

use crate::stats::{micros, summary};

pub struct P3 {
    pub cold_ms: Vec<f64>,
    pub warm_us: Vec<f64>,
    /// Per iteration: warm NEW_TASK / (sha256 of the file + bare load).
    pub warm_floor_ratios: Vec<f64>,
    /// A second task on a loaded digest whose code the tier has not seen run.
    pub same_digest_cold_tier_us: Vec<f64>,
    /// Further tasks (ten per digest) on a loaded digest whose constructor
    /// and function have proven short (a host that has been serving the
    /// plugin).
    pub same_digest_us: Vec<f64>,
    pub load_us: f64,
    pub bare_load_us: f64,
    /// Per iteration: verified load / bare dlopen.
    pub load_ratios: Vec<f64>,
}

/// The echo plugin with `tag` appended: a new digest, a new file, loadable.
fn variant(dir: &Path, tag: &str) -> anyhow::Result<PathBuf> {
    let mut bytes = std::fs::read(Artifact::Echo.path())?;
    bytes.extend_from_slice(format!("spearlet-bench:{tag}").as_bytes());
    let path = dir.join(format!("{tag}.so"));
    let mut f = std::fs::File::create(&path)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    Ok(path)
}

fn evict(path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

fn new_task(name: &str, path: &Path, checksum: Option<Sha256Digest>) -> InvokeRequest {
    let spec = ArtifactSpec::at(path.to_string_lossy())
        .with_checksum(checksum.map(|d| d.to_hex()).unwrap_or_default());
    InvokeRequest::new(
        Target::NewTask {
            name: name.into(),
            description: String::new(),
            artifact: spec,
        },
        "nop",
    )
}

pub async fn run(quick: bool, data_dir: &Path) -> anyhow::Result<P3> {
    let files = tempfile::tempdir()?;
    let host = Host::new(crate::host_config(data_dir, files.path()))?;
    let n = if quick { 8 } else { 30 };
    let (mut cold, mut warm, mut same, mut load, mut bare) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut floor_ratios, mut same_cold) = (vec![], vec![]);
    for i in 0..n {
        let cold_file = variant(files.path(), &format!("cold-{i}"))?;
        evict(&cold_file)?;
        let start = Instant::now();
        host.invoke(new_task(&format!("cold-{i}"), &cold_file, None))
            .await?;
        cold.push(micros(start.elapsed()) / 1000.0);

        let warm_file = variant(files.path(), &format!("warm-{i}"))?;
        let digest = Sha256Digest::of(&std::fs::read(&warm_file)?);
        let start = Instant::now();
        host.invoke(new_task(&format!("warm-{i}"), &warm_file, Some(digest)))
            .await?;
        warm.push(micros(start.elapsed()));

        let start = Instant::now();
        host.invoke(new_task(&format!("again-{i}"), &warm_file, Some(digest)))
            .await?;
        same_cold.push(micros(start.elapsed()));

        // Serve the plugin for a while: fresh instances run its constructor,
        // and calls its function, until both have proven short.
        for _ in 0..40 {
            let mut call = new_task(&format!("warm-{i}"), &warm_file, Some(digest));
            call.force_new_instance = true;
            host.invoke(call).await?;
        }
        for k in 0..10 {
            let start = Instant::now();
            host.invoke(new_task(
                &format!("served-{i}-{k}"),
                &warm_file,
                Some(digest),
            ))
            .await?;
            same.push(micros(start.elapsed()));
        }

        // The floor of a warm creation: hash the file, load it bare.
        let floor_file = variant(files.path(), &format!("floor-{i}"))?;
        let start = Instant::now();
        spearlet::loader::sha256_file(&floor_file)?;
        bare_load(&floor_file)?;
        let floor = micros(start.elapsed());
        floor_ratios.push(warm[warm.len() - 1] / floor);

        // Verified load vs bare dlopen, on equal-sized fresh files (one file
        // is loaded once per process), alternating.
        let ours = variant(files.path(), &format!("ours-{i}"))?;
        let theirs = variant(files.path(), &format!("bare-{i}"))?;
        let start = Instant::now();
        Plugin::load_verified(&ours, None)?;
        load.push(micros(start.elapsed()));
        let start = Instant::now();
        bare_load(&theirs)?;
        bare.push(micros(start.elapsed()));
    }
    Ok(P3 {
        load_ratios: load.iter().zip(&bare).map(|(a, b)| a / b).collect(),
        cold_ms: cold,
        warm_us: warm,
        warm_floor_ratios: floor_ratios,
        same_digest_cold_tier_us: same_cold,
        same_digest_us: same,
        load_us: summary(&load).median,
        bare_load_us: summary(&bare).median,
    })
}

/// dlopen + dlsym of the plugin's root symbol, nothing checked or hashed.
fn bare_load(path: &Path) -> anyhow::Result<()> {
    // SAFETY: the file is a copy of the echo sample plugin, whose
    // initialisers are the Rust runtime's own; loading it runs no
    // unknown code. The library is leaked, as spearlet's loader does.
    let library = unsafe { libloading::Library::new(path)? };
    let symbol = spear_plugin_sdk::ffi::ROOT_MODULE_SYMBOL;
    // SAFETY: only the symbol's address is read, never dereferenced.
    let found = unsafe { library.get::<*const u8>(symbol.as_bytes()) }.is_ok();
    anyhow::ensure!(found, "{} has no {symbol}", path.display());
    std::mem::forget(library);
    Ok(())
}

/// NEW_TASK invocations of a loaded, served digest under new names, for
/// `seconds`, for a profiler (`--profile-new-task`).
pub async fn profile(seconds: u64, data_dir: &Path) -> anyhow::Result<()> {
    let files = tempfile::tempdir()?;
    let host = Host::new(crate::host_config(data_dir, files.path()))?;
    let file = variant(files.path(), "profile")?;
    let digest = Sha256Digest::of(&std::fs::read(&file)?);
    for _ in 0..40 {
        let mut call = new_task("profile", &file, Some(digest));
        call.force_new_instance = true;
        host.invoke(call).await?;
    }
    let until = Instant::now() + std::time::Duration::from_secs(seconds);
    let (mut created, mut creating) = (0u64, std::time::Duration::ZERO);
    while Instant::now() < until {
        let mut ids = Vec::with_capacity(1000);
        let start = Instant::now();
        for _ in 0..1000 {
            let outcome = host
                .invoke(new_task(&format!("p-{created}"), &file, Some(digest)))
                .await?;
            ids.push(outcome.task_id);
            created += 1;
        }
        creating += start.elapsed();
        for id in ids {
            host.delete_task(&id, true, true)?;
        }
    }
    eprintln!(
        "{created} tasks created in {:.2} s of creating (deletions not counted): {:.1} µs each",
        creating.as_secs_f64(),
        micros(creating) / created as f64
    );
    Ok(())
}
