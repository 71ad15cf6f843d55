//! Hostile artifacts: each is refused with its own error, at once, and the
//! host serves a normal call afterwards.

use std::os::unix::fs::symlink;
use std::path::Path;

use spearlet::artifact::ArtifactSpec;
use spearlet::invoke::{InvokeRequest, Target};
use spearlet::{Host, Value};
use spearlet_test_artifacts::Artifact;

fn new_task(name: &str, path: &Path, function: &str) -> InvokeRequest {
    InvokeRequest::new(
        Target::NewTask {
            name: name.into(),
            description: String::new(),
            artifact: ArtifactSpec::at(path.to_string_lossy()),
        },
        function,
    )
}

/// A 64-bit ELF header with these identity fields and nothing after it.
fn elf_header(class: u8, endianness: u8, e_type: u16, machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = endianness;
    h[6] = 1;
    h[16..18].copy_from_slice(&e_type.to_le_bytes());
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h
}

/// Offsets at which the sections of an ELF64 little-endian file start.
fn section_offsets(bytes: &[u8]) -> Vec<usize> {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let u64_at = |at: usize| {
        usize::try_from(u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())).unwrap()
    };
    let (shoff, entsize, count) = (u64_at(0x28), u16_at(0x3A), u16_at(0x3C));
    let mut offsets: Vec<usize> = (0..count)
        .map(|i| u64_at(shoff + i * entsize + 0x18))
        .filter(|&o| o > 0 && o < bytes.len())
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_artifact_gets_its_own_error_and_the_host_serves_on() {
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::config_in(data.path());
    config.artifacts.roots.push(root.path().to_owned());
    config.artifacts.max_size_bytes = 16 << 20;
    let host = Host::new(config).unwrap();
    let at = |name: &str| root.path().join(name);
    let plugin = std::fs::read(Artifact::Math.path()).unwrap();
    let machine = u16::from_le_bytes([plugin[18], plugin[19]]);

    assert!(std::process::Command::new("mkfifo")
        .arg(at("fifo.so"))
        .status()
        .unwrap()
        .success());
    std::fs::create_dir(at("dir.so")).unwrap();
    symlink(at("loop-b.so"), at("loop-a.so")).unwrap();
    symlink(at("loop-a.so"), at("loop-b.so")).unwrap();
    symlink(at("nowhere.so"), at("dangling.so")).unwrap();
    std::fs::write(at("empty.so"), b"").unwrap();
    std::fs::write(at("core.so"), elf_header(2, 1, 4, machine)).unwrap();
    std::fs::write(at("elf32.so"), elf_header(1, 1, 3, machine)).unwrap();
    std::fs::write(at("big-endian.so"), elf_header(2, 2, 3, machine)).unwrap();
    std::fs::copy("/bin/true", at("executable.so")).unwrap();
    std::fs::File::create(at("huge.so"))
        .unwrap()
        .set_len(4 << 30)
        .unwrap();

    let mut cases: Vec<(String, &[&str])> = vec![
        ("fifo.so".into(), &["not_regular_file"]),
        ("dir.so".into(), &["not_regular_file"]),
        ("loop-a.so".into(), &["io"]),
        ("dangling.so".into(), &["io"]),
        ("empty.so".into(), &["artifact_format"]),
        ("core.so".into(), &["artifact_format"]),
        ("elf32.so".into(), &["artifact_format"]),
        ("big-endian.so".into(), &["artifact_format"]),
        // A position-independent executable passes the header check and
        // is refused by the dynamic loader; an older one is refused first.
        (
            "executable.so".into(),
            &["artifact_format", "not_shared_library"],
        ),
        ("huge.so".into(), &["artifact_too_large"]),
    ];
    for offset in section_offsets(&plugin) {
        let name = format!("truncated-{offset}.so");
        std::fs::write(at(&name), &plugin[..offset]).unwrap();
        cases.push((name, &["artifact_format"]));
    }
    assert!(cases.len() > 15, "the plugin has sections to cut at");

    for (name, kinds) in &cases {
        match host.invoke(new_task(name, &at(name), "add")).await {
            Err(e) => assert!(kinds.contains(&e.kind()), "{name}: {} ({e})", e.kind()),
            Ok(out) => panic!("{name} was accepted: {out:?}"),
        }
    }
    assert!(host.tasks().is_empty(), "nothing hostile became a task");

    // A file that grows while it is read: the copy stops at the size limit
    // (or at an end it catches up with), never reading forever.
    let growing = at("growing.so");
    std::fs::write(&growing, &plugin).unwrap();
    let writer = {
        let growing = growing.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(growing)
                .unwrap();
            for _ in 0..64 {
                f.write_all(&[0u8; 1 << 20]).unwrap();
            }
        })
    };
    match host.invoke(new_task("growing", &growing, "add")).await {
        Err(e) => assert!(
            [
                "artifact_too_large",
                "artifact_format",
                "not_shared_library"
            ]
            .contains(&e.kind()),
            "{e}"
        ),
        // It caught up with the end: what it read is what it loaded.
        Ok(out) => assert_eq!(
            out.execution.status,
            spearlet::exec::ExecutionStatus::Failed
        ),
    }
    writer.join().unwrap();
    let _ = host.delete_task(
        &host
            .tasks()
            .by_name("growing")
            .map(|t| t.id.to_string())
            .unwrap_or_default(),
        true,
        true,
    );
    let ok = new_task("math", Artifact::Math.path(), "add")
        .param("a", Value::I64(2))
        .param("b", Value::I64(40));
    let out = host.invoke(ok).await.unwrap();
    assert_eq!(out.execution.output, Some(Value::I64(42)));
}
