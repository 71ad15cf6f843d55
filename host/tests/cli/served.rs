//! `spearlet serve` as a child process, and the client commands run against it.

use std::process::{Command, Output};

use spearlet_test_artifacts::Artifact;

use crate::{spearlet, text};

/// `spearlet invoke` of math's `add(2, 40)` on the task named `task`, from
/// the math plugin at `math`.
pub fn add_2_40<'a>(task: &'a str, math: &'a str) -> [&'a str; 10] {
    [
        "invoke",
        "--task-name",
        task,
        "--artifact",
        math,
        "add",
        "-p",
        "a=2",
        "-p",
        "b=40",
    ]
}

/// `spearlet serve` as a child process, stopped with SIGINT on drop.
pub struct Served {
    pub child: std::process::Child,
    pub endpoint: String,
    _data: Option<tempfile::TempDir>,
}

impl Served {
    pub fn start(extra_config: &str) -> Served {
        let data = tempfile::tempdir().unwrap();
        let mut served = Served::start_in(data.path(), extra_config);
        served._data = Some(data);
        served
    }

    /// A server keeping its state in `dir` (which outlives it: a second
    /// server on the same directory is a restart).
    pub fn start_in(dir: &std::path::Path, extra_config: &str) -> Served {
        Served::start_with_env(dir, extra_config, &[])
    }

    /// A server (state in `dir`) with these environment variables.
    pub fn start_with_env(
        dir: &std::path::Path,
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> Served {
        use std::io::{BufRead, BufReader};
        let data = dir;
        let config = data.join("spearlet.toml");
        let root = Artifact::Echo.path().parent().unwrap();
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[artifacts]\nroots = [{:?}]\n{extra_config}",
                data.join("state"),
                root
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_spearlet"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // Log lines (a restart's report, say) may come first.
        let listening = lines
            .by_ref()
            .map(Result::unwrap)
            .find(|l| l.contains("listening on"))
            .expect("the server says where it listens");
        let addr = listening.rsplit(' ').next().unwrap().to_owned();
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Served {
            child,
            endpoint: format!("http://{addr}"),
            _data: None,
        }
    }

    /// Polls `spearlet status ID` (no sleeping) until its output satisfies
    /// `done`, and returns that output; fails if it never does.
    pub fn until_status(&self, id: &str, done: impl Fn(&str) -> bool) -> String {
        for _ in 0..10_000 {
            let out = text(&self.run(&["status", id]).stdout);
            if done(&out) {
                return out;
            }
        }
        panic!("execution {id} never reached the awaited state");
    }

    /// Runs a client command against this server: `--endpoint` goes after
    /// the command's own arguments, where client commands take it.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--endpoint", &self.endpoint]);
        spearlet(&all)
    }

    /// Runs a command that must succeed (else the test fails, showing its
    /// output), and returns what it printed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        stdout
    }

    /// SIGKILL: a crash, as far as the server can tell.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    /// A test that failed half-way must not leave a server behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
