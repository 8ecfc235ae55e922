//! Errors of the environment in plain language, each with the next step: the real binary
//! facing no engine, a socket it may not open, and an image the engine lacks. (A missing
//! model file is a playbook problem: `diagnostics.rs` has its whole diagnostic.)

use std::os::unix::fs::PermissionsExt;

use crate::support::{Project, Run, assert_nothing_left, docker, unwrapped};

/// A playbook that needs the engine and nothing else: one container, one command.
const ONE_BOX: &str = "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" \"true\"\n}\n";

/// `apply` stopped with exit code 3 and the diagnostic `code`: its message, and the
/// engine's cause last in its chain.
#[track_caller]
fn assert_engine_error(run: &Run, code: &str, message: &str, cause: &str) {
    run.expect_code(3);
    assert!(
        run.stderr
            .starts_with(&format!("openmono::engine::{code}\n\n  × {message}\n"))
            && run.stderr.contains(&format!("╰─▶ {cause}\n")),
        "{}",
        run.stderr
    );
}

#[test]
fn no_engine_at_docker_host_names_docker_host() {
    let project = Project::new();
    project.file("openmono.kdl", ONE_BOX);
    let run = Run::from(
        project
            .command(&["apply"])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .expect("run"),
    );
    run.expect_code(3);
    assert_eq!(
        run.stderr,
        "openmono::engine::not_running

  × the Docker engine is not running: nothing answers at `unix:///nonexistent/docker.sock`
  ╰─▶ Socket not found: /nonexistent/docker.sock
  help: check that an engine runs and answers at that address (`docker -H unix:///nonexistent/
        docker.sock info`), and that it is the one you mean: it came from DOCKER_HOST; `openmono
        doctor` says which engine is chosen and why
"
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn a_socket_left_by_a_stopped_engine_is_an_engine_not_running() {
    let project = Project::new();
    project.file("openmono.kdl", ONE_BOX);
    // A socket file that nothing listens on any more, as a killed dockerd leaves it.
    let socket = project.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let host = format!("unix://{}", socket.display());
    let run = Run::from(
        project
            .command(&["apply"])
            .env("DOCKER_HOST", &host)
            .output()
            .expect("run"),
    );
    assert_engine_error(
        &run,
        "not_running",
        &format!("the Docker engine is not running: nothing answers at `{host}`"),
        "Connection refused (os error 111)",
    );
}

#[test]
fn a_socket_this_user_may_not_open_says_so_and_how_to_get_in() {
    let project = Project::new();
    project.file("openmono.kdl", ONE_BOX);
    // Readable for another user: the project, and a listening socket with mode 000.
    std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let socket = project.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let host = format!("unix://{}", socket.display());
    let mut command = project.command(&["apply"]);
    // Root opens any socket: run as nobody then, as a user outside the socket's group.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        let mut as_nobody = std::process::Command::new("setpriv");
        as_nobody
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .args(args)
            .current_dir(project.path())
            .env("OPENMONO_STATE_DIR", project.state.path())
            .env("HOME", "/nonexistent");
        command = as_nobody;
    }
    let run = Run::from(command.env("DOCKER_HOST", &host).output().expect("run"));
    assert_engine_error(
        &run,
        "permission_denied",
        &format!("permission denied on the Docker engine's socket `{host}`"),
        "Permission denied (os error 13)",
    );
    assert!(
        unwrapped(&run.stderr).contains("  help: the socket lets in root and its group (usually `docker`) only: run openmono as root, or join that group (`sudo usermod -aG docker $USER`, then log in again); whoever may use the engine is root on this machine\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_image_of_ones_own_that_is_missing_says_how_to_build_it() {
    if !docker() {
        return;
    }
    let project = Project::new();
    let playbook = format!("it-own-image-{}", std::process::id());
    project.file(
        "openmono.kdl",
        &format!(
            "playbook \"{playbook}\"\ncontainer \"box\" {{\n    image \"example.org/no-such/rust:never\"\n}}\ntask \"t\" {{\n    run \"box\" \"true\"\n}}\n"
        ),
    );
    let run = project.run(&["apply"]);
    run.expect_code(3);
    assert_eq!(
        run.stderr,
        "openmono::engine::image_missing

  × image `example.org/no-such/rust:never` is not on this engine
  help: build it (`docker build -t example.org/no-such/rust:never DIR`), load it (`docker load -i
        FILE`) or pull it, or add `image \"example.org/no-such/rust:never\" { context \"DIR\" }` to
        the playbook and `apply` builds it
"
    );
    assert_nothing_left(&format!("dev.openmono.playbook={playbook}"));
}

/// A socket that accepts connections and never says a word, as a hung engine does; it
/// lives as long as the value.
struct SilentEngine {
    host: String,
    _listener: std::os::unix::net::UnixListener,
    _accepted: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
}

impl SilentEngine {
    fn new(project: &Project) -> Self {
        let socket = project.path().join("hung.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = accepted.clone();
        let incoming = listener.try_clone().expect("clone");
        std::thread::spawn(move || {
            for stream in incoming.incoming().map_while(Result::ok) {
                // Held open, never read from nor written to.
                keep.lock().expect("lock").push(stream);
            }
        });
        Self {
            host: format!("unix://{}", socket.display()),
            _listener: listener,
            _accepted: accepted,
        }
    }
}

#[test]
fn an_engine_that_never_answers_is_named_within_seconds() {
    let project = Project::new();
    project.file("openmono.kdl", ONE_BOX);
    let engine = SilentEngine::new(&project);
    for args in [&["apply"][..], &["doctor"]] {
        let started = std::time::Instant::now();
        let run = Run::from(
            project
                .command(args)
                .env("DOCKER_HOST", &engine.host)
                .output()
                .expect("run"),
        );
        let took = started.elapsed();
        assert!(took.as_secs() < 20, "{args:?} took {took:?}");
        assert!(took.as_secs() >= 9, "{args:?} gave up after {took:?}");
        let help = format!(
            "check that an engine runs and answers at that address (`docker -H {} info`), and that it is the one you mean: it came from DOCKER_HOST; `openmono doctor` says which engine is chosen and why",
            engine.host
        );
        let message = format!(
            "the Docker engine at `{}` did not answer within 15 s",
            engine.host
        );
        if args == ["apply"] {
            run.expect_code(3);
            // The temporary socket's path is long enough to be wrapped mid-word.
            let squashed = |s: &str| s.split_whitespace().collect::<String>();
            assert!(
                squashed(&run.stderr).starts_with(&squashed(&format!(
                    "openmono::engine::no_answer\n\n  × {message}\n  help: {help}\n"
                ))),
                "{}",
                run.stderr
            );
        } else {
            assert!(
                run.stdout.contains(&format!("✗ {message}\n    {help}\n")),
                "{}\n{}",
                run.stdout,
                run.stderr
            );
        }
    }
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let project = Project::new();
    project.file("openmono.kdl", ONE_BOX);
    let run = Run::from(
        project
            .command(&["apply"])
            .env("OPENMONO_JOBS", "abc")
            .output()
            .expect("run"),
    );
    run.expect_code(2);
    assert_eq!(
        run.stderr,
        "error: invalid value 'abc' in the environment variable OPENMONO_JOBS (it stands for --jobs): invalid digit found in string\n"
    );
    // Typed on the command line, it is the option's, as clap says.
    let run = Run::from(
        project
            .command(&["apply", "--jobs", "abc"])
            .env("OPENMONO_JOBS", "abc")
            .output()
            .expect("run"),
    );
    run.expect_code(2);
    assert!(
        run.stderr.starts_with(
            "error: invalid value 'abc' for '--jobs <JOBS>': invalid digit found in string\n"
        ),
        "{}",
        run.stderr
    );
}
