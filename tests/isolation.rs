//! From inside the agent container: the model answers by its name on the private
//! network, and nothing of the host answers at all. A control run from a plain internal
//! network shows that the same probe does see the host when the box is not sealed.

use std::{
    net::TcpListener,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::support::{Project, assert_nothing_left, assert_run_gone, docker, docker_lines, gemma};

/// Tries a TCP connection to each address with a timeout; prints `BLOCKED ip` or
/// `REACHED ip`. The network's gateway comes from the container's routing table.
const PROBE: &str = r#"#!/bin/bash
port=$1; shift
h=$(awk '$2 == "00000000" { print $3; exit }' /proc/net/route)
gw=
if [ -n "$h" ]; then
    gw=$((16#${h:6:2})).$((16#${h:4:2})).$((16#${h:2:2})).$((16#${h:0:2}))
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
task "reach-model" {{
    run "agent" "for i in $(seq 150); do /.openmono/openmono probe http://gemma:8080/health && echo MODEL-READY && exit 0; sleep 0.2; done; exit 1"
}}
task "reach-host" after="reach-model" {{
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
    assert!(out.contains("        MODEL-READY\n"), "{out}");
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
    assert_run_gone(&run.run_id());
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
