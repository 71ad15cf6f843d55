//! Compiles the `.proto` files with protox (pure Rust, no system `protoc`)
//! and generates the tonic/prost code, plus the encoded descriptor set that
//! server reflection serves.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/spearlet/function.proto",
        "proto/sms/task.proto",
        "proto/sms/node.proto",
        "proto/spearlet/admin/v1/admin.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
