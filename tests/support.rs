//! Running the real binary in a scratch project, and asking the real engine what is left.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real model that `images/setup` fetches.
pub fn gemma() -> PathBuf {
    root().join("models/gemma-3-270m-q4_k_m.gguf")
}

/// A scratch project folder with its own state directory.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub state: tempfile::TempDir,
}

/// What one run of the binary did.
pub struct Run {
    pub code: Option<i32>,
    pub stderr: String,
    pub stdout: String,
}

impl Project {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            state: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `openmono.kdl` (or another file) into the project.
    pub fn file(&self, name: &str, text: &str) -> &Self {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, text).expect("write file");
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openmono"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("OPENMONO_STATE_DIR", self.state.path())
            .env_remove("NO_COLOR");
        cmd
    }

    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run openmono"))
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The run id that `apply` announces on stderr.
    #[track_caller]
    pub fn run_id(&self) -> String {
        let line = self
            .stderr
            .lines()
            .find_map(|l| l.split("Run ").nth(1))
            .unwrap_or_else(|| panic!("no run id in:\n{}", self.stderr));
        line.split_whitespace().next().expect("id").to_owned()
    }
}

/// Whether a Docker engine answers. Without one, a test may skip (see `skip_without`).
#[track_caller]
pub fn docker() -> bool {
    let up = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        skip_without("no Docker engine answers `docker info`", "run images/setup");
    }
    up
}

/// Something a test needs is missing: locally the test skips, loudly; in CI (`CI=true`)
/// it fails, since CI installs everything the tests need.
#[track_caller]
pub fn skip_without(missing: &str, fix: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{missing}, and CI=true: {fix} first"
    );
    eprintln!("\n!!! SKIPPED: {missing}; {fix} !!!\n");
}

/// `docker` CLI output lines.
#[track_caller]
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Asserts that `out` holds every one of `lines`, each as written.
#[track_caller]
pub fn assert_contains_all(out: &str, lines: &[&str]) {
    for line in lines {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
}

/// Asserts that the engine holds no container and no network with `label`.
#[track_caller]
pub fn assert_nothing_left(label: &str) {
    let filter = format!("label={label}");
    let containers = docker_lines(&["ps", "-aq", "--filter", &filter]);
    let networks = docker_lines(&["network", "ls", "-q", "--filter", &filter]);
    let volumes = docker_lines(&["volume", "ls", "-q", "--filter", &filter]);
    assert!(
        containers.is_empty() && networks.is_empty() && volumes.is_empty(),
        "left behind with {label}: containers {containers:?}, networks {networks:?}, volumes {volumes:?}"
    );
}

/// Asserts that nothing of run `id` is left in the engine.
#[track_caller]
pub fn assert_run_gone(id: &str) {
    assert_nothing_left(&format!("dev.openmono.run={id}"));
}

/// The smallest GGUF that reads: version 3, no tensors, the architecture only.
pub fn tiny_gguf() -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let key = b"general.architecture";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(8u32.to_le_bytes());
    b.extend(5u64.to_le_bytes());
    b.extend(b"llama");
    b
}

/// A rendered diagnostic with its wrapped lines joined again (a message's `│ ` and a help's
/// indented continuations), so that a long path does not change what is compared.
pub fn unwrapped(text: &str) -> String {
    text.replace("\n  │ ", " ").replace("\n        ", " ")
}
