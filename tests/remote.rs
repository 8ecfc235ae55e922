//! A remote engine: a second `dockerd` on this machine over TCP with TLS on 127.0.0.1
//! (`images/remote-engine`). The engine is chosen as the docker CLI chooses it, the run's
//! objects land there and not on the local engine, and a refused certificate or an engine
//! that does not answer is told in plain words with the next step.

use std::process::Command;

use std::os::unix::process::CommandExt;

use crate::support::{
    Project, RemoteEngine, Run, SshEngine, assert_nothing_left, assert_run_gone, docker, squeezed,
    unwrapped,
};

/// One container and one command: nothing that needs a model.
const ONE_BOX: &str = "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" \"echo from the box\"\n}\n";

/// The line of `plan` that names the engine.
#[track_caller]
fn engine_line(run: &Run) -> String {
    run.expect_code(0);
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("  Engine: "))
        .unwrap_or_else(|| panic!("no engine line in:\n{}", run.stdout))
        .to_owned()
}

#[test]
fn plan_names_the_engine_and_why_as_the_docker_cli_would_choose_it() {
    // Files and the docker CLI: no engine needs to answer at these addresses, but the
    // CLI wants real certificates for a context.
    let Some(remote) = RemoteEngine::get() else {
        return;
    };
    let project = Project::new();
    project.file("openmono.kdl", ONE_BOX);
    let config = project.state.path().join("docker");
    let certs = remote.certs.join("client");
    let plan = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = project.command(&[&["plan"], args].concat());
        cmd.env("DOCKER_CONFIG", &config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run"))
    };
    assert_eq!(
        engine_line(&plan(&[], &[])),
        "unix:///var/run/docker.sock (the default: no --engine, DOCKER_HOST or context)"
    );
    // A context as `docker context create` stores it, made current with `docker context use`.
    let docker = |args: &[&str]| {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", &config)
            .output()
            .expect("docker");
        assert!(out.status.success(), "{out:?}");
    };
    let endpoint = format!(
        "host=tcp://127.0.0.1:23799,ca={0}/ca.pem,cert={0}/cert.pem,key={0}/key.pem",
        certs.display()
    );
    docker(&["context", "create", "far", "--docker", &endpoint]);
    docker(&["context", "use", "far"]);
    assert_eq!(
        engine_line(&plan(&[], &[])),
        format!(
            "tcp://127.0.0.1:23799 (TLS) from context `far` (the current context in {}/config.json)",
            config.display()
        )
    );
    assert_eq!(
        engine_line(&plan(&[("DOCKER_CONTEXT", "default")], &[])),
        "unix:///var/run/docker.sock from context `default` (DOCKER_CONTEXT)"
    );
    let tls = [
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", certs.to_str().expect("utf-8")),
    ];
    let host = [&tls[..], &[("DOCKER_HOST", "tcp://127.0.0.1:23798")]].concat();
    assert_eq!(
        engine_line(&plan(&host, &[])),
        "tcp://127.0.0.1:23798 (TLS) from DOCKER_HOST"
    );
    assert_eq!(
        engine_line(&plan(&host, &["--engine", "far"])),
        "tcp://127.0.0.1:23799 (TLS) from context `far` (--engine)"
    );
    assert_eq!(
        engine_line(&plan(&host, &["--engine", "unix:///run/other.sock"])),
        "unix:///run/other.sock from --engine"
    );
    // A wrong choice is an environment problem, with the next step.
    let missing = plan(&[], &["--engine", "nowhere"]);
    missing.expect_code(3);
    // Compared without white space: the help wraps inside the long path.
    assert_eq!(
        squeezed(&missing.stderr),
        squeezed(&format!(
            "openmono::engine::no_context\n\n  × there is no Docker context `nowhere` (from context `nowhere` (--engine))\n  help: `docker context ls` lists the contexts; `docker context create nowhere --docker host=…` makes one; it would be at `{}/contexts/meta/{}/meta.json`\n",
            config.display(),
            "20aeff0494e828d188c704e1f488a589b15ae01d11f6cb129f62129caa6cc543"
        ))
    );
}

/// Seconds since the Unix epoch, with a fraction, as `docker events` takes them.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// What happened to the containers of run `id` on an engine (`docker` with `engine`)
/// since `since`: `container create`, `container destroy`, … (the engine does not label
/// volume events).
fn events(engine: &[&str], id: &str, since: &str) -> Vec<String> {
    crate::support::docker_lines(
        &[
            engine,
            &[
                "events",
                "--since",
                since,
                "--until",
                &timestamp(),
                "--filter",
                &format!("label=dev.openmono.run={id}"),
                "--format",
                "{{.Type}} {{.Action}}",
            ],
        ]
        .concat(),
    )
    .into_iter()
    .filter(|e| e.starts_with("container "))
    .collect()
}

#[test]
fn apply_on_the_tls_engine_creates_everything_there_and_leaves_nothing_on_either() {
    let Some(remote) = RemoteEngine::get() else {
        return;
    };
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file("openmono.kdl", ONE_BOX);
    let since = timestamp();
    let run = remote.run(&project, &["apply"]);
    run.expect_code(0);
    let id = run.run_id();
    assert!(
        run.stdout.starts_with(&format!("Run {id} succeeded in ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("✓ task `t` (run, exit code 0, ")
            && run.stdout.contains("\n        from the box\n"),
        "{}",
        run.stdout
    );
    // The engine recorded the run's objects coming and going; the local one never saw them.
    let there = events(&["-H", remote.socket.as_str()], &id, &since);
    for event in ["container create", "container start", "container destroy"] {
        assert!(
            there.iter().any(|e| e == event),
            "{event} missing: {there:?}"
        );
    }
    assert_eq!(events(&[], &id, &since), Vec::<String>::new());
    remote.assert_run_gone(&id);
    assert_run_gone(&id);
}

#[test]
fn refused_certificates_and_a_silent_engine_say_what_to_do() {
    let Some(remote) = RemoteEngine::get() else {
        return;
    };
    let project = Project::new();
    project.file("openmono.kdl", ONE_BOX);
    let apply = |certs: &str, host: &str| {
        let mut cmd = remote.command(&project, certs, &["apply"]);
        cmd.env("DOCKER_HOST", host);
        let run = Run::from(cmd.output().expect("run"));
        run.expect_code(3);
        assert_eq!(run.stdout, "");
        unwrapped(&run.stderr)
    };
    // A CA that did not sign the engine's certificate.
    let wrong_ca = apply("wrong", &remote.host);
    assert!(
        wrong_ca.starts_with(&format!(
            "openmono::engine::tls\n\n  × the TLS connection to the Docker engine at `{}` failed: invalid peer certificate: UnknownIssuer\n",
            remote.host
        )) && wrong_ca.contains("  help: the engine's certificate is not one to trust: it must be signed by the CA in `"),
        "{wrong_ca}"
    );
    // The right CA, but a client certificate the engine does not trust.
    let stranger = apply("stranger", &remote.host);
    assert!(
        stranger.starts_with(&format!(
            "openmono::engine::tls\n\n  × the TLS connection to the Docker engine at `{}` failed: received fatal alert: BadCertificate\n",
            remote.host
        )) && stranger.contains("  help: the engine refused your client certificate `"),
        "{stranger}"
    );
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let silent = apply("client", &format!("tcp://127.0.0.1:{port}"));
    assert!(
        silent.starts_with(&format!(
            "openmono::engine::not_running\n\n  × the Docker engine is not running: nothing answers at `tcp://127.0.0.1:{port}`\n"
        )) && silent.contains(&format!(
            "  help: check that an engine runs and answers at that address (`docker -H tcp://127.0.0.1:{port} info`, with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for TLS), and that it is the one you mean: it came from DOCKER_HOST;"
        )),
        "{silent}"
    );
    // Plain TCP is refused before anything is sent.
    let mut cmd = remote.command(&project, "client", &["apply"]);
    cmd.env_remove("DOCKER_TLS_VERIFY");
    let plain = Run::from(cmd.output().expect("run"));
    plain.expect_code(3);
    assert!(
        plain.stderr.starts_with(&format!(
            "openmono::engine::plain_tcp\n\n  × refusing the engine at `{}` (from DOCKER_HOST): plain TCP, without TLS\n",
            remote.host
        )),
        "{}",
        plain.stderr
    );
}

#[test]
fn doctor_says_which_engine_and_why() {
    let Some(remote) = RemoteEngine::get() else {
        return;
    };
    let project = Project::new();
    let mut cmd = remote.command(&project, "client", &["doctor", "--engine", &remote.host]);
    cmd.env("DOCKER_HOST", "unix:///nonexistent.sock");
    let run = Run::from(cmd.output().expect("run"));
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("✓ engine: {} (TLS) from --engine", remote.host)
    );
    assert!(lines[1].starts_with("✓ Docker engine "), "{}", run.stdout);
    // Its disk is not this machine's to measure.
    assert!(
        !run.stdout.contains("free where the engine keeps"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("✓ image openmono/agent:latest is on the engine"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_workspace_travels_to_the_tls_engine_and_the_changes_come_back() {
    let Some(remote) = RemoteEngine::get() else {
        return;
    };
    let project = Project::new();
    project
        .file(
            "openmono.kdl",
            r#"
container "box" {
    image "openmono/agent:latest"
    workspace "."
}
task "work" {
    run "box" "cat kept.txt && echo new > made/new.txt && echo more >> changed.txt && rm gone.txt && echo mine >> openmono.kdl"
}
"#,
        )
        .file("kept.txt", "as it was\n")
        .file("changed.txt", "first\n")
        .file("gone.txt", "bye\n")
        .file("made/.keep", "");
    let playbook = std::fs::read_to_string(project.path().join("openmono.kdl")).expect("read");
    let plan = remote.run(&project, &["plan"]);
    assert!(
        plan.stdout.contains(&format!(
            "  Engine: {} (TLS) from DOCKER_HOST\n  It is elsewhere: each workspace is copied into a volume of the run, and what the box changes in it is copied back after it\n",
            remote.host
        )),
        "{}",
        plan.stdout
    );
    let run = remote.run(&project, &["apply"]);
    run.expect_code(0);
    let id = run.run_id();
    // The box saw the files; its changes came back, owned by the one who ran openmono.
    assert!(
        run.stdout.contains("\n        as it was\n"),
        "{}",
        run.stdout
    );
    let dir = std::fs::canonicalize(project.path()).expect("canonical");
    assert!(
        run.stdout.contains(&format!(
            "workspace of `box` back in {}: 2 file(s) written, 1 removed\n",
            dir.display()
        )),
        "{}",
        run.stdout
    );
    let read = |name: &str| std::fs::read_to_string(project.path().join(name)).ok();
    assert_eq!(read("made/new.txt").as_deref(), Some("new\n"));
    assert_eq!(read("changed.txt").as_deref(), Some("first\nmore\n"));
    assert_eq!(read("gone.txt"), None);
    assert_eq!(read("kept.txt").as_deref(), Some("as it was\n"));
    // The playbook is protected: what the box did to it stays in the box.
    assert_eq!(read("openmono.kdl"), Some(playbook));
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(project.path().join("made/new.txt")).expect("meta");
        // SAFETY: getuid cannot fail.
        assert_eq!(meta.uid(), unsafe { libc::getuid() });
    }
    remote.assert_run_gone(&id);
    assert_eq!(
        remote.docker_lines(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.openmono.workspace={id}")
        ]),
        Vec::<String>::new()
    );
    assert_run_gone(&id);
}

#[test]
fn host_files_other_than_the_workspace_are_refused_on_an_engine_elsewhere() {
    let Some(remote) = RemoteEngine::get() else {
        return;
    };
    let project = Project::new();
    project.file("data/a.txt", "a\n").file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n    mount \"data\" \"/data\"\n}\ntask \"t\" {\n    run \"box\" \"true\"\n}\n",
    );
    // `plan` refuses it as `apply` does.
    remote.run(&project, &["plan"]).expect_code(3);
    let run = remote.run(&project, &["apply"]);
    run.expect_code(3);
    let dir = std::fs::canonicalize(project.path()).expect("canonical");
    // Compared without white space: the message wraps inside the path.
    assert!(
        squeezed(&unwrapped(&run.stderr)).starts_with(&squeezed(&format!(
            "openmono::engine::host_files\n\n  × the engine at `{}` is not on this machine: it cannot see the mount {}/data of `box`\n  help:",
            remote.host,
            dir.display()
        ))),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("`mount`s do not"), "{}", run.stderr);
}

#[test]
fn a_model_file_travels_to_the_tls_engine_once_and_answers_there() {
    let Some(remote) = RemoteEngine::get() else {
        return;
    };
    let project = Project::new();
    let gguf = project.path().join("fixture.gguf");
    openmono::gguf::fixture::write(&gguf, openmono::gguf::fixture::SENTENCE).expect("fixture");
    project.file(
        "openmono.kdl",
        "network \"n\"\nmodel \"tiny\" {\n    gguf \"fixture.gguf\"\n    network \"n\"\n    context 4096\n}\ncontainer \"c\" {\n    image \"openmono/agent:latest\"\n    network \"n\"\n}\ntask \"ask\" {\n    agent \"c\" model=\"tiny\"\n    prompt \"What holds?\"\n    max-tokens 16\n}\n",
    );
    // The volume is named by the file's content: the same on every run of this test.
    let hash = openmono::plan::sha256_file(&gguf).expect("hash");
    let volume = format!("openmono-file-{}-model.gguf", &hash[..16]);
    let _ = Command::new("docker")
        .args(["-H", &remote.socket, "volume", "rm", "-f", &volume])
        .output();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let run = remote.run(&project, &["apply"]);
        run.expect_code(0);
        assert!(
            run.stdout.contains(&format!(
                "      answer:\n        {}\n",
                openmono::gguf::fixture::SENTENCE
            )),
            "{}",
            run.stdout
        );
        remote.assert_run_gone(&run.run_id());
        // Kept for the next run, with the file whole and the mark that says so.
        let on_engine = remote.docker_lines(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.openmono.file={hash}"),
        ]);
        assert_eq!(on_engine, std::slice::from_ref(&volume));
        let dir = std::path::PathBuf::from(
            &remote.docker_lines(&["volume", "inspect", "-f", "{{.Mountpoint}}", &volume])[0],
        );
        let copy = std::fs::metadata(dir.join("model.gguf")).expect("the copy");
        assert_eq!(
            std::fs::read(dir.join("model.gguf")).expect("read the copy"),
            std::fs::read(&gguf).expect("read the model")
        );
        assert!(dir.join(".complete").is_file());
        seen.push((
            std::os::unix::fs::MetadataExt::ino(&copy),
            copy.modified().expect("mtime"),
        ));
    }
    // The second run used the copy the first made: the same file, not written again.
    assert_eq!(seen[0], seen[1], "the model was copied again");
    let _ = Command::new("docker")
        .args(["-H", &remote.socket, "volume", "rm", "-f", &volume])
        .output();
}

/// A TCP relay on 127.0.0.1 to `upstream`, which the test can cut: every connection
/// through it ends at once and no new one is taken, as when the network between this
/// machine and an engine elsewhere goes down.
struct Relay {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(upstream: &str) -> Self {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let upstream = upstream.to_owned();
        let (cut_flag, streams) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut_flag.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut held = streams.lock().expect("lock");
                for stream in [&client, &server] {
                    held.push(stream.try_clone().expect("clone"));
                }
                drop(held);
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// `runs fetch` asked of the wrong engine (the local one), which has no volume
/// `written` of run `id`: it fails, touches nothing, and the record stays for the right
/// one.
#[track_caller]
/// `used`: the engine the run used, as its record says.
fn assert_fetch_from_the_wrong_engine_touches_nothing(
    project: &Project,
    id: &str,
    written: &str,
    used: &str,
) {
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(project.path());
    let wrong = Run::from(
        project
            .command(&["runs", "fetch", id])
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", project.state.path().join("docker"))
            .output()
            .expect("run"),
    );
    wrong.expect_code(1);
    assert!(
        wrong.stderr.contains(&format!(
            "this engine (unix:///var/run/docker.sock) has no volume {written} of run {id}; the run used {used} (TLS): choose that engine (--engine, DOCKER_HOST or a context)"
        )),
        "{}",
        wrong.stderr
    );
    assert_eq!(listing(project.path()), before);
    assert_nothing_left(&format!("dev.openmono.fetch={id}"));
    assert_eq!(
        crate::support::docker_lines(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={written}")
        ]),
        Vec::<String>::new(),
        "the local engine made the volume"
    );
}

/// Whether `volume` on `remote` (whose data is on this machine) holds `file`; a volume
/// gone by the time it is looked at (another test's) does not.
fn holds(remote: &RemoteEngine, volume: &str, file: &str) -> bool {
    Command::new("docker")
        .args([
            "-H",
            &remote.socket,
            "volume",
            "inspect",
            "-f",
            "{{.Mountpoint}}",
            volume,
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|out| {
            std::path::Path::new(String::from_utf8_lossy(&out.stdout).trim())
                .join(file)
                .exists()
        })
}

#[test]
fn a_broken_connection_keeps_the_workspace_and_runs_fetch_brings_it_back() {
    let Some(remote) = RemoteEngine::get() else {
        return;
    };
    let project = Project::new();
    project
        .file(
            "openmono.kdl",
            "container \"box\" {\n    image \"openmono/agent:latest\"\n    workspace \".\"\n}\ntask \"work\" {\n    run \"box\" \"echo new > a.txt && touch written && sleep 300\"\n}\n",
        )
        .file("a.txt", "old\n");
    let volumes = || {
        remote.docker_lines(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            "label=dev.openmono.workspace",
        ])
    };
    // Volumes other runs kept: not this run's.
    let before = volumes();
    let relay = Relay::start(remote.host.trim_start_matches("tcp://"));
    let mut command = remote.command(&project, "client", &["apply"]);
    command
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", relay.port))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("run openmono");
    // The box has written its change into the volume on the engine (whose data is on
    // this machine): now the connection goes down.
    let started = std::time::Instant::now();
    let written = loop {
        let new = volumes().into_iter().filter(|v| !before.contains(v));
        let found = new
            .into_iter()
            .find(|volume| holds(remote, volume, "written"));
        if let Some(volume) = found {
            break volume;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_mins(2),
            "the box never wrote"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    relay.cut();
    let run = Run::from(child.wait_with_output().expect("openmono ends"));
    let id = run.run_id();
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    // Nothing was lost: the change waits on the engine, and the report says how to get it.
    assert_eq!(
        std::fs::read_to_string(project.path().join("a.txt")).expect("read"),
        "old\n"
    );
    assert!(
        run.stdout.contains(&format!(
            "volume {written} (kept: it holds what `box` changed in "
        )) && run
            .stdout
            .contains(&format!("`openmono runs fetch {id}` brings it back)")),
        "{}",
        run.stdout
    );
    // `gc` names the volume, and leaves it.
    let gc = remote.run(&project, &["gc", "--dry-run"]);
    gc.expect_code(0);
    assert!(
        gc.stdout.contains(&format!(
            "kept: volume {written} holds what run {id} changed in its workspace; `openmono runs fetch {id}` brings it back"
        )),
        "{}",
        gc.stdout
    );
    // The run went through the relay: that is the engine its record names.
    let used = format!("tcp://127.0.0.1:{}", relay.port);
    assert_fetch_from_the_wrong_engine_touches_nothing(&project, &id, &written, &used);
    // Later, with the engine in reach again.
    let fetch = remote.run(&project, &["runs", "fetch", &id]);
    fetch.expect_code(0);
    let dir = std::fs::canonicalize(project.path()).expect("canonical");
    assert_eq!(
        fetch.stdout,
        format!(
            "workspace of `box` back in {}: 2 file(s) written, 0 removed\n",
            dir.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("a.txt")).expect("read"),
        "new\n"
    );
    assert!(!volumes().contains(&written), "the volume is still there");
    let again = remote.run(&project, &["runs", "fetch", &id]);
    again.expect_code(0);
    assert_eq!(
        again.stdout,
        format!("run {id} has no workspace left to bring back\n")
    );
    // What the broken run left on the engine, `gc` removes: its openmono is gone.
    remote.run(&project, &["gc"]).expect_code(0);
    remote.assert_run_gone(&id);
}

#[test]
fn an_engine_over_ssh_runs_the_playbook_and_a_ctrl_c_there_still_tears_down() {
    let Some(ssh) = SshEngine::get() else {
        return;
    };
    let project = Project::new();
    project
        .file(
            "openmono.kdl",
            "container \"box\" {\n    image \"openmono/agent:latest\"\n    workspace \".\"\n}\ntask \"work\" {\n    run \"box\" \"cat note.txt && echo made > made.txt\"\n}\n",
        )
        .file("note.txt", "from here\n");
    let plan = ssh.run(&project, &["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(&format!(
            "  Engine: {} (ssh) from DOCKER_HOST\n  It is elsewhere: each workspace is copied",
            ssh.host
        )),
        "{}",
        plan.stdout
    );
    let run = ssh.run(&project, &["apply"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("\n        from here\n"),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("made.txt")).ok(),
        Some("made\n".to_owned())
    );
    ssh.remote.assert_run_gone(&run.run_id());
    // A Ctrl-C reaches openmono's whole process group, as a terminal sends it: the
    // connections over ssh live on, and the teardown removes everything there.
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"wait\" {\n    run \"box\" \"sleep 60\"\n}\n",
    );
    let mut child = ssh
        .command(&project, &["apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let mut stderr = Vec::new();
    loop {
        match seen.recv_timeout(std::time::Duration::from_mins(1)) {
            Ok(line) if line.contains("▶ run task `wait`") => break,
            Ok(line) => stderr.push(line),
            Err(e) => panic!("the task did not start ({e}): {}", stderr.join("\n")),
        }
    }
    let pgid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: a signal to the process group of the child we spawned.
    unsafe { libc::kill(-pgid, libc::SIGINT) };
    let status = child.wait().expect("wait");
    stderr.extend(seen.try_iter());
    let stderr = stderr.join("\n");
    assert_eq!(status.code(), Some(130), "{stderr}");
    let id = stderr
        .lines()
        .find_map(|l| l.split("Run ").nth(1)?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id: {stderr}"))
        .to_owned();
    assert!(stderr.contains("✓ teardown ("), "{stderr}");
    ssh.remote.assert_run_gone(&id);
}

#[test]
fn an_engine_over_ssh_that_cannot_be_reached_says_why() {
    let Some(ssh) = SshEngine::get() else {
        return;
    };
    let project = Project::new();
    project.file("openmono.kdl", ONE_BOX);
    let help = "help: check that `ssh HOST docker version` works without a question: a key that ssh finds (ssh-agent, `IdentityFile`), the host's key in `known_hosts`, and `docker` on the host's PATH for that user; OPENMONO_SSH sets the ssh command (`ssh -F FILE`)";
    // The host's key is not one we know: ssh refuses, and never asks.
    let unknown = Run::from(
        ssh.command(&project, &["apply"])
            .env(
                "OPENMONO_SSH",
                format!("{} -o UserKnownHostsFile=/dev/null", ssh.ssh),
            )
            .output()
            .expect("run"),
    );
    unknown.expect_code(3);
    assert_eq!(
        squeezed(&unwrapped(&unknown.stderr)),
        squeezed(&format!(
            "openmono::engine::ssh\n\n  × cannot reach the Docker engine at `{}` over ssh: Host key verification failed.\n  {help}\n",
            ssh.host
        ))
    );
    // Not an address ssh could take: refused before ssh runs.
    let bad = ssh.run(
        &project,
        &["plan", "--engine", "ssh://root@127.0.0.1:99999"],
    );
    bad.expect_code(3);
    assert!(
        unwrapped(&bad.stderr).contains(
            "× `ssh://root@127.0.0.1:99999` (from --engine) is not ssh://[USER@]HOST[:PORT]: `99999` is not a port (1 to 65535)"
        ),
        "{}",
        bad.stderr
    );
    // Nothing listens there.
    let refused = ssh.run(&project, &["apply", "--engine", "ssh://root@127.0.0.1:1"]);
    refused.expect_code(3);
    assert_eq!(
        squeezed(&unwrapped(&refused.stderr)),
        squeezed(&format!(
            "openmono::engine::ssh\n\n  × cannot reach the Docker engine at `ssh://root@127.0.0.1:1` over ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused\n  {help}\n"
        ))
    );
}

#[test]
fn many_runs_at_once_over_ssh_stay_under_sshds_limit_on_new_connections() {
    let Some(ssh) = SshEngine::get() else {
        return;
    };
    let project = Project::new();
    let mut playbook = String::from("var \"k\"\nmatrix \"k\" 1 2 3 4 5 6\nnetwork \"n\"\n");
    for i in 1..=3 {
        playbook.extend(std::iter::once(format!(
            "container \"c{i}\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n}}\ntask \"t{i}\" {{\n    run \"c{i}\" \"echo {{{{ var.k }}}}\"\n}}\n"
        )));
    }
    project.file("openmono.kdl", &playbook);
    // Eighteen boxes started at once, each a few calls at once, each call a connection.
    let run = ssh.run(&project, &["apply", "--matrix-jobs", "6"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("Matrix of 6 run(s): 6 succeeded, 0 did not\n"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    for id in run.report_ids() {
        ssh.remote.assert_run_gone(&id);
    }
}
