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
    Project, Run, assert_nothing_left, assert_run_gone, docker, docker_lines, gemma,
};

/// Prints the box's default routes (`DEFAULT none` without one) and its network's
/// gateway (`GATEWAY ip`: the first address of the subnet its interface is on, where
/// Docker puts it), then tries a TCP connection to each address and to the gateway with
/// a timeout; prints `BLOCKED ip` or `REACHED ip`.
const PROBE: &str = r#"#!/bin/bash
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
fn host_listener() -> (u16, Arc<AtomicUsize>) {
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
fn host_addresses() -> Vec<String> {
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
const LOOK_AROUND: &str = r#"#!/bin/bash
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
        volume.starts_with(&format!("{root}/volumes/openmono-")) && volume.ends_with(".self/_data"),
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
    for line in [
        "CapInh:\t0000000000000000\n",
        "CapPrm:\t0000000000000000\n",
        "CapEff:\t0000000000000000\n",
        "CapBnd:\t0000000000000000\n",
        "CapAmb:\t0000000000000000\n",
        "NoNewPrivs:\t1\n",
        "SOCKETS none\n",
        "ABSENT /var/run/docker.sock\n",
        "ABSENT /run/docker.sock\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
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
