//! Compiles the `.proto` files with protox (pure Rust, no system `protoc`)
//! and generates the tonic/prost code, plus the encoded descriptor sets
//! that server reflection serves.
//!
//! Two compilations: today's SPEAR node API (`spearlet/node/`) reuses names
//! of the original `spearlet` package with other definitions, so it is
//! generated into a directory of its own and included as its own module.

use std::path::{Path, PathBuf};

use prost::Message;

fn compile(
    files: &[&str],
    out: &Path,
    descriptor: &str,
    btree_maps: &[&str],
) -> Result<(), Box<dyn std::error::Error>> {
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(descriptor), fds.encode_to_vec())?;
    let mut builder = tonic_prost_build::configure();
    for path in btree_maps {
        builder = builder.btree_map(path);
    }
    builder
        .build_server(true)
        .build_client(true)
        .out_dir(out)
        .compile_fds(fds)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    compile(
        &[
            "proto/spearlet/function.proto",
            "proto/sms/task.proto",
            "proto/sms/node.proto",
            "proto/sms/execution.proto",
            "proto/spearlet/admin/v1/admin.proto",
        ],
        &out,
        "descriptor.bin",
        // Built for every reply, with a handful of entries: a B-tree
        // needs no hasher (a HashMap's is SipHash, seeded per map).
        &[".spearlet.ExecutionResult.metrics"],
    )?;
    compile(
        &[
            "proto/spearlet/node/function.proto",
            "proto/spearlet/node/instance.proto",
        ],
        &out.join("node"),
        "descriptor.bin",
        &[],
    )?;
    Ok(())
}
