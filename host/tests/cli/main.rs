//! The `spearlet` binary as a user runs it: one test binary, one module per
//! area (plugin files; a served instance and its client commands).

mod check;
mod formats;
mod inspect;
mod isolation;
mod lifecycle;
mod new;
mod observe;
mod serve;
mod served;

use std::process::{Command, Output};

use spearlet_test_artifacts::Artifact;

pub fn spearlet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .args(args)
        .output()
        .expect("run spearlet")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn path(a: Artifact) -> &'static str {
    a.path().to_str().expect("utf-8 path")
}
