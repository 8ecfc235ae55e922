//! Running the real binary in a scratch project, and asking the real engine what is left.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
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

    /// The ids of the runs whose reports are on stdout (`Run ID …`), in order: one for
    /// a single run, one per input of a matrix.
    pub fn report_ids(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("Run ")?.split_whitespace().next())
            .map(str::to_owned)
            .collect()
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
    assert_nothing_left_on(&[], label);
}

/// Asserts that the engine that `docker` with `engine` (`-H …`) talks to holds no
/// container, network or volume with `label`, nor a service on a swarm manager.
#[track_caller]
pub fn assert_nothing_left_on(engine: &[&str], label: &str) {
    let filter = format!("label={label}");
    let list = |args: &[&str]| docker_lines(&[engine, args].concat());
    let containers = list(&["ps", "-aq", "--filter", &filter]);
    let networks = list(&["network", "ls", "-q", "--filter", &filter]);
    let volumes = list(&["volume", "ls", "-q", "--filter", &filter]);
    let manager = list(&["info", "--format", "{{.Swarm.ControlAvailable}}"]) == ["true"];
    let services = if manager {
        list(&["service", "ls", "-q", "--filter", &filter])
    } else {
        Vec::new()
    };
    assert!(
        containers.is_empty() && networks.is_empty() && volumes.is_empty() && services.is_empty(),
        "left behind with {label}: containers {containers:?}, networks {networks:?}, volumes {volumes:?}, services {services:?}"
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

/// A second Docker engine on this machine, reached as a remote one: TCP with TLS on
/// 127.0.0.1 (`images/remote-engine`).
pub struct RemoteEngine {
    /// `tcp://127.0.0.1:PORT`.
    pub host: String,
    /// The folder of the certificates: `client/` (ca, cert, key that the engine
    /// accepts), `wrong/` (a CA that did not sign the engine's certificate), `stranger/`
    /// (the right CA, a client certificate the engine does not trust).
    pub certs: PathBuf,
    /// Its Unix socket, for the `docker` CLI.
    pub socket: String,
    /// For the swarm: the Unix socket of its worker node, and that node's id. The
    /// worker is labelled with its engine, so a matrix's runs go there too.
    pub worker: Option<(String, String)>,
}

impl RemoteEngine {
    /// The remote engine, started once per test process by `images/remote-engine`,
    /// which stops it when this process ends; `None` (after a loud skip, or a failure in
    /// CI) when dockerd is not installed. Any other failure to start it fails the test.
    #[track_caller]
    pub fn get() -> Option<&'static Self> {
        static ENGINE: OnceLock<Result<RemoteEngine, String>> = OnceLock::new();
        Self::ready(ENGINE.get_or_init(|| Self::start(&[])))
    }

    /// A third engine, as [`Self::get`]: a single-node swarm manager of its own
    /// (`images/remote-engine --swarm`), which leaves the swarm when it stops.
    #[track_caller]
    pub fn swarm() -> Option<&'static Self> {
        static ENGINE: OnceLock<Result<RemoteEngine, String>> = OnceLock::new();
        Self::ready(ENGINE.get_or_init(|| Self::start(&["--swarm"])))
    }

    #[track_caller]
    fn ready(started: &'static Result<Self, String>) -> Option<&'static Self> {
        match started {
            Ok(engine) => Some(engine),
            Err(missing) => {
                skip_without(missing, "run images/setup");
                None
            }
        }
    }

    fn start(flavour: &[&str]) -> Result<Self, String> {
        let (out, code) = start_script("images/remote-engine", flavour, &[]);
        let field = |name: &str| field(&out, name);
        match (field("host"), field("certs"), field("socket")) {
            (Some(host), Some(certs), Some(socket)) => Ok(Self {
                host,
                certs: PathBuf::from(certs),
                socket,
                worker: field("worker").zip(field("worker_node")),
            }),
            _ => match code {
                Some(10) => Err("dockerd is not installed".to_owned()),
                code => panic!("images/remote-engine failed ({code:?}); its stderr is above"),
            },
        }
    }

    /// `openmono` in `project` with this engine in `DOCKER_HOST` and its client
    /// certificates (or those of `certs`, a folder under [`Self::certs`]), and a Docker
    /// config of its own.
    pub fn command(&self, project: &Project, certs: &str, args: &[&str]) -> Command {
        let mut cmd = project.command(args);
        cmd.env("DOCKER_HOST", &self.host)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", self.certs.join(certs))
            .env("DOCKER_CONFIG", project.state.path().join("docker"))
            .env_remove("DOCKER_CONTEXT");
        cmd
    }

    /// Runs `openmono` as [`Self::command`] does, with the client certificates.
    #[track_caller]
    pub fn run(&self, project: &Project, args: &[&str]) -> Run {
        Run::from(
            self.command(project, "client", args)
                .output()
                .expect("run openmono"),
        )
    }

    /// `docker` CLI output lines, from this engine.
    #[track_caller]
    pub fn docker_lines(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["-H", &self.socket];
        all.extend(args);
        docker_lines(&all)
    }

    /// Asserts that this engine (and the swarm's worker) holds nothing of run `id`.
    #[track_caller]
    pub fn assert_run_gone(&self, id: &str) {
        self.assert_nothing_left(&format!("dev.openmono.run={id}"));
    }

    /// Asserts that this engine (and the swarm's worker) holds nothing labelled `label`.
    #[track_caller]
    pub fn assert_nothing_left(&self, label: &str) {
        assert_nothing_left_on(&["-H", &self.socket], label);
        if let Some((worker, _)) = &self.worker {
            assert_nothing_left_on(&["-H", worker], label);
        }
    }
}

/// The second engine reached over ssh (`images/ssh-engine`): an sshd on 127.0.0.1 whose
/// one key carries the engine's API, and an ssh config to use it.
pub struct SshEngine {
    /// `ssh://root@127.0.0.1:PORT`.
    pub host: String,
    /// The ssh command, for `OPENMONO_SSH`: `ssh -F CONFIG`.
    pub ssh: String,
    /// The engine it leads to.
    pub remote: &'static RemoteEngine,
}

impl SshEngine {
    /// Started once per test process, leading to [`RemoteEngine::get`]'s engine, and
    /// stopped when this process ends; `None` as for that engine.
    #[track_caller]
    pub fn get() -> Option<&'static Self> {
        static ENGINE: OnceLock<Option<SshEngine>> = OnceLock::new();
        let remote = RemoteEngine::get()?;
        ENGINE
            .get_or_init(|| {
                let (out, code) = start_script(
                    "images/ssh-engine",
                    &[],
                    &[("OPENMONO_SSH_SOCKET", &remote.socket)],
                );
                match (field(&out, "host"), field(&out, "ssh")) {
                    (Some(host), Some(ssh)) => Some(Self { host, ssh, remote }),
                    _ => panic!("images/ssh-engine failed ({code:?}); its stderr is above"),
                }
            })
            .as_ref()
    }

    /// `openmono` in `project` with this engine in `DOCKER_HOST` and its ssh command.
    pub fn command(&self, project: &Project, args: &[&str]) -> Command {
        let mut cmd = project.command(args);
        cmd.env("DOCKER_HOST", &self.host)
            .env("OPENMONO_SSH", &self.ssh)
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT");
        cmd
    }

    #[track_caller]
    pub fn run(&self, project: &Project, args: &[&str]) -> Run {
        Run::from(self.command(project, args).output().expect("run openmono"))
    }
}

/// Runs one of the scripts that start a test engine (`images/…`), with `--watch` this
/// process: it closes its stdout once the engine is ready, then watches this process.
/// Returns what it printed and, if it ended (a failure), its exit code.
fn start_script(script: &str, args: &[&str], env: &[(&str, &str)]) -> (String, Option<i32>) {
    let mut child = Command::new(root().join(script))
        .args(args)
        .args(["--watch", &std::process::id().to_string()])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        // Its own process group: Ctrl-C on the tests does not stop it mid-teardown.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("read {script}: {e}"));
    if out.lines().any(|l| l.starts_with("host=")) {
        // It watches this process from now on; reaped when it ends.
        std::thread::spawn(move || child.wait());
        (out, None)
    } else {
        (out, child.wait().expect("wait").code())
    }
}

/// The value of `name=` in what a start script printed.
fn field(out: &str, name: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

/// Text without any white space: for a rendered diagnostic that wraps inside a long path.
pub fn squeezed(text: &str) -> String {
    text.split_whitespace().collect()
}
