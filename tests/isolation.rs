//! From inside the agent container: the model answers by its name on the private
//! network, and nothing of the host answers at all. A control run from a plain internal
//! network shows that the same probe does see the host when the box is not sealed.

use std::{
    net::TcpListener,
    os::unix::fs::MetadataExt,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::support::{
    Project, Run, assert_contains_all, assert_nothing_left, assert_run_gone, docker, docker_lines,
    gemma,
};

/// Prints the box's default routes (`DEFAULT none` without one) and its network's
/// gateway (`GATEWAY ip`: the first address of the subnet its interface is on, where
/// Docker puts it), then tries a TCP connection to each address and to the gateway with
/// a timeout; prints `BLOCKED ip` or `REACHED ip`.
pub const PROBE: &str = r#"#!/bin/bash
port=$1; shift
ip() { echo $((16#${1:6:2})).$((16#${1:4:2})).$((16#${1:2:2})).$((16#${1:0:2})); }
defaults=$(awk 'NR > 1 && $2 == "00000000" && $8 == "00000000" { print $1, $3 }' /proc/net/route)
echo "DEFAULT ${defaults:-none}"
gw=
read -r net mask < <(awk 'NR > 1 && $1 == "eth0" && $2 != "00000000" { print $2, $8; exit }' /proc/net/route)
if [ -n "$net" ]; then
    first=$(( (16#${net:6:2} << 24 | 16#${net:4:2} << 16 | 16#${net:2:2} << 8 | 16#${net:0:2}) + 1 ))
    gw=$((first >> 24 & 255)).$((first >> 16 & 255)).$((first >> 8 & 255)).$((first & 255))
fi
echo "GATEWAY $gw"
for ip in "$@" $gw; do
    if timeout 3 bash -c "exec 3<>/dev/tcp/$ip/$port" 2>/dev/null; then
        echo "REACHED $ip"
    else
        echo "BLOCKED $ip"
    fi
done
"#;

/// Everything task `task` of `run` wrote, from its log in the run's folder.
#[track_caller]
fn task_log(project: &Project, run: &Run, task: &str) -> String {
    let path = project
        .state
        .path()
        .join("runs")
        .join(run.run_id())
        .join(format!("{task}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A listener on every host address that counts who connects.
pub fn host_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stream.is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, accepted)
}

/// The host's own IPv4 addresses.
pub fn host_addresses() -> Vec<String> {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_model_answers_by_name_and_the_host_is_unreachable() {
    if !docker() {
        return;
    }
    let (port, accepted) = host_listener();
    let addresses = host_addresses();
    assert!(!addresses.is_empty(), "the host has IPv4 addresses to try");
    let project = Project::new();
    project.file("probe.sh", PROBE);
    project.file(
        "openmono.kdl",
        &format!(
            r#"
playbook "it-isolation"
network "sandbox"
model "gemma" {{
    gguf "{gguf}"
    context 512
    network "sandbox"
}}
container "agent" {{
    image "openmono/agent:latest"
    network "sandbox"
    workspace "."
}}
task "ask" {{
    agent "agent" model="gemma"
    prompt "Say hello."
    max-steps 1
    max-tokens 16
    continue-on-error #true
}}
task "reach-host" after="ask" {{
    run "agent" "bash /workspace/probe.sh {port} {addresses}"
}}
"#,
            gguf = gemma().display(),
            addresses = addresses.join(" "),
        ),
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    let out = &run.stdout;
    let id = run.run_id();
    let runs = project.state.path().join("runs").join(&id);
    // The model answered the agent, by its name on the private network.
    let transcript = std::fs::read_to_string(runs.join("ask.jsonl")).expect("transcript");
    assert!(
        transcript.contains(r#""event":"model_turn""#),
        "no model turn: {transcript}\n{out}"
    );
    // No route out: no default route, and nothing of the host answers at any of its
    // addresses or at the network's gateway.
    assert!(out.contains("        DEFAULT none\n"), "{out}");
    for address in &addresses {
        assert!(
            out.contains(&format!("        BLOCKED {address}\n")),
            "{address}: {out}"
        );
    }
    let gateway = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("GATEWAY "))
        .unwrap_or_else(|| panic!("no gateway line: {out}"));
    assert!(!gateway.is_empty(), "{out}");
    assert!(
        out.contains(&format!("        BLOCKED {gateway}\n")),
        "{out}"
    );
    assert!(!out.contains("REACHED"), "{out}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the host listener was reached"
    );
    // The self-test ran before the agent, on the same addresses and the same gateway,
    // and found nothing open.
    let log = task_log(&project, &run, "ask");
    assert!(
        log.contains("self-test closed: no default route\n"),
        "{log}"
    );
    for address in addresses.iter().map(String::as_str).chain([gateway]) {
        assert!(
            log.contains(&format!("self-test closed: {address} port 9: ")),
            "{address}: {log}"
        );
    }
    assert!(
        log.contains("self-test closed: openmono-self-test.invalid: not resolved\n"),
        "{log}"
    );
    assert!(!log.contains("self-test OPEN"), "{log}");
    assert_run_gone(&id);
}

#[test]
fn control_a_plain_internal_network_does_reach_the_host() {
    if !docker() {
        return;
    }
    let (port, accepted) = host_listener();
    let label = format!("dev.openmono.test=isolation-control-{}", std::process::id());
    let network = format!("openmono-test-control-{}", std::process::id());
    docker_lines(&[
        "network",
        "create",
        "--internal",
        "--label",
        &label,
        &network,
    ]);
    let project = Project::new();
    project.file("probe.sh", PROBE);
    let mount = format!("{}:/probe:ro", project.path().display());
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--label",
            &label,
            "--network",
            &network,
            "-v",
            &mount,
        ])
        .args([
            "openmono/agent:latest",
            "bash",
            "/probe/probe.sh",
            &port.to_string(),
        ])
        .output()
        .expect("docker run");
    docker_lines(&["network", "rm", &network]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("REACHED"),
        "the probe must see the host here: {stdout}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(accepted.load(Ordering::SeqCst) >= 1);
    assert_nothing_left(&label);
}

/// Prints every mount of the box that comes from a file system of the host (not the
/// image's overlay or the kernel's virtual ones) as `MOUNT target source-path options`,
/// the capability sets and `NoNewPrivs`, and every socket file anywhere in the box.
pub const LOOK_AROUND: &str = r#"#!/bin/bash
awk '{ for (i = 7; $i != "-"; i++); t = $(i + 1)
       if (t !~ /^(overlay|proc|tmpfs|devpts|sysfs|cgroup2?|mqueue)$/) print "MOUNT", $5, $4, $6 }' /proc/self/mountinfo
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status
sockets=$(find / \( -path /proc -o -path /sys \) -prune -o -type s -print 2>/dev/null)
echo "SOCKETS ${sockets:-none}"
for s in /var/run/docker.sock /run/docker.sock; do
    [ -e "$s" ] && echo "FOUND $s" || echo "ABSENT $s"
done
"#;

#[test]
fn only_the_workspace_is_visible_and_the_box_holds_no_privilege_and_no_socket() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file("look.sh", LOOK_AROUND);
    project.file(
        "openmono.kdl",
        r#"
playbook "it-isolation-files"
network "sandbox"
container "agent" {
    image "openmono/agent:latest"
    network "sandbox"
    workspace "."
}
task "look" {
    run "agent" "bash /workspace/look.sh"
}
"#,
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    // The whole output, not the report's last lines.
    let out = &task_log(&project, &run, "look");
    let root = docker_lines(&["info", "--format", "{{.DockerRootDir}}"]).join("");
    let project_dir = std::fs::canonicalize(project.path()).expect("canonical");
    let mut mounts: Vec<(String, String, String)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("MOUNT "))
        .map(|m| {
            let fields: Vec<&str> = m.split(' ').collect();
            assert_eq!(fields.len(), 3, "{m}");
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[2].to_owned(),
            )
        })
        .collect();
    mounts.sort();
    let targets: Vec<&str> = mounts.iter().map(|(t, _, _)| t.as_str()).collect();
    // The workspace, the playbook in it (read-only over itself), openmono's own volume,
    // and the three files Docker writes for every container: nothing else of the host.
    assert_eq!(
        targets,
        [
            "/.openmono",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/workspace",
            "/workspace/openmono.kdl",
        ],
        "{out}"
    );
    let mount = |target: &str| {
        mounts
            .iter()
            .find(|(t, _, _)| t == target)
            .map(|(_, source, options)| (source.as_str(), options.split(',').next().unwrap_or("")))
            .expect("listed")
    };
    assert_eq!(
        mount("/workspace"),
        (project_dir.to_str().expect("utf-8"), "rw")
    );
    assert_eq!(
        mount("/workspace/openmono.kdl"),
        (
            project_dir.join("openmono.kdl").to_str().expect("utf-8"),
            "ro"
        )
    );
    let (volume, mode) = mount("/.openmono");
    assert!(
        volume.starts_with(&format!("{root}/volumes/openmono-file-"))
            && volume.ends_with("-openmono/_data"),
        "{volume}"
    );
    assert_eq!(mode, "ro");
    for file in ["hostname", "hosts", "resolv.conf"] {
        let (source, _) = mount(&format!("/etc/{file}"));
        assert!(
            source.starts_with(&format!("{root}/containers/"))
                && source.ends_with(&format!("/{file}")),
            "{source}"
        );
    }
    assert_contains_all(
        out,
        &[
            "CapInh:\t0000000000000000\n",
            "CapPrm:\t0000000000000000\n",
            "CapEff:\t0000000000000000\n",
            "CapBnd:\t0000000000000000\n",
            "CapAmb:\t0000000000000000\n",
            "NoNewPrivs:\t1\n",
            "SOCKETS none\n",
            "ABSENT /var/run/docker.sock\n",
            "ABSENT /run/docker.sock\n",
        ],
    );
    // The playbook and `.git/hooks` cannot be written from inside: see
    // `apply::the_playbook_and_git_hooks_and_config_stay_read_only_in_a_writable_workspace`.
    assert_run_gone(&run.run_id());
}

#[test]
fn files_the_box_writes_belong_to_the_user_who_ran_openmono_not_root() {
    if !docker() {
        return;
    }
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (me, my_group) = unsafe { (libc::getuid(), libc::getgid()) };
    // As root, run openmono as another user who may use the engine (the socket's
    // group), so that a box running as root could not pass for the caller.
    let (uid, gid) = if me == 0 {
        (4321, 4321)
    } else {
        (me, my_group)
    };
    let project = Project::new();
    project.file(
        "openmono.kdl",
        r#"
playbook "it-isolation-owner"
network "sandbox"
container "agent" {
    image "openmono/agent:latest"
    network "sandbox"
    workspace "."
}
task "write" {
    run "agent" """
        echo "ids $(id -u):$(id -g) home $HOME"
        touch "$HOME/.probe" && echo "home is writable"
        echo made > /workspace/made.txt
        mkdir -p /workspace/sub/dir && echo deep > /workspace/sub/dir/file
        """
}
"#,
    );
    let mut command = project.command(&["apply"]);
    if me == 0 {
        for dir in [project.path(), project.state.path()] {
            chown_tree(dir, uid, gid);
        }
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
            .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
        let engine_group = std::fs::metadata(&socket)
            .expect("the engine's socket")
            .gid();
        let inner = command;
        command = Command::new("setpriv");
        command
            .args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                format!("--groups={engine_group}"),
                "--".to_owned(),
            ])
            .arg(inner.get_program())
            .args(inner.get_args())
            .current_dir(project.path())
            .envs(
                inner
                    .get_envs()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
            );
    }
    let run = Run::from(command.output().expect("run openmono"));
    run.expect_code(0);
    let out = &run.stdout;
    assert!(
        out.contains(&format!("        ids {uid}:{gid} home /tmp\n")),
        "{out}"
    );
    assert!(out.contains("        home is writable\n"), "{out}");
    for made in ["made.txt", "sub", "sub/dir", "sub/dir/file"] {
        let meta = std::fs::metadata(project.path().join(made)).expect(made);
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{made}");
    }
    assert_eq!(
        std::fs::read_to_string(project.path().join("sub/dir/file")).expect("file"),
        "deep\n"
    );
    assert_run_gone(&run.run_id());
}

/// Gives `dir` and everything in it to `uid:gid`.
fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown");
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            chown_tree(&path, uid, gid);
        } else {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
        }
    }
}

/// A UDP listener on port 53 of each address that is free there (another resolver may
/// hold one: that address is left out), counting the datagrams it gets.
pub fn dns_listeners(addresses: &[String]) -> (Vec<String>, Arc<AtomicUsize>) {
    let heard = Arc::new(AtomicUsize::new(0));
    let mut bound = Vec::new();
    for address in addresses {
        let Ok(socket) = std::net::UdpSocket::bind((address.as_str(), 53)) else {
            eprintln!("port 53 of {address} is taken: not listening there");
            continue;
        };
        bound.push(address.clone());
        let count = Arc::clone(&heard);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while socket.recv_from(&mut buffer).is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    (bound, heard)
}

/// Runs `apply` in `project`, whose playbook has a task that touches
/// `/workspace/ready` and then waits for `/workspace/go`: `look` runs while it waits.
fn while_paused<T>(project: &Project, look: impl FnOnce() -> T) -> (Run, T) {
    let child = project
        .command(&["apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openmono");
    let ready = project.path().join("ready");
    let started = std::time::Instant::now();
    while !ready.exists() && started.elapsed() < Duration::from_mins(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = look();
    std::fs::write(project.path().join("go"), "").expect("go");
    (
        Run::from(child.wait_with_output().expect("openmono ends")),
        seen,
    )
}

/// `format` (a `docker inspect` template) of every running container of playbook
/// `playbook`, as the engine has them, sorted.
fn inspect_all(playbook: &str, format: &str) -> Vec<String> {
    let filter = format!("label=dev.openmono.playbook={playbook}");
    let mut all: Vec<String> = docker_lines(&["ps", "-q", "--filter", &filter])
        .iter()
        .map(|id| docker_lines(&["inspect", "--format", format, id]).join(""))
        .collect();
    all.sort();
    all
}

#[test]
fn no_outside_name_resolves_and_the_host_hears_no_question_while_names_on_the_network_do() {
    if !docker() {
        return;
    }
    let mut addresses = vec!["127.0.0.1".to_owned()];
    addresses.extend(host_addresses());
    let (listening, heard) = dns_listeners(&addresses);
    let playbook = format!("it-isolation-dns-{}", std::process::id());
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &format!(
            r#"
playbook "{playbook}"
network "sandbox"
container "peer" {{
    image "openmono/agent:latest"
    network "sandbox" alias="peer-alias"
}}
container "agent" {{
    image "openmono/agent:latest"
    network "sandbox"
    workspace "."
}}
task "look-up" {{
    run "agent" """
        touch /workspace/ready
        for i in $(seq 300); do [ -e /workspace/go ] && break; sleep 0.1; done
        getent hosts peer | awk '{{ print "peer", $1 }}'
        getent hosts peer-alias | awk '{{ print "alias", $1 }}'
        s=$(date +%s%N)
        getent hosts openmono-isolation.invalid
        echo "outside exit $? after $(( ($(date +%s%N) - s) / 1000000 )) ms"
        """
}}
"#
        ),
    );
    // Each container of a run on internal networks only, model or task, sends the names
    // it does not know to a server inside the box, which the engine dials from there.
    let (run, settings) = while_paused(&project, || {
        inspect_all(
            &playbook,
            "{{json .HostConfig.Dns}} {{json .HostConfig.DnsOptions}}",
        )
    });
    run.expect_code(0);
    assert_eq!(
        settings,
        vec![r#"["127.0.0.1"] ["timeout:1","attempts:1"]"#; 2]
    );
    let out = task_log(&project, &run, "look-up");
    let address = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .unwrap_or_else(|| panic!("`{name}` did not resolve: {out}"))
    };
    assert_eq!(address("peer"), address("alias"), "{out}");
    // getent's exit code 2: not found. Within the resolver's one second per question
    // (A and AAAA), not the twenty seconds the engine's silence costs by default.
    let (code, ms) = out
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("outside exit ")?;
            let (code, rest) = rest.split_once(" after ")?;
            Some((
                code.to_owned(),
                rest.strip_suffix(" ms")?.parse::<u64>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("no lookup line: {out}"));
    assert_eq!(code, "2", "{out}");
    assert!(ms < 5000, "the outside name took {ms} ms to fail: {out}");
    // SAFETY: getuid cannot fail and touches no memory.
    if unsafe { libc::getuid() } == 0 {
        assert!(!listening.is_empty(), "port 53 is taken on every address");
    } else {
        eprintln!("not root: no DNS listener on port 53 could be bound");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        heard.load(Ordering::SeqCst),
        0,
        "a DNS listener on the host ({listening:?}) heard a question"
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn every_box_is_limited_and_has_an_init_unless_the_playbook_says_otherwise() {
    if !docker() {
        return;
    }
    let engine = docker_lines(&["info", "--format", "{{.MemTotal}} {{.NCPU}}"]);
    let (memory, cpus) = engine[0].split_once(' ').expect("memory and CPUs");
    let (memory, cpus): (u64, u64) = (memory.parse().expect("bytes"), cpus.parse().expect("n"));
    let playbook = format!("it-isolation-limits-{}", std::process::id());
    let project = Project::new();
    project.file("replies.jsonl", "{\"content\": \"done\"}\n");
    project.file(
        "openmono.kdl",
        &format!(
            r#"
playbook "{playbook}"
network "sandbox"
model "scripted" {{
    replay "replies.jsonl"
    network "sandbox"
}}
container "box" {{
    image "openmono/agent:latest"
    network "sandbox"
    workspace "."
}}
container "small" {{
    image "openmono/agent:latest"
    network "sandbox"
    limits memory="64MiB" cpus=1 pids=50
}}
task "wait" {{
    run "box" """
        touch /workspace/ready
        for i in $(seq 300); do [ -e /workspace/go ] && break; sleep 0.1; done
        echo "init $(xargs -0 </proc/1/cmdline)"
        """
}}
"#
        ),
    );
    let (run, settings) = while_paused(&project, || {
        inspect_all(
            &playbook,
            r#"{{json (index .Config.Labels "dev.openmono.resource")}} {{json .HostConfig}}"#,
        )
        .iter()
        .map(|line| {
            let (name, host) = line.split_once(' ').expect("name and host config");
            let host: serde_json::Value = serde_json::from_str(host).expect("JSON");
            // The engine leaves `Init` out when it is not asked for.
            format!(
                "{} {} {} {} {}",
                name.trim_matches('"'),
                host["Memory"],
                host["NanoCpus"],
                host["PidsLimit"],
                host["Init"]
            )
        })
        .collect::<Vec<String>>()
    });
    run.expect_code(0);
    // Half the memory, all the CPUs but one (none on a one-CPU engine), 1024 processes;
    // the model server runs under the engine's init, the boxes under openmono's.
    let half = memory / 2;
    let all_but_one = if cpus > 1 {
        (cpus - 1) * 1_000_000_000
    } else {
        0
    };
    assert_eq!(
        settings,
        vec![
            format!("box {half} {all_but_one} 1024 null"),
            format!("scripted {half} {all_but_one} 1024 true"),
            "small 67108864 1000000000 50 null".to_owned(),
        ]
    );
    let out = task_log(&project, &run, "wait");
    assert!(
        out.contains("init /.openmono/openmono sandbox-init\n"),
        "{out}"
    );
    assert_run_gone(&run.run_id());
}

/// `inside` runs on an internal network; `outside` and `trusted` in a box that is also
/// on `open`, which reaches the host through its gateway, the host's bridge address.
const SELF_TEST_PLAYBOOK: &str = r#"
playbook "it-isolation-self-test"
network "sandbox"
network "open" egress=#true
model "tiny" {
    gguf "fixture.gguf"
    network "sandbox"
    context 4096
}
container "sealed" {
    image "openmono/agent:latest"
    network "sandbox"
}
container "leaky" {
    image "openmono/agent:latest"
    network "sandbox"
    network "open"
}
task "inside" {
    agent "sealed" model="tiny"
    prompt "What holds?"
    max-tokens 16
}
task "outside" after="inside" {
    agent "leaky" model="tiny"
    prompt "What holds?"
    max-tokens 16
    continue-on-error #true
}
task "trusted" after="outside" {
    agent "leaky" model="tiny"
    prompt "What holds?"
    max-tokens 16
    self-test #false
}
"#;

#[test]
fn the_self_test_stops_an_agent_whose_box_can_reach_the_host_and_passes_a_sealed_one() {
    if !docker() {
        return;
    }
    let project = Project::new();
    openmono::gguf::fixture::write(
        &project.path().join("fixture.gguf"),
        openmono::gguf::fixture::SENTENCE,
    )
    .expect("fixture model");
    // The self-test knocks only at the gateways and the host's own addresses, and
    // looks no name up once it has seen a default route: nothing outside this machine
    // is asked.
    project.file("openmono.kdl", SELF_TEST_PLAYBOOK);
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(
            "      prompt: What holds?\n      NO SELF-TEST (`self-test #false`): the agent starts without probing the box for a way out\n"
        ),
        "{}",
        plan.stdout
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    let out = &run.stdout;
    let sentence = openmono::gguf::fixture::SENTENCE;
    assert!(
        out.contains("  ✓ task `inside` (agent, exit code 0, "),
        "{out}"
    );
    assert!(out.contains("  ✗ task `outside` (agent, "), "{out}");
    assert!(
        out.contains("  ✓ task `trusted` (agent, exit code 0, "),
        "{out}"
    );
    assert_eq!(
        out.matches(&format!("      answer:\n        {sentence}\n"))
            .count(),
        2,
        "{out}"
    );
    // What answered, by name: the default route and its gateway.
    let log = task_log(&project, &run, "outside");
    let gateway = log
        .lines()
        .find_map(|l| l.strip_prefix("self-test OPEN: a route out of the box: default via "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no default route found: {log}"))
        .to_owned();
    assert!(
        log.contains(&format!(
            "self-test OPEN: {gateway} port 9 refused a connection: the address is reachable\n"
        )),
        "{log}"
    );
    assert!(
        log.contains(
            "self-test closed: openmono-self-test.invalid: not looked up, the box has a route out already\n"
        ),
        "{log}"
    );
    // The report shows what answered; the progress says why the task failed.
    assert!(
        out.contains(&format!(
            "        self-test OPEN: a route out of the box: default via {gateway} dev "
        )),
        "{out}"
    );
    assert!(
        run.stderr.contains(&format!(
            "the self-test found a way out of the box, so the agent did not start: a route out of the box: default via {gateway} dev "
        )),
        "{}",
        run.stderr
    );
    // The agent never started: no transcript, no answer for `outside`.
    let runs = project.state.path().join("runs").join(run.run_id());
    assert!(!runs.join("outside.jsonl").exists());
    assert!(runs.join("trusted.jsonl").exists());
    assert_run_gone(&run.run_id());
}
