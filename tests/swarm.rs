//! A Docker Swarm of two nodes (`images/remote-engine --swarm`): a third `dockerd` on
//! this machine, the manager, reached over TCP with TLS on 127.0.0.1, and a fourth in a
//! network namespace of its own, a worker labelled with its engine's Unix socket. Both
//! leave the swarm when the tests end. The same playbooks run there as services on
//! internal overlay networks, with the same guarantees: the isolation suite's probes
//! find no way out, signals and `gc` leave nothing on either node, a matrix runs each
//! input apart and spreads the runs over both nodes, and placement follows node labels.

use std::{sync::atomic::Ordering, time::Duration};

use crate::{
    isolation::{LOOK_AROUND, PROBE, dns_listeners, host_addresses, host_listener},
    support::{Project, RemoteEngine, Run, assert_contains_all, gemma, root},
};

/// Seconds since the Unix epoch, with a fraction, as `docker events` takes them.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// The services and networks that were created and removed on the swarm engine since
/// `since` whose name holds run `id`, as `service create openmono-ID-agent` and
/// `network create openmono-ID-sandbox overlay` (the engine's own network events, which
/// do not name the driver, and connects and disconnects left out).
fn events(swarm: &RemoteEngine, id: &str, since: &str) -> Vec<String> {
    swarm
        .docker_lines(&[
            "events",
            "--since",
            since,
            "--until",
            &timestamp(),
            "--filter",
            "type=service",
            "--filter",
            "type=network",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.type}}",
        ])
        .into_iter()
        .filter(|e| e.contains(&format!("openmono-{id}-")))
        .filter_map(|e| match e.split(' ').collect::<Vec<_>>()[..] {
            ["service", action @ ("create" | "remove"), name, ..] => {
                Some(format!("service {action} {name}"))
            }
            ["network", "create" | "destroy", _, "overlay"] => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The id of the manager's node: the one openmono is connected to.
fn node(swarm: &RemoteEngine) -> String {
    swarm
        .docker_lines(&["info", "--format", "{{.Swarm.NodeID}}"])
        .join("")
}

/// The whole log of task `task` of `run`, from the run's folder.
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

#[test]
fn an_example_playbook_runs_as_services_on_overlays_and_leaves_nothing() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let project = Project::new();
    let playbook = root().join("playbooks/hello-agent.kdl");
    let playbook = playbook.to_str().expect("utf-8");
    let plan = swarm.run(&project, &["plan", playbook]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(&format!(
            "\n  It is a swarm manager: networks are overlays, and containers and models run as services on its node {}\n",
            node(swarm)
        )),
        "{}",
        plan.stdout
    );
    let doctor = swarm.run(&project, &["doctor"]);
    doctor.expect_code(0);
    assert!(
        doctor.stdout.contains(&format!(
            "✓ a swarm manager: runs become services on its node {} (see the book's On a Docker Swarm)\n",
            node(swarm)
        )),
        "{}",
        doctor.stdout
    );
    let since = timestamp();
    let run = swarm.run(&project, &["apply", playbook]);
    run.expect_code(0);
    assert_contains_all(
        &run.stdout,
        &[
            "  ✓ task `files` (run, exit code 0, ",
            "Teardown removed 2 container(s), 1 network(s) and 1 volume(s).\n",
        ],
    );
    assert!(
        run.stdout.contains("  ✓ task `look` (agent, "),
        "{}",
        run.stdout
    );
    let id = run.run_id();
    let mut seen = events(swarm, &id, &since);
    seen.sort();
    assert_eq!(
        seen,
        [
            format!("network create openmono-{id}-sandbox overlay"),
            format!("network destroy openmono-{id}-sandbox overlay"),
            format!("service create openmono-{id}-agent"),
            format!("service create openmono-{id}-gemma"),
            format!("service remove openmono-{id}-agent"),
            format!("service remove openmono-{id}-gemma"),
        ]
    );
    swarm.assert_run_gone(&id);
}

/// The isolation suite's playbook: a model, a peer and an agent with the workspace; the
/// agent asks the model, then probes the host (`PROBE` on `port` of `addresses`),
/// looks around (`LOOK_AROUND`) and looks names up.
fn isolation_playbook(port: u16, addresses: &[String]) -> String {
    format!(
        r#"
playbook "it-swarm-isolation"
network "sandbox"
model "gemma" {{
    gguf "{gguf}"
    context 512
    network "sandbox"
}}
container "peer" {{
    image "openmono/agent:latest"
    network "sandbox" alias="peer-alias"
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
task "look" after="ask" {{
    run "agent" "bash /workspace/look.sh"
}}
task "look-up" after="ask" {{
    run "agent" """
        getent hosts peer | awk '{{ print "peer", $1 }}'
        getent hosts peer-alias | awk '{{ print "alias", $1 }}'
        s=$(date +%s%N)
        getent hosts openmono-isolation.invalid
        echo "outside exit $? after $(( ($(date +%s%N) - s) / 1000000 )) ms"
        """
}}
"#,
        gguf = gemma().display(),
        addresses = addresses.join(" "),
    )
}

#[test]
fn the_isolation_suite_finds_no_way_out_of_a_box_on_the_swarm() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let (port, accepted) = host_listener();
    let addresses = host_addresses();
    assert!(!addresses.is_empty(), "the host has IPv4 addresses to try");
    let mut dns_addresses = vec!["127.0.0.1".to_owned()];
    dns_addresses.extend(addresses.iter().cloned());
    let (listening, heard) = dns_listeners(&dns_addresses);
    let project = Project::new();
    project.file("probe.sh", PROBE);
    project.file("look.sh", LOOK_AROUND);
    project.file("openmono.kdl", &isolation_playbook(port, &addresses));
    let run = swarm.run(&project, &["apply"]);
    run.expect_code(0);
    let id = run.run_id();
    // The model answered the agent, by its name on the overlay.
    let transcript = std::fs::read_to_string(
        project
            .state
            .path()
            .join("runs")
            .join(&id)
            .join("ask.jsonl"),
    )
    .expect("transcript");
    assert!(
        transcript.contains(r#""event":"model_turn""#),
        "no model turn: {transcript}"
    );
    // No route out, and nothing of the host answers at any of its addresses; the
    // overlay's gateway, on a bridge in the network's own namespace, does not lead out.
    let out = task_log(&project, &run, "reach-host");
    assert!(out.contains("DEFAULT none\n"), "{out}");
    for address in &addresses {
        assert!(out.contains(&format!("BLOCKED {address}\n")), "{out}");
    }
    assert!(!out.contains("REACHED"), "{out}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "the host was reached");
    // The self-test ran before the agent and found nothing open.
    let log = task_log(&project, &run, "ask");
    assert!(
        log.contains("self-test closed: no default route\n"),
        "{log}"
    );
    for address in &addresses {
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
    assert_no_privilege_and_only_its_volumes(&task_log(&project, &run, "look"), &id);
    assert_names_resolve_on_the_network_only(&task_log(&project, &run, "look-up"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        heard.load(Ordering::SeqCst),
        0,
        "a DNS listener on the host ({listening:?}) heard a question"
    );
    swarm.assert_run_gone(&id);
}

/// What `LOOK_AROUND` printed in a box of run `id` on the swarm: no capability, no way
/// to gain one, no engine socket; of the host's file systems, only the run's volumes
/// and the engine's files for every container.
#[track_caller]
fn assert_no_privilege_and_only_its_volumes(out: &str, id: &str) {
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
    let mut mounts: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| {
            let mut fields = l.strip_prefix("MOUNT ")?.split(' ');
            Some((fields.next()?, fields.next()?))
        })
        .collect();
    mounts.sort_unstable();
    let targets: Vec<&str> = mounts.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        targets,
        [
            "/.openmono",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/workspace"
        ],
        "{out}"
    );
    assert!(
        mounts[4]
            .1
            .ends_with(&format!("/volumes/openmono-{id}-agent.workspace/_data")),
        "{out}"
    );
}

/// What the `look-up` task printed: names on the network resolve; an outside name fails
/// at once (that no resolver of the host hears it, the caller counts).
#[track_caller]
fn assert_names_resolve_on_the_network_only(out: &str) {
    let address = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .unwrap_or_else(|| panic!("`{name}` did not resolve: {out}"))
    };
    assert_eq!(address("peer"), address("alias"), "{out}");
    // getent's exit code 2: not found, within the resolver's second per question.
    let ms: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("outside exit 2 after ")?
                .strip_suffix(" ms")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no failed lookup: {out}"));
    assert!(ms < 5000, "the outside name took {ms} ms to fail: {out}");
}

/// A node label for one test, taken off the node again when dropped.
struct NodeLabel<'a> {
    label: String,
    node: String,
    swarm: &'a RemoteEngine,
}

impl Drop for NodeLabel<'_> {
    fn drop(&mut self) {
        let _ = self
            .swarm
            .docker_lines(&["node", "update", "--label-rm", &self.label, &self.node]);
    }
}

#[test]
fn placement_runs_a_box_only_on_a_node_with_the_labels_it_asks_for() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let label = format!("openmono-test-{}", std::process::id());
    let node = node(swarm);
    swarm.docker_lines(&[
        "node",
        "update",
        "--label-add",
        &format!("{label}=yes"),
        &node,
    ]);
    let _taken_off = NodeLabel {
        label: label.clone(),
        node,
        swarm,
    };
    let project = Project::new();
    let playbook = |value: &str| {
        format!(
            "network \"n\"\ncontainer \"box\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n    placement \"{label}\" \"{value}\"\n}}\ntask \"t\" {{\n    run \"box\" \"echo placed\"\n}}\n"
        )
    };
    project.file("openmono.kdl", &playbook("yes"));
    let plan = swarm.run(&project, &["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(&format!(
            "\n      placement: a node with {label}=yes (on a swarm; one engine is one node)\n"
        )),
        "{}",
        plan.stdout
    );
    let placed = swarm.run(&project, &["apply"]);
    placed.expect_code(0);
    assert!(
        placed.stdout.contains("        placed\n"),
        "{}",
        placed.stdout
    );
    swarm.assert_run_gone(&placed.run_id());
    // No node has the label with that value: the run fails at once, saying why.
    project.file("openmono.kdl", &playbook("no"));
    let unplaced = swarm.run(&project, &["apply"]);
    unplaced.expect_code(1);
    assert!(
        unplaced.stdout.contains(
            "  failure: container `box`: no node of the swarm can run it: no suitable node (scheduling constraints not satisfied on 2 nodes); its run's node (the node openmono is connected to, or for a matrix one labelled dev.openmono.engine) must have the labels its `placement` asks for\n"
        ),
        "{}",
        unplaced.stdout
    );
    swarm.assert_run_gone(&unplaced.run_id());
    // A matrix's runs go only to the nodes that have the labels: here the worker.
    let (_, worker) = swarm.worker.as_ref().expect("the swarm has a worker");
    swarm.docker_lines(&[
        "node",
        "update",
        "--label-add",
        &format!("{label}=w"),
        worker,
    ]);
    let _taken_off_too = NodeLabel {
        label: label.clone(),
        node: worker.clone(),
        swarm,
    };
    project.file(
        "openmono.kdl",
        &format!(
            "var \"word\"\n{}matrix \"word\" \"a\" \"b\"\n",
            playbook("w")
        ),
    );
    let placed = swarm.run(&project, &["apply", "--matrix-jobs", "2"]);
    placed.expect_code(0);
    assert_all_ran_on_and_left_nothing(swarm, &placed, worker, 2);
}

#[test]
fn signals_and_gc_leave_nothing_on_the_swarm() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let project = Project::new();
    // SIGINT and SIGTERM while the boxes start and while a task runs; SIGKILL, then gc.
    for (trial, (signal, delay)) in [
        (libc::SIGINT, 700),
        (libc::SIGTERM, 1500),
        (libc::SIGINT, 3000),
        (libc::SIGKILL, 1500),
        (libc::SIGKILL, 3000),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("swarm-fault-{}-{trial}", std::process::id());
        project.file("openmono.kdl", &crate::faults::playbook(&name));
        let (status, stderr) = crate::faults::signal_after(
            swarm.command(&project, "client", &["apply"]),
            signal,
            Duration::from_millis(delay),
        );
        let what = format!("trial {trial}: signal {signal} after {delay} ms");
        match status.code() {
            Some(0 | 130) => {}
            None => assert_eq!(signal, libc::SIGKILL, "{what}: {stderr}"),
            Some(code) => panic!("{what}: exit code {code}\n{stderr}"),
        }
        if signal == libc::SIGKILL {
            let gc = swarm.run(&project, &["gc"]);
            gc.expect_code(0);
            // Killed while its boxes ran (not before, nor in its teardown): gc names
            // the services it removes.
            let killed = status.code().is_none()
                && stderr.contains("✓ container")
                && !stderr.contains("▶ teardown");
            assert!(
                !killed
                    || gc.stdout.contains("(its openmono, pid ")
                        && gc.stdout.contains("  service openmono-"),
                "{what}: {}",
                gc.stdout
            );
        }
        swarm.assert_nothing_left(&format!("dev.openmono.playbook={name}"));
        eprintln!("{what}: {status}, nothing left");
    }
    // And once for sure while the boxes run: gc names and removes their services.
    let name = format!("swarm-killed-{}", std::process::id());
    project.file("openmono.kdl", &crate::faults::playbook(&name));
    let seen = kill_once_seen(swarm, &project, "✓ container `a`", 1);
    let id = seen
        .iter()
        .find_map(|line| line.split("Run ").nth(1)?.split_whitespace().next())
        .expect("a run id");
    let gc = swarm.run(&project, &["gc"]);
    gc.expect_code(0);
    assert!(
        gc.stdout.contains(&format!("run {id} (its openmono, pid "))
            && gc.stdout.contains(&format!("  service openmono-{id}-a\n")),
        "{}",
        gc.stdout
    );
    swarm.assert_nothing_left(&format!("dev.openmono.playbook={name}"));
}

/// Starts `apply` on the swarm and SIGKILLs it once `times` lines of its stderr hold
/// `text`; returns the lines it printed until then.
fn kill_once_seen(
    swarm: &RemoteEngine,
    project: &Project,
    text: &str,
    times: usize,
) -> Vec<String> {
    let mut child = swarm
        .command(project, "client", &["apply"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
        seen.push(line);
        if seen.iter().filter(|l| l.contains(text)).count() == times {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert_eq!(
        seen.iter().filter(|l| l.contains(text)).count(),
        times,
        "{}",
        seen.join("\n")
    );
    seen
}

/// The short ids of the nodes the runs of a matrix's summary ran on, in its order.
fn summary_nodes(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("Matrix of "))
        .filter_map(|l| {
            l.split_once(" on ")?
                .1
                .split_once("): ")?
                .0
                .rsplit_once(" (")
                .map(|(_, id)| id.to_owned())
        })
        .collect()
}

/// The matrix in `run` had `runs` runs, all on `node`, and each left nothing behind.
fn assert_all_ran_on_and_left_nothing(swarm: &RemoteEngine, run: &Run, node: &str, runs: usize) {
    let short: String = node.chars().take(12).collect();
    assert_eq!(
        summary_nodes(&run.stdout),
        vec![short; runs],
        "{}",
        run.stdout
    );
    for id in run.report_ids() {
        swarm.assert_run_gone(&id);
    }
}

#[test]
fn a_playbooks_matrix_of_three_runs_spreads_over_both_nodes_each_on_its_own_overlay() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let (_, worker) = swarm.worker.as_ref().expect("the swarm has a worker");
    let short = |id: &str| id.chars().take(12).collect::<String>();
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &format!(
            "{}matrix \"word\" \"one\" \"two\" \"three\"\n",
            crate::apply::SAYS_A_WORD
        ),
    );
    let plan = swarm.run(&project, &["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(&format!(
            "\n  The matrix's runs are spread over 2 nodes (its own, and those labelled dev.openmono.engine): {host} ({}), {host} ({})\n",
            short(&node(swarm)),
            short(worker),
            host = swarm.docker_lines(&["info", "--format", "{{.Name}}"]).join("")
        )),
        "{}",
        plan.stdout
    );
    let run = swarm.run(&project, &["apply", "--matrix-jobs", "2"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("Matrix of 3 run(s): 3 succeeded, 0 did not\n"),
        "{}",
        run.stdout
    );
    // The first two start together, one on each node: the least busy takes a run.
    let nodes = summary_nodes(&run.stdout);
    assert_eq!(nodes.len(), 3, "{}", run.stdout);
    assert_eq!(
        nodes[..2],
        [short(&node(swarm)), short(worker)],
        "{}",
        run.stdout
    );
    let ids = run.report_ids();
    assert_eq!(ids.len(), 3, "{}", run.stdout);
    for (id, word) in ids.iter().zip(["one", "two", "three"]) {
        assert!(
            run.stderr
                .contains(&format!("] [word={word}] ✓ network `n` (")),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&format!(": openmono-{id}-n\n")),
            "no network of its own for {id}: {}",
            run.stderr
        );
        assert!(
            run.stdout.contains(&format!("── word={word} ──\n")),
            "{}",
            run.stdout
        );
        swarm.assert_run_gone(id);
    }
}

#[test]
fn gc_after_a_killed_matrix_removes_its_runs_from_every_node() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let project = Project::new();
    let name = format!("swarm-killed-matrix-{}", std::process::id());
    project.file(
        "openmono.kdl",
        &format!(
            "playbook \"{name}\"\nvar \"word\"\nnetwork \"n\"\ncontainer \"box\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n}}\ntask \"wait\" {{\n    run \"box\" \"sleep 60\"\n}}\nmatrix \"word\" \"one\" \"two\"\n"
        ),
    );
    kill_once_seen(swarm, &project, "✓ container `box`", 2);
    let (worker, _) = swarm.worker.as_ref().expect("the swarm has a worker");
    let label = format!("label=dev.openmono.playbook={name}");
    // One box on each node, left behind.
    for engine in [&swarm.socket, worker] {
        let boxes = crate::support::docker_lines(&["-H", engine, "ps", "-aq", "--filter", &label]);
        assert_eq!(boxes.len(), 1, "on {engine}: {boxes:?}");
    }
    let gc = swarm.run(&project, &["gc"]);
    gc.expect_code(0);
    assert_eq!(
        gc.stdout.matches("(its openmono, pid ").count(),
        2,
        "{}",
        gc.stdout
    );
    swarm.assert_nothing_left(&format!("dev.openmono.playbook={name}"));
}

#[test]
fn a_node_without_the_runs_images_takes_no_runs_and_says_why() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let (_, worker) = swarm.worker.as_ref().expect("the swarm has a worker");
    let short: String = worker.chars().take(12).collect();
    // An image only the manager has.
    let image = format!("openmono-test/only-manager-{}:1", std::process::id());
    swarm.docker_lines(&["tag", "openmono/agent:latest", &image]);
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &crate::apply::SAYS_A_WORD.replace("openmono/agent:latest", &image),
    );
    let run = swarm.run(&project, &["apply", "--matrix", "word=one,two"]);
    swarm.docker_lines(&["image", "rm", &image]);
    run.expect_code(0);
    let host = swarm
        .docker_lines(&["info", "--format", "{{.Name}}"])
        .join("");
    assert!(
        run.stderr.contains(&format!("warning: swarm node {host} ({short}) takes no runs of this matrix: its engine has no image `{image}` (copy one there: `docker save IMAGE | docker -H ENGINE load`)\n")),
        "{}",
        run.stderr
    );
    // Both on the manager's node.
    assert!(
        run.stdout
            .contains("Matrix of 2 run(s): 2 succeeded, 0 did not\n"),
        "{}",
        run.stdout
    );
    assert_all_ran_on_and_left_nothing(swarm, &run, &node(swarm), 2);
    // Labels that no node taking runs has: refused before any run.
    project.file(
        "openmono.kdl",
        &crate::apply::SAYS_A_WORD.replace(
            "    network \"n\"\n}",
            "    network \"n\"\n    placement \"openmono-test-nowhere\" \"yes\"\n}",
        ),
    );
    let refused = swarm.run(&project, &["apply", "--matrix", "word=one,two"]);
    refused.expect_code(3);
    assert!(
        refused.stderr.ends_with("error: no node of the swarm that takes this matrix's runs has the labels that the run word=one asks for (openmono-test-nowhere=yes): no run started\n"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
}

/// A model on GPUs placed where `label`=yes, a box that asks it for its health, and two
/// runs. `placement` is left out when `label` is empty.
fn on_gpus(label: &str) -> String {
    let placement = if label.is_empty() {
        String::new()
    } else {
        format!("    placement \"{label}\" \"yes\"\n")
    };
    format!(
        "var \"word\"\nnetwork \"n\"\nmodel \"m\" {{\n    gguf \"m.gguf\"\n    network \"n\"\n    gpu-layers 99\n{placement}}}\ncontainer \"box\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n{placement}}}\ntask \"say\" {{\n    run \"box\" \"curl -sf --retry 30 --retry-delay 1 --retry-connrefused http://m:8080/health; echo; echo {{{{ var.word }}}}\"\n}}\nmatrix \"word\" \"one\" \"two\"\n"
    )
}

/// A label (`openmono-gpu-PID-WHAT=yes`) on the worker, taken off when dropped, and a
/// project with the fixture model as `m.gguf`.
fn gpus_on_the_worker<'a>(swarm: &'a RemoteEngine, what: &str) -> (NodeLabel<'a>, Project) {
    let (_, worker) = swarm.worker.as_ref().expect("the swarm has a worker");
    let label = format!("openmono-gpu-{}-{what}", std::process::id());
    swarm.docker_lines(&[
        "node",
        "update",
        "--label-add",
        &format!("{label}=yes"),
        worker,
    ]);
    let project = Project::new();
    openmono::gguf::fixture::write(
        &project.path().join("m.gguf"),
        openmono::gguf::fixture::SENTENCE,
    )
    .expect("fixture model");
    let taken_off = NodeLabel {
        label,
        node: worker.clone(),
        swarm,
    };
    (taken_off, project)
}

#[test]
fn a_model_on_gpus_runs_as_a_container_of_its_nodes_engine_on_the_runs_overlay() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let (_, worker) = swarm.worker.as_ref().expect("the swarm has a worker");
    let manager = node(swarm);
    let short: String = worker.chars().take(12).collect();
    let (gpu, project) = gpus_on_the_worker(swarm, "runs");
    let label = gpu.label.clone();
    // The manager's engine takes no requests for GPUs: one run there fails at once.
    project.file("openmono.kdl", &on_gpus(""));
    let plan = swarm.run(&project, &["plan", "--var", "word=one"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains("\n  A model with `gpu-layers` runs as a container of its node's own engine instead, with that engine's GPUs, on the run's overlay (a swarm takes a service's GPU back whenever its node changes)\n"),
        "{}",
        plan.stdout
    );
    let run = swarm.run(&project, &["apply", "--var", "word=one"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("  failure: model `m`: the model offloads layers to a GPU (`gpu-layers`), and the engine has no GPU support: install the NVIDIA Container Toolkit for the engine, or remove `gpu-layers` ("),
        "{}",
        run.stdout
    );
    swarm.assert_run_gone(&run.run_id());
    // Placed on the worker, which takes them: one run stays on the node connected to,
    // which has not the label, and says so before the engine is asked for a container.
    project.file("openmono.kdl", &on_gpus(&label));
    let plan = swarm.run(&project, &["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(&format!(
            "\n  The matrix's runs are spread over 1 of the 2 nodes that take runs (its own, and those labelled dev.openmono.engine), those with the labels its `placement`s ask for: {} ({short})\n",
            swarm.docker_lines(&["info", "--format", "{{.Name}}"]).join("")
        )),
        "{}",
        plan.stdout
    );
    let run = swarm.run(&project, &["apply", "--var", "word=one"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains(&format!("  failure: model `m`: its run's node {manager} has not {label}=yes: one run goes to the node openmono is connected to, and a matrix's runs to the nodes labelled dev.openmono.engine that have every label its `placement`s ask for\n")),
        "{}",
        run.stdout
    );
    swarm.assert_run_gone(&run.run_id());
    // A matrix's runs go to the worker: the model is a container of the worker's own
    // engine, and the box (a service) reaches it by name on the run's overlay.
    let run = swarm.run(&project, &["apply"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout.matches("        {\"status\":\"ok\"}\n").count(),
        2,
        "{}",
        run.stdout
    );
    assert_all_ran_on_and_left_nothing(swarm, &run, worker, 2);
}

#[test]
fn gc_after_a_killed_matrix_with_models_on_gpus_removes_every_box_before_any_overlay() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let (gpu, project) = gpus_on_the_worker(swarm, "killed");
    let label = gpu.label.clone();
    // Killed while both runs' models are up, each a container of the worker's engine
    // that holds the run's overlay: gc removes every box before any overlay.
    let name = format!("swarm-gpu-killed-{}", std::process::id());
    project.file(
        "openmono.kdl",
        &format!("playbook \"{name}\"\n{}", on_gpus(&label)).replace(
            "curl -sf --retry 30 --retry-delay 1 --retry-connrefused http://m:8080/health; echo; echo {{ var.word }}",
            "sleep 60",
        ),
    );
    kill_once_seen(swarm, &project, "✓ container `box`", 2);
    let (worker_socket, _) = swarm.worker.as_ref().expect("the swarm has a worker");
    let models = crate::support::docker_lines(&[
        "-H",
        worker_socket,
        "ps",
        "-aq",
        "--filter",
        &format!("label=dev.openmono.playbook={name}"),
        "--filter",
        "label=dev.openmono.kind=model",
    ]);
    assert_eq!(models.len(), 2, "{models:?}");
    let gc = swarm.run(&project, &["gc"]);
    gc.expect_code(0);
    assert!(!gc.stdout.contains("could not remove"), "{}", gc.stdout);
    swarm.assert_nothing_left(&format!("dev.openmono.playbook={name}"));
}

#[test]
fn a_box_that_never_gets_healthy_on_the_swarm_fails_at_once_and_is_counted_once() {
    let Some(swarm) = RemoteEngine::swarm() else {
        return;
    };
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "network \"n\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    network \"n\"\n    health {\n        command \"false\"\n        retries 2\n        interval \"1s\"\n    }\n}\ntask \"t\" {\n    run \"box\" \"true\"\n}\n",
    );
    let run = swarm.run(&project, &["apply"]);
    run.expect_code(1);
    assert_contains_all(
        &run.stdout,
        &[
            "  failure: container `box`: unhealthy after 2 failed checks; the last printed nothing\n",
            "Teardown removed 1 container(s) and 1 network(s).\n",
        ],
    );
    swarm.assert_run_gone(&run.run_id());
}
