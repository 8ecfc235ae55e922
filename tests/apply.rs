//! `openmono apply` on the real engine: tasks run and report, failures stop the run, and
//! after every run, whatever happened, nothing with the run's label is left.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::MetadataExt,
    process::{Command, Stdio},
};

use crate::support::{
    Project, Run, assert_contains_all, assert_nothing_left, assert_run_gone, docker, docker_lines,
    gemma, root, tiny_gguf,
};

#[test]
fn hello_agent_playbook_runs_end_to_end_with_the_real_model() {
    if !docker() {
        return;
    }
    let project = Project::new();
    let playbook = root().join("playbooks/hello-agent.kdl");
    let run = project.run(&["apply", playbook.to_str().expect("utf-8 path")]);
    run.expect_code(0);
    let id = run.run_id();
    assert!(
        run.stdout.starts_with(&format!("Run {id} succeeded in ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("✓ task `look` (agent, exit code 0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("      answer:"), "{}", run.stdout);
    assert!(
        run.stdout.contains("✓ task `files` (run, exit code 0"),
        "{}",
        run.stdout
    );
    // `ls /workspace` inside the box lists this repository.
    assert!(
        run.stdout.contains("        Cargo.toml\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Teardown removed 2 container(s) and 1 network(s)."),
        "{}",
        run.stdout
    );
    // The transcript is kept outside the workspace, and ends with the final answer.
    let transcript = project
        .state
        .path()
        .join("runs")
        .join(&id)
        .join("look.jsonl");
    let text = std::fs::read_to_string(&transcript).expect("transcript");
    assert!(
        text.starts_with("{\"event\":\"start\",\"model\":\"gemma\""),
        "{text}"
    );
    let last = text.lines().last().expect("events");
    assert!(last.starts_with("{\"event\":\"final\""), "{last}");
    assert!(last.contains("\"reason\":\"done\""), "{last}");
    assert!(
        run.stdout
            .contains(&format!("transcript: {}", transcript.display()))
    );
    assert_run_gone(&id);
}

#[test]
fn run_tasks_report_output_and_exit_code_and_a_failure_stops_the_run() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        r#"
playbook "it-run-tasks"
container "box" {
    image "openmono/agent:latest"
    workspace "."
}
var "file" default="made.txt"
task "hello" {
    run "box" "echo out-line; echo err-line >&2; echo {{ run.id }} > {{ var.file }}"
}
task "fail" after="hello" {
    run "box" "echo failing; exit 3"
}
task "never" after="fail" {
    run "box" "echo never ran"
}
"#,
    );
    let run = project.run(&["apply"]);
    run.expect_code(1);
    let id = run.run_id();
    let out = &run.stdout;
    assert!(out.starts_with(&format!("Run {id} failed in ")), "{out}");
    assert!(out.contains("✓ task `hello` (run, exit code 0"), "{out}");
    assert!(
        out.contains("        out-line\n        err-line\n"),
        "{out}"
    );
    assert!(out.contains("✗ task `fail` (run, exit code 3"), "{out}");
    assert!(out.contains("        failing\n"), "{out}");
    assert!(
        out.contains("  failure: run task `fail`: the command exited with code 3\n"),
        "{out}"
    );
    assert!(out.contains("  - task `never` (run): not run\n"), "{out}");
    assert!(
        !out.contains("never ran"),
        "a task after a failed one must not run: {out}"
    );
    // The file the task wrote is in the project, owned by the user who ran openmono.
    let made = project.path().join("made.txt");
    // Templates saw the run's real id.
    assert_eq!(
        std::fs::read_to_string(&made).expect("made.txt"),
        format!("{id}\n")
    );
    assert_eq!(
        std::fs::metadata(&made).expect("stat").uid(),
        std::fs::metadata(project.path()).expect("stat").uid()
    );
    // Logs are in the run's folder, not in the workspace.
    let log = project.state.path().join("runs").join(&id).join("fail.log");
    assert_eq!(std::fs::read_to_string(log).expect("log"), "failing\n");
    assert_run_gone(&id);
}

#[test]
fn command_not_found_is_told_apart() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" \"no-such-command-anywhere\"\n}\n",
    );
    let run = project.run(&["apply"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("✗ task `t` (run, exit code 127"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("failure: run task `t`: command not found (exit code 127)"),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn a_missing_image_is_reported_before_anything_is_created() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "playbook \"it-missing-image\"\nnetwork \"n\"\ncontainer \"box\" {\n    image \"openmono/no-such-image:never\"\n    network \"n\"\n}\n",
    );
    let run = project.run(&["apply"]);
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("× image `openmono/no-such-image:never` is not on this engine"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("`images/setup` builds"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    assert_nothing_left("dev.openmono.playbook=it-missing-image");
    assert!(
        !project.state.path().join("runs").exists(),
        "no run folder for a run that never began"
    );
}

#[test]
fn a_model_that_cannot_load_fails_the_run_at_once_with_its_log() {
    if !docker() {
        return;
    }
    let project = Project::new();
    // A header that reads, and no model in it: llama-server starts, fails to load it
    // and exits.
    std::fs::write(project.path().join("broken.gguf"), tiny_gguf()).expect("write");
    project.file(
        "openmono.kdl",
        r#"
network "n"
model "broken" {
    gguf "broken.gguf"
    network "n"
}
container "box" {
    image "openmono/agent:latest"
    network "n"
}
task "t" {
    agent "box" model="broken"
    prompt "hi"
}
"#,
    );
    let mut cmd = project.command(&["apply"]);
    cmd.env("OPENMONO_MODEL_TIMEOUT", "600");
    let started = std::time::Instant::now();
    let run = Run::from(cmd.output().expect("run"));
    run.expect_code(1);
    assert!(
        run.stdout.contains(
            "failure: model `broken` ready: the model server exited with code 1 while loading; its last lines:"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("gguf"),
        "the server's own words are shown: {}",
        run.stdout
    );
    // Failing at once means not waiting out the ten-minute timeout.
    assert!(started.elapsed().as_secs() < 300);
    assert_run_gone(&run.run_id());
}

#[test]
fn a_model_that_never_answers_fails_at_its_load_timeout() {
    if !docker() {
        return;
    }
    let project = Project::new();
    // The server loads and listens, but on another port than the one asked: the
    // probe is refused until the playbook's load timeout ends the wait.
    project.file(
        "openmono.kdl",
        &format!(
            r#"
network "n"
model "m" {{
    gguf "{}"
    network "n"
    args "--port" "9999"
    load-timeout "3s"
}}
container "box" {{
    image "openmono/agent:latest"
    network "n"
}}
task "t" {{
    agent "box" model="m"
    prompt "hi"
}}
"#,
            gemma().display()
        ),
    );
    let run = project.run(&["apply"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("model `m` ready: waiting for the server to listen\n"),
        "the probe's state is the step's progress: {}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("failure: model `m` ready: not ready after 3s; the server's last lines:"),
        "{}",
        run.stdout
    );
    // Its first lines: what it listens on comes only after the load, which may outlast
    // the timeout on a busy machine.
    assert!(
        run.stdout.contains("loading model"),
        "the server's own words: {}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn every_stop_signal_tears_everything_down_and_exits_130() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "network \"n\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    network \"n\"\n}\ntask \"long\" {\n    run \"box\" \"sleep 300\"\n}\ntask \"later\" after=\"long\" {\n    run \"box\" \"true\"\n}\n",
    );
    // Ctrl-C, a service manager's stop, a closed terminal, Ctrl-\\.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        let (child, id, _) = start_long_run(&project);
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: sends a signal to the child we spawned.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let output = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(130), "signal {signal}: {stdout}");
        assert!(
            stdout.starts_with(&format!("Run {id} interrupted in ")),
            "{stdout}"
        );
        assert!(
            stdout.contains("  - task `later` (run): not run\n"),
            "{stdout}"
        );
        assert!(
            stdout.contains("Teardown removed 1 container(s) and 1 network(s)."),
            "{stdout}"
        );
        assert_run_gone(&id);
    }
}

#[test]
fn output_from_the_box_cannot_drive_the_terminal() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" #\"printf '\\033]0;PWNED\\007\\033[2Jred\\n'\"#\n}\n",
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    assert!(!run.stdout.contains('\u{1b}'), "{:?}", run.stdout);
    assert!(
        run.stdout.contains("\\u{1b}]0;PWNED\\u{7}\\u{1b}[2Jred"),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn the_real_model_file_is_there() {
    // The tests above and the isolation suite use it; say so plainly when it is missing.
    assert!(
        gemma().is_file() || std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing: run images/setup",
        gemma().display()
    );
}

#[test]
fn container_and_task_settings_reach_the_processes() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        r#"
container "box" {
    image "openmono/agent:latest"
    env "FROM_CONTAINER" "c-value"
    workspace "." read-only=#true
    user "1234:2345"
    workdir "/tmp"
    limits memory="256MiB" cpus=1 pids=100
}
task "look" {
    env "FROM_TASK" "t-value"
    run "box" """
        echo "env $FROM_CONTAINER $FROM_TASK"
        echo "ids $(id -u):$(id -g) in $(pwd)"
        echo "memory $(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
        echo "pids $(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max)"
        echo "caps $(grep CapEff /proc/self/status)"
        echo "nnp $(grep NoNewPrivs /proc/self/status)"
        echo "binary $(stat -c '%u %a' /.openmono/openmono)"
        rm -f /.openmono/openmono 2>/dev/null || echo "binary stays"
        echo "workspace $(awk '$2 == "/workspace" { split($4, o, ","); print o[1] }' /proc/mounts)"
        """
}
"#,
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    let out = &run.stdout;
    assert_contains_all(
        out,
        &[
            "        env c-value t-value\n",
            "        ids 1234:2345 in /tmp\n",
            "        memory 268435456\n",
            "        pids 100\n",
            "        caps CapEff:\t0000000000000000\n",
            "        nnp NoNewPrivs:\t1\n",
            // Tasks cannot replace the binary that later tasks and the agent run as.
            "        binary 65534 555\n",
            "        binary stays\n",
            "        workspace ro\n",
        ],
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn a_timeout_kills_the_task_and_fails_the_run() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"slow\" {\n    run \"box\" \"echo started; sleep 120\"\n    timeout \"2s\"\n}\n",
    );
    let started = std::time::Instant::now();
    let run = project.run(&["apply"]);
    run.expect_code(1);
    assert!(
        started.elapsed().as_secs() < 60,
        "the timeout did not end the task"
    );
    assert!(
        run.stdout.contains("✗ task `slow` (run, exit code 124"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("failure: run task `slow`: timed out after 2s; its processes were killed"),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn continue_on_error_lets_the_run_go_on_and_egress_networks_work() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        r#"
network "open" egress=#true
container "box" {
    image "openmono/agent:latest"
    network "open"
}
task "flaky" {
    run "box" "exit 5"
    continue-on-error #true
}
task "next" after="flaky" {
    run "box" "echo next ran"
}
"#,
    );
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(
            "+ create network `open`: EGRESS ALLOWED: containers on it can reach the internet, the LAN and the host"
        ),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("      a failure does not stop the run\n"),
        "{}",
        plan.stdout
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("✗ task `flaky` (run, exit code 5"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("        next ran\n"), "{}", run.stdout);
    assert_run_gone(&run.run_id());
}

#[test]
fn a_check_decides_an_agent_task() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &format!(
            r#"
network "n"
model "m" {{
    gguf "{gguf}"
    context 512
    network "n"
}}
container "box" {{
    image "openmono/agent:latest"
    network "n"
    workspace "."
}}
task "fails-its-check" {{
    agent "box" model="m"
    prompt "Say yes."
    max-tokens 8
    check "echo checking; exit 4"
    continue-on-error #true
}}
task "passes-its-check" after="fails-its-check" {{
    agent "box" model="m"
    prompt "Say yes."
    max-tokens 8
    check "test -d /workspace"
}}
"#,
            gguf = gemma().display()
        ),
    );
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout
            .contains("      check: $ echo checking; exit 4\n"),
        "{}",
        plan.stdout
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    let out = &run.stdout;
    assert!(
        out.contains("✗ task `fails-its-check` (agent, exit code 0, check exit code 4,"),
        "{out}"
    );
    assert!(
        out.contains("      check: exit code 4\n        checking\n"),
        "{out}"
    );
    assert!(
        out.contains("✓ task `passes-its-check` (agent, exit code 0"),
        "{out}"
    );
    assert!(out.contains("      check: exit code 0\n"), "{out}");
    assert_run_gone(&run.run_id());
}

#[test]
fn run_volumes_go_with_the_run_and_kept_volumes_stay() {
    if !docker() {
        return;
    }
    let project = Project::new();
    let playbook = format!("it-volumes-{}", std::process::id());
    project.file(
        "openmono.kdl",
        &format!(
            r#"
playbook "{playbook}"
volume "scratch"
volume "cache" keep=#true
container "box" {{
    image "openmono/agent:latest"
    volume "scratch" "/scratch"
    volume "cache" "/cache"
}}
task "count" {{
    run "box" "touch /scratch/mine && echo run >> /cache/runs && echo runs $(wc -l < /cache/runs)"
}}
"#
        ),
    );
    let kept = format!("label=dev.openmono.keep={playbook}");
    let first = project.run(&["apply"]);
    first.expect_code(0);
    assert!(
        first.stdout.contains("        runs 1\n"),
        "{}",
        first.stdout
    );
    assert!(
        first
            .stdout
            .contains("Teardown removed 1 container(s), 0 network(s) and 1 volume(s)."),
        "{}",
        first.stdout
    );
    assert_run_gone(&first.run_id());
    let second = project.run(&["apply"]);
    second.expect_code(0);
    assert!(
        second.stdout.contains("        runs 2\n"),
        "the kept volume kept its data: {}",
        second.stdout
    );
    assert_run_gone(&second.run_id());
    let volumes = docker_lines(&["volume", "ls", "-q", "--filter", &kept]);
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert!(
        volumes[0].starts_with(&format!("openmono-{playbook}-")) && volumes[0].ends_with("-cache"),
        "{volumes:?}"
    );
    docker_lines(&["volume", "rm", &volumes[0]]);
}

#[test]
fn tasks_wait_for_a_healthy_container_and_an_unhealthy_one_fails_the_run() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        r#"
container "ready" {
    image "openmono/agent:latest"
    health {
        command "test -d /tmp"
        interval "200ms"
    }
}
container "never" {
    image "openmono/agent:latest"
    // Failing takes seconds, so that `ready` is surely healthy first, even on a busy
    // machine.
    health {
        command "echo not-ready-yet; false"
        interval "300ms"
        retries 10
    }
}
task "t" {
    run "never" "echo should not run"
}
"#,
    );
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(
            "      healthy when `test -d /tmp` exits 0 (every 0.2s, 5s each, unhealthy after 30 failures); tasks wait for it"
        ),
        "{}",
        plan.stdout
    );
    let run = project.run(&["apply"]);
    run.expect_code(1);
    assert!(run.stderr.contains("✓ container `ready`"), "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "failure: container `never`: unhealthy after 10 failed checks; the last said:"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\n      not-ready-yet\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  - task `t` (run): not run"),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn an_image_the_engine_lacks_is_built_once() {
    if !docker() {
        return;
    }
    let project = Project::new();
    let reference = format!("openmono-test/built-{}:latest", std::process::id());
    project.file(
        "tools/Dockerfile",
        "FROM openmono/agent:latest\nARG GREETING=none\nRUN echo built > /built.txt && echo \"$GREETING\" > /greeting.txt\n",
    );
    project.file(
        "openmono.kdl",
        &format!(
            r#"
image "{reference}" {{
    context "tools"
    arg "GREETING" "hello from the build"
}}
container "box" {{
    image "{reference}"
}}
task "look" {{
    run "box" "cat /built.txt /greeting.txt"
}}
"#
        ),
    );
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout
            .contains(&format!("1. + build image `{reference}` from ")),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("      build argument GREETING=hello from the build\n"),
        "{}",
        plan.stdout
    );
    let first = project.run(&["apply"]);
    first.expect_code(0);
    assert!(
        first.stderr.contains(&format!("✓ image `{reference}`"))
            && first.stderr.contains("): built"),
        "{}",
        first.stderr
    );
    assert!(
        first
            .stdout
            .contains("        built\n        hello from the build\n"),
        "{}",
        first.stdout
    );
    assert_run_gone(&first.run_id());
    let second = project.run(&["apply"]);
    second.expect_code(0);
    assert!(
        second.stderr.contains("): on the engine already"),
        "{}",
        second.stderr
    );
    docker_lines(&["image", "rm", &reference]);
}

#[test]
fn a_failing_build_fails_the_run_with_its_output() {
    if !docker() {
        return;
    }
    let project = Project::new();
    let reference = format!("openmono-test/broken-{}:latest", std::process::id());
    project.file(
        "tools/Dockerfile",
        "FROM openmono/agent:latest\nRUN echo about-to-fail && exit 7\n",
    );
    project.file(
        "openmono.kdl",
        &format!(
            "image \"{reference}\" {{\n    context \"tools\"\n}}\ncontainer \"box\" {{\n    image \"{reference}\"\n}}\n"
        ),
    );
    let run = project.run(&["apply"]);
    run.expect_code(1);
    assert!(
        run.stdout
            .contains(&format!("failure: image `{reference}`: the build failed:")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("about-to-fail"), "{}", run.stdout);
    assert_run_gone(&run.run_id());
    assert!(docker_lines(&["image", "ls", "-q", &reference]).is_empty());
}

#[test]
fn containers_join_several_networks_with_aliases_and_networks_stay_apart() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        r#"
network "a"
network "b"
container "hub" {
    image "openmono/agent:latest"
    network "a" alias="db"
    network "b"
}
container "left" {
    image "openmono/agent:latest"
    network "a"
}
container "right" {
    image "openmono/agent:latest"
    network "b"
}
task "from-left" {
    run "left" "getent hosts db >/dev/null && echo left-sees-db"
}
task "from-right" {
    run "right" """
        getent hosts hub >/dev/null && echo right-sees-hub
        timeout 3 getent hosts db >/dev/null || echo right-not-db
        timeout 3 getent hosts left >/dev/null || echo right-not-left
        """
}
"#,
    );
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(
            "+ start container `hub` from `openmono/agent:latest` on `a` (also as `db`), `b` [after 1, 2]\n"
        ),
        "{}",
        plan.stdout
    );
    // The plan says what the run then shows: who can reach whom.
    assert!(
        plan.stdout.contains(
            "Who can reach whom:\n  `a`: `hub` and `left` reach each other by name, and nothing else: not the host, the LAN or the internet\n  `b`: `hub` and `right` reach each other by name, and nothing else: not the host, the LAN or the internet\n\n"
        ),
        "{}",
        plan.stdout
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    for line in [
        "left-sees-db",
        "right-sees-hub",
        "right-not-db",
        "right-not-left",
    ] {
        assert!(
            run.stdout.contains(&format!("        {line}\n")),
            "{line}: {}",
            run.stdout
        );
    }
    assert_run_gone(&run.run_id());
}

/// Starts `apply` and returns once its task `long` runs: the child (its stdout piped,
/// for the report), the run id, and the rest of its stderr, line by line.
fn start_long_run(
    project: &Project,
) -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    start_until(project, "▶ run task `long`")
}

/// Starts `apply` and returns once a line of its stderr holds `text`, as
/// [`start_long_run`] does.
fn start_until(
    project: &Project,
    text: &str,
) -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = project
        .command(&["apply"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut id = None;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(rest) = line.split("Run ").nth(1) {
            id = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.contains(text) {
            break;
        }
    }
    // Keep draining stderr so that the run never blocks on a full pipe.
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    (child, id.expect("run id announced"), receive)
}

/// Waits for a line of stderr that contains `text`; panics with what came instead.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, text: &str) {
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(std::time::Duration::from_mins(2)) {
        if line.contains(text) {
            return;
        }
        seen.push(line);
    }
    panic!("no line with {text:?} in:\n{}", seen.join("\n"));
}

/// Sends `signal` to a child of the test.
fn signal(child: &std::process::Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: sends a signal to the child we spawned.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// A task that ignores SIGTERM, so that its container's graceful stop takes the whole
/// grace period.
const STUBBORN: &str = "network \"n\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    network \"n\"\n}\ntask \"long\" {\n    run \"box\" \"trap '' TERM; sleep 300\"\n}\n";

#[test]
fn a_second_signal_skips_the_grace_period_and_still_removes_everything() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file("openmono.kdl", STUBBORN);
    let (child, id, lines) = start_long_run(&project);
    signal(&child, libc::SIGINT);
    wait_for_line(&lines, "openmono: stopping; tearing down");
    signal(&child, libc::SIGINT);
    wait_for_line(&lines, "openmono: skipping grace periods");
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("Teardown removed 1 container(s) and 1 network(s)."),
        "{stdout}"
    );
    assert_run_gone(&id);
}

#[test]
fn a_signal_during_teardown_still_makes_the_run_interrupted() {
    if !docker() {
        return;
    }
    let project = Project::new();
    let boxes = (0..4).fold(String::new(), |boxes, i| {
        boxes
            + &format!(
                "container \"b{i}\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n}}\n"
            )
    });
    project.file(
        "openmono.kdl",
        &format!("network \"n\"\n{boxes}task \"quick\" {{\n    run \"b0\" \"true\"\n}}\n"),
    );
    // Every step is done; removing four containers takes a good part of a second.
    let (child, id, _lines) = start_until(&project, "▶ teardown");
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.starts_with(&format!("Run {id} interrupted in ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("Teardown removed 4 container(s) and 1 network(s)."),
        "{stdout}"
    );
    assert_run_gone(&id);
}

#[test]
fn a_third_signal_quits_at_once_and_gc_removes_what_is_left() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file("openmono.kdl", STUBBORN);
    let (child, id, lines) = start_long_run(&project);
    signal(&child, libc::SIGINT);
    wait_for_line(&lines, "openmono: stopping; tearing down");
    // Two different signals in a row: the same one twice could merge into one.
    signal(&child, libc::SIGTERM);
    signal(&child, libc::SIGHUP);
    wait_for_line(&lines, &format!("openmono: quit at once; run {id} left"));
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(130));
    // The report was not printed: openmono quit before teardown ended.
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
    let gc = project.run(&["gc"]);
    gc.expect_code(0);
    assert_run_gone(&id);
}

#[test]
fn signals_to_a_matrix_are_said_once_and_a_third_names_what_every_run_leaves() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &format!("var \"word\"\nmatrix \"word\" \"a\" \"b\"\n{STUBBORN}"),
    );
    let mut child = project
        .command(&["apply", "--matrix-jobs", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (send, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    // Both runs' tasks are under way; their ids come first.
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|l: &&String| l.contains("▶ run task `long`"))
        .count()
        < 2
    {
        seen.push(
            lines
                .recv_timeout(std::time::Duration::from_mins(2))
                .expect("both tasks start"),
        );
    }
    let ids: Vec<String> = seen
        .iter()
        .filter_map(|l| {
            l.split("] Run ")
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(ids.len(), 2, "{seen:?}");
    signal(&child, libc::SIGINT);
    wait_for_line(&lines, "openmono: stopping; tearing down");
    signal(&child, libc::SIGTERM);
    signal(&child, libc::SIGHUP);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let rest: Vec<String> = lines.try_iter().collect();
    let all = rest.join("\n");
    // One line per signal, not one per run.
    assert_eq!(all.matches("openmono: stopping").count(), 0, "{all}");
    assert!(
        all.matches("openmono: skipping grace periods").count() <= 1,
        "{all}"
    );
    for id in &ids {
        assert!(all.contains(&format!("run {id} left")), "{id}: {all}");
    }
    assert!(
        all.contains(&format!(
            "(they carry the labels dev.openmono.run={}, dev.openmono.run={})",
            ids[0], ids[1]
        )) || all.contains(&format!(
            "(they carry the labels dev.openmono.run={}, dev.openmono.run={})",
            ids[1], ids[0]
        )),
        "{all}"
    );
    project.run(&["gc"]).expect_code(0);
    for id in &ids {
        assert_run_gone(id);
    }
}

#[test]
fn independent_steps_run_at_the_same_time_and_jobs_bounds_them() {
    if !docker() {
        return;
    }
    // Each task waits for the other's mark: both succeed only when they run at once.
    let meet = |me: &str, other: &str| {
        format!(
            "touch /meet/{me}; for i in $(seq 100); do [ -e /meet/{other} ] && exit 0; sleep 0.1; done; echo {other}-never-came; exit 1"
        )
    };
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &format!(
            "volume \"meet\"\ncontainer \"a\" {{\n    image \"openmono/agent:latest\"\n    volume \"meet\" \"/meet\"\n}}\ncontainer \"b\" {{\n    image \"openmono/agent:latest\"\n    volume \"meet\" \"/meet\"\n}}\ntask \"a\" {{\n    run \"a\" \"{}\"\n}}\ntask \"b\" {{\n    run \"b\" \"{}\"\n}}\n",
            meet("a", "b"),
            meet("b", "a")
        ),
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("✓ task `a` (run, exit code 0"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("✓ task `b` (run, exit code 0"),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
    let one = project.run(&["apply", "--jobs", "1"]);
    one.expect_code(1);
    assert!(one.stdout.contains("b-never-came"), "{}", one.stdout);
    assert!(
        one.stdout.contains("  - task `b` (run): not run\n"),
        "{}",
        one.stdout
    );
    assert_run_gone(&one.run_id());
}

#[test]
fn gc_reaps_the_runs_of_a_killed_openmono_and_spares_live_ones() {
    if !docker() {
        return;
    }
    let playbook = "network \"n\"\nvolume \"v\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    network \"n\"\n    volume \"v\" \"/v\"\n}\ntask \"long\" {\n    run \"box\" \"sleep 300\"\n}\n";
    let killed_project = Project::new();
    killed_project.file("openmono.kdl", playbook);
    let live_project = Project::new();
    live_project.file("openmono.kdl", playbook);
    let (mut killed, killed_id, _) = start_long_run(&killed_project);
    let (mut live, live_id, _) = start_long_run(&live_project);
    killed.kill().expect("SIGKILL");
    killed.wait().expect("reap");
    let killed_label = format!("dev.openmono.run={killed_id}");
    let left = |label: &str| {
        let filter = format!("label={label}");
        docker_lines(&["ps", "-aq", "--filter", &filter]).len()
            + docker_lines(&["network", "ls", "-q", "--filter", &filter]).len()
            + docker_lines(&["volume", "ls", "-q", "--filter", &filter]).len()
    };
    // The network, the volume and the container (openmono's binary is in a volume kept
    // for every run, named by its hash).
    assert_eq!(left(&killed_label), 3, "a killed run leaves its objects");

    let dry = Project::new().run(&["gc", "--dry-run"]);
    dry.expect_code(0);
    assert!(
        dry.stdout
            .contains(&format!("run {killed_id} (its openmono, pid ")),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains(&format!("  container openmono-{killed_id}-box\n")),
        "{}",
        dry.stdout
    );
    assert!(
        !dry.stdout.contains(&live_id),
        "a live run is not listed: {}",
        dry.stdout
    );
    assert_eq!(left(&killed_label), 3, "--dry-run removes nothing");

    let gc = Project::new().run(&["gc"]);
    gc.expect_code(0);
    assert!(gc.stdout.contains(": removed\n"), "{}", gc.stdout);
    assert_run_gone(&killed_id);
    assert_eq!(
        left(&format!("dev.openmono.run={live_id}")),
        3,
        "the live run is untouched"
    );

    let pid = libc::pid_t::try_from(live.id()).expect("pid");
    // SAFETY: sends a signal to the child we spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    assert_eq!(live.wait().expect("wait").code(), Some(130));
    assert_run_gone(&live_id);
}

#[test]
fn a_saved_plan_runs_exactly_once_with_its_run_id() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" \"echo run {{ run.id }}\"\n}\n",
    );
    project.run(&["plan", "--out", "plan.json"]).expect_code(0);
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.path().join("plan.json")).expect("plan file"),
    )
    .expect("json");
    let id = file["run_id"].as_str().expect("run id").to_owned();
    let run = project.run(&["apply", "plan.json"]);
    run.expect_code(0);
    assert_eq!(run.run_id(), id);
    assert!(
        run.stdout.contains(&format!("        run {id}\n")),
        "{}",
        run.stdout
    );
    assert_run_gone(&id);
    let again = project.run(&["apply", "plan.json"]);
    again.expect_code(2);
    assert_eq!(
        again.stderr,
        format!(
            "error: the plan of run {id} was applied already: a plan runs once; make a new one\n"
        )
    );
}

#[test]
fn json_output_is_one_event_a_line_and_follow_streams_task_output() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" \"echo one; echo two >&2; exit 3\"\n    continue-on-error #true\n}\n",
    );
    let run = project.run(&["apply", "--output", "json", "--follow"]);
    run.expect_code(0);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is a JSON event"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().expect("event kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "run-started",
            "step-started",
            "step-finished",
            "step-started",
            "output",
            "output",
            "step-finished",
            "step-started",
            "step-finished",
            "run-finished"
        ],
        "{}",
        run.stdout
    );
    let id = events[0]["run_id"].as_str().expect("run id").to_owned();
    assert_eq!(events[4]["line"], "one");
    assert_eq!(events[5]["line"], "two");
    assert_eq!(events[4]["name"], "t");
    assert_eq!(events[6]["step"], 2);
    assert_eq!(events[6]["ok"], false);
    assert_eq!(events[7]["label"], "teardown");
    let last = &events[9];
    assert_eq!(last["run_id"], id.as_str());
    assert_eq!(
        last["outcome"],
        "succeeded, with failed tasks that continue on error"
    );
    assert_eq!(last["tasks"][0]["exit_code"], 3);
    assert_eq!(last["tasks"][0]["status"], "failed");
    assert_eq!(last["removed"]["containers"], 1);
    // Progress is on stdout as events; nothing of it on stderr.
    assert_eq!(run.stderr, "");
    assert_run_gone(&id);
    // What a container's own process writes is followed too, under its name.
    project.file(
        "follow.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" \"echo one; echo from-the-box > /proc/1/fd/1; sleep 1\"\n}\n",
    );
    let text = project.run(&["apply", "--follow", "follow.kdl"]);
    text.expect_code(0);
    assert!(text.stderr.contains("] t | one\n"), "{}", text.stderr);
    assert!(
        text.stderr.contains("] box | from-the-box\n"),
        "{}",
        text.stderr
    );
    assert_run_gone(&text.run_id());
}

#[test]
fn host_mounts_are_read_only_unless_they_say_otherwise_and_paths_may_hold_spaces_and_colons() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file("my data:v1/hello.txt", "hello from the host\n");
    project.file("out/.keep", "");
    project.file(
        "openmono.kdl",
        r##"
container "box" {
    image "openmono/agent:latest"
    mount "my data:v1" "/data in:box"
    mount "out" "/out" read-only=#false
}
task "look" {
    run "box" #"""
        cat "/data in:box/hello.txt"
        touch "/data in:box/new" 2>/dev/null || echo "data refused a write"
        echo "from the box" > /out/made.txt && echo "out written"
        awk '$2 == "/data\\040in:box" || $2 == "/out" { split($4, o, ","); print $2, o[1] }' /proc/mounts
        """#
}
"##,
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    for line in [
        "        hello from the host\n",
        "        data refused a write\n",
        "        out written\n",
        "        /data\\040in:box ro\n",
        "        /out rw\n",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
    let made = project.path().join("out/made.txt");
    assert_eq!(
        std::fs::read_to_string(&made).expect("made.txt"),
        "from the box\n"
    );
    // Written as the user who ran openmono.
    assert_eq!(
        std::fs::metadata(&made).expect("stat").uid(),
        std::fs::metadata(project.path()).expect("stat").uid()
    );
    assert!(!project.path().join("my data:v1/new").exists());
    assert_run_gone(&run.run_id());
}

#[test]
fn a_read_only_root_keeps_tmp_and_tmpfs_writable_and_tasks_and_agents_run() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &format!(
            r##"
network "n"
model "m" {{
    gguf "{gguf}"
    context 512
    network "n"
}}
container "box" {{
    image "openmono/agent:latest"
    network "n"
    workspace "."
    user "0:0"
    tmpfs "/scratch" size="8MiB"
    read-only-root #true
}}
task "look" {{
    run "box" #"""
        touch /made-in-root 2>/dev/null || echo "root refused a write"
        echo kept > /tmp/t && echo "tmp $(cat /tmp/t) $(stat -c %a /tmp)"
        echo kept > /scratch/s && echo "scratch $(cat /scratch/s) $(stat -c %a /scratch)"
        awk '$2 == "/scratch" || $2 == "/tmp" {{ print $2, $1, $4 }}' /proc/mounts
        df -B1 /scratch | awk 'NR == 2 {{ print "scratch bytes", $2 }}'
        cp /bin/true /scratch/true && {{ /scratch/true || echo "nothing runs from scratch"; }}
        echo "binary $(stat -c '%u %a' /.openmono/openmono) in $(stat -c '%u %a' /.openmono)"
        {{ rm -f /.openmono/openmono || touch /.openmono/other; }} 2>/dev/null || echo "binary stays"
        """#
}}
task "ask" after="look" {{
    agent "box" model="m"
    prompt "Say yes."
    max-tokens 8
    check "test -d /workspace && ! touch /made-by-check 2>/dev/null"
}}
"##,
            gguf = gemma().display()
        ),
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    let out = &run.stdout;
    for line in [
        "        root refused a write\n",
        "        tmp kept 1777\n",
        "        scratch kept 1777\n",
        "        /tmp tmpfs rw,nosuid,nodev,noexec,relatime,size=65536k\n",
        "        /scratch tmpfs rw,nosuid,nodev,noexec,relatime,size=8192k\n",
        "        scratch bytes 8388608\n",
        "        nothing runs from scratch\n",
        // Even root in the box cannot replace the binary later tasks run as.
        "        binary 65534 555 in 65534 555\n",
        "        binary stays\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert!(
        out.contains("✓ task `ask` (agent, exit code 0, check exit code 0"),
        "{out}"
    );
    assert!(
        out.contains("Teardown removed 2 container(s) and 1 network(s)."),
        "{out}"
    );
    assert_run_gone(&run.run_id());
}

/// The copy another openmono binary left (its volume and marker; the name is the
/// prefix of both), which no box uses, and an object of a run of that binary alive on
/// another host that shares the engine (a volume's name).
fn another_binarys_copy_and_its_live_run() -> (&'static str, String) {
    let other = "openmono-file-0123456789abcdef-openmono";
    let other_hash = format!("0123456789abcdef{}", "0".repeat(48));
    for name in [other, &format!("{other}.whole")] {
        docker_lines(&[
            "volume",
            "create",
            "--label",
            &format!("dev.openmono.file={other_hash}"),
            name,
        ]);
    }
    let live = format!("openmono-test-live-{}", std::process::id());
    docker_lines(&[
        "volume",
        "create",
        "--label",
        &format!("dev.openmono.run=live{}", std::process::id()),
        "--label",
        "dev.openmono.owner-host=elsewhere.invalid",
        "--label",
        &format!("dev.openmono.binary={other_hash}"),
        &live,
    ]);
    (other, live)
}

#[test]
fn the_binary_goes_once_into_a_volume_named_by_its_hash_that_outlives_runs_and_gc() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n    read-only-root #true\n}\ntask \"long\" {\n    run \"box\" \"sleep 300\"\n}\n",
    );
    let (mut child, id, _) = start_long_run(&project);
    let mounted = docker_lines(&[
        "inspect",
        "--format",
        r#"{{range .Mounts}}{{if eq .Type "volume"}}{{.Destination}} {{.Name}}{{end}}{{end}}"#,
        &format!("openmono-{id}-box"),
    ]);
    let binary = std::fs::read(env!("CARGO_BIN_EXE_openmono")).expect("read the binary");
    let hash = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&binary))
        .iter()
        .fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        });
    let volume = format!("openmono-file-{}-openmono", &hash[..16]);
    assert_eq!(mounted, [format!("/.openmono {volume}")]);
    let (other, live) = another_binarys_copy_and_its_live_run();
    // Killed: no teardown. gc removes the run's objects and leaves this binary's volume,
    // and the marker that says it is whole; and the other binary's copy while its run
    // is alive.
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    Project::new().run(&["gc"]).expect_code(0);
    assert_run_gone(&id);
    let others = || {
        docker_lines(&["volume", "ls", "-q"])
            .into_iter()
            .filter(|v| v.starts_with(other))
            .count()
    };
    assert_eq!(others(), 2, "the live run's binary went");
    // That run is over: its binary's copy goes.
    docker_lines(&["volume", "rm", &live]);
    Project::new().run(&["gc"]).expect_code(0);
    assert_eq!(others(), 0, "the other binary's copy is left");
    let kept = |name: &str| {
        docker_lines(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.openmono.file={hash}"),
        ])
        .contains(&name.to_owned())
    };
    assert!(kept(&volume) && kept(&format!("{volume}.whole")));
    // The next run copies nothing: no helper container comes to fill the volume.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" \"/.openmono/openmono --version\"\n}\n",
    );
    let again = project.run(&["apply"]);
    again.expect_code(0);
    let again_id = again.run_id();
    let created = docker_lines(&[
        "events",
        "--since",
        &since,
        "--until",
        &(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 1)
        .to_string(),
        "--filter",
        &format!("label=dev.openmono.run={again_id}"),
        "--filter",
        "event=create",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    assert_eq!(created, [format!("openmono-{again_id}-box")]);
    assert!(
        again
            .stdout
            .contains(&format!("        openmono {}\n", env!("CARGO_PKG_VERSION"))),
        "{}",
        again.stdout
    );
    assert_run_gone(&again_id);
}

#[test]
fn a_command_that_leaves_a_background_child_still_returns() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" \"sleep 300 & echo started\"\n    timeout \"2m\"\n}\n",
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("✓ task `t` (run, exit code 0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("        started\n"), "{}", run.stdout);
    assert_run_gone(&run.run_id());
}

#[test]
fn a_foreign_container_on_the_run_network_is_named_and_left_alone() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "network \"n\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    network \"n\"\n}\ntask \"long\" {\n    run \"box\" \"sleep 4\"\n}\n",
    );
    let (child, id, _) = start_long_run(&project);
    let network = format!("openmono-{id}-n");
    let foreign = format!("openmono-test-foreign-{}", std::process::id());
    // Someone else's container joins the run's network while it runs.
    docker_lines(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "--label",
        "dev.openmono.test=foreign",
        "--network",
        &network,
        "--entrypoint",
        "sleep",
        "openmono/agent:latest",
        "300",
    ]);
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let left = docker_lines(&["ps", "-aq", "--filter", &format!("name=^{foreign}$")]);
    let network_left = docker_lines(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name=^{network}$"),
    ]);
    // Clean up before asserting, so that a failure leaves nothing either.
    docker_lines(&["rm", "-f", &foreign]);
    for net in &network_left {
        docker_lines(&["network", "rm", net]);
    }
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "containers that are not this run's are attached to it: {foreign}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("Left behind; remove by hand") && stdout.contains(&network),
        "{stdout}"
    );
    assert_eq!(left.len(), 1, "the foreign container was not touched");
    assert_eq!(network_left.len(), 1, "{stdout}");
    assert_run_gone(&id);
}

#[test]
fn the_build_context_leaves_out_what_dockerignore_excludes() {
    if !docker() {
        return;
    }
    let project = Project::new();
    let reference = format!("openmono-test/ignored-{}:latest", std::process::id());
    project
        .file(
            "tools/Dockerfile",
            "FROM openmono/agent:latest\nCOPY . /ctx\n",
        )
        .file(
            "tools/.dockerignore",
            "# as docker build reads it\nsecret.txt\n/cache\ndocs\n!docs/keep.md\n*.log\n",
        )
        .file("tools/keep.txt", "kept\n")
        .file("tools/secret.txt", "do not send\n")
        .file("tools/cache/big.bin", "cache\n")
        .file("tools/docs/a.md", "left out\n")
        .file("tools/docs/keep.md", "brought back\n")
        .file("tools/top.log", "left out\n")
        .file("tools/sub/deep.log", "kept: *.log is for the top only\n");
    project.file(
        "openmono.kdl",
        &format!(
            "image \"{reference}\" {{\n    context \"tools\"\n}}\ncontainer \"box\" {{\n    image \"{reference}\"\n}}\ntask \"look\" {{\n    run \"box\" \"cd /ctx && for f in keep.txt docs/keep.md sub/deep.log secret.txt cache/big.bin docs/a.md top.log; do [ -e $f ] && echo has $f || echo no $f; done\"\n}}\n"
        ),
    );
    let run = project.run(&["apply"]);
    let _ = Command::new("docker")
        .args(["image", "rm", &reference])
        .output();
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            "        has keep.txt\n        has docs/keep.md\n        has sub/deep.log\n        no secret.txt\n        no cache/big.bin\n        no docs/a.md\n        no top.log\n"
        ),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn a_model_that_asks_for_a_gpu_on_an_engine_without_one_fails_clearly() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &format!(
            "network \"n\"\nmodel \"m\" {{\n    gguf \"{}\"\n    network \"n\"\n    gpu-layers 1\n}}\n",
            gemma().display()
        ),
    );
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout
            .contains("      GPU devices requested from the engine\n"),
        "{}",
        plan.stdout
    );
    let run = project.run(&["apply"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains(
            "failure: model `m`: the model offloads layers to a GPU (`gpu-layers`), and the engine has no GPU support"
        ),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn the_real_model_serves_completions_whole_and_streamed() {
    if !docker() {
        return;
    }
    let project = Project::new();
    // `max_tokens` keeps generation short: this is about the path, not the words.
    let ask = |stream: bool| {
        format!(
            "curl -sS --max-time 120 -H 'Content-Type: application/json' -d '{{\"model\":\"{{{{ models.gemma.name }}}}\",\"max_tokens\":4,\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"Hi\"}}]}}' {{{{ models.gemma.url }}}}/v1/chat/completions"
        )
    };
    project.file(
        "openmono.kdl",
        &format!(
            "network \"n\"\nmodel \"gemma\" {{\n    gguf \"{}\"\n    network \"n\"\n    context 512\n    alias \"small\"\n}}\ncontainer \"c\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n}}\ntask \"ready\" {{\n    run \"c\" \"until curl -sf {{{{ models.gemma.url }}}}/health; do sleep 0.2; done\"\n    timeout \"2m\"\n}}\ntask \"whole\" after=\"ready\" {{\n    run \"c\" \"{}\"\n}}\ntask \"streamed\" after=\"whole\" {{\n    run \"c\" \"{}\"\n}}\n",
            gemma().display(),
            ask(false).replace('"', "\\\""),
            ask(true).replace('"', "\\\""),
        ),
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    let dir = project.state.path().join("runs").join(run.run_id());
    let whole = std::fs::read_to_string(dir.join("whole.log")).expect("whole.log");
    let reply: serde_json::Value = serde_json::from_str(whole.trim()).expect("one JSON reply");
    assert_eq!(reply["model"], "small", "{whole}");
    assert!(
        reply["choices"][0]["message"]["content"].is_string(),
        "{whole}"
    );
    assert_eq!(reply["usage"]["completion_tokens"], 4, "{whole}");
    let streamed = std::fs::read_to_string(dir.join("streamed.log")).expect("streamed.log");
    let events: Vec<&str> = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{streamed}");
    let deltas = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).expect("a JSON chunk"))
        .filter(|chunk| chunk["choices"][0]["delta"]["content"].is_string())
        .count();
    assert!(deltas >= 1, "{streamed}");
    assert_run_gone(&run.run_id());
}

#[test]
fn doctor_reports_the_engine_and_the_images() {
    if !docker() {
        return;
    }
    let run = Project::new().run(&["doctor"]);
    run.expect_code(0);
    let version = docker_lines(&["version", "--format", "{{.Server.Version}}"]);
    // After the line that says which engine was chosen.
    assert!(
        run.stdout
            .starts_with("✓ engine: unix:///var/run/docker.sock (the default")
            && run
                .stdout
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with(&format!("✓ Docker engine {} (API ", version[0]))),
        "{}",
        run.stdout
    );
    for image in ["openmono/agent:latest", "openmono/llama-server:latest"] {
        assert!(
            run.stdout
                .contains(&format!("✓ image {image} is on the engine\n")),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn the_playbook_and_git_hooks_and_config_stay_read_only_in_a_writable_workspace() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project
        .file(".git/hooks/pre-commit.sample", "#!/bin/sh\n")
        .file(".git/config", "[core]\n")
        .file("shared.kdl", "// included\n")
        .file(
            "openmono.kdl",
            "include \"shared.kdl\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    workspace \".\"\n}\ntask \"t\" {\n    run \"box\" \"for f in openmono.kdl shared.kdl .git/config .git/hooks/pre-commit; do (echo x >> $f) 2>/dev/null && echo wrote $f || echo kept $f; done; mv openmono.kdl moved.kdl 2>/dev/null || echo kept name; echo ok > new.txt && echo wrote new.txt\"\n}\n",
        );
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(
            "        read-only in it: .git/config, .git/hooks, openmono.kdl, shared.kdl\n"
        ),
        "{}",
        plan.stdout
    );
    let run = project.run(&["apply"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("        kept openmono.kdl\n        kept shared.kdl\n        kept .git/config\n        kept .git/hooks/pre-commit\n        kept name\n        wrote new.txt\n"),
        "{}",
        run.stdout
    );
    let read = |name: &str| std::fs::read_to_string(project.path().join(name)).expect(name);
    assert_eq!(read(".git/config"), "[core]\n");
    assert_eq!(read("shared.kdl"), "// included\n");
    assert_eq!(read("new.txt"), "ok\n");
    assert!(!project.path().join(".git/hooks/pre-commit").exists());
    assert_run_gone(&run.run_id());
}

#[test]
fn an_agent_facing_the_fixture_model_gets_its_exact_sentence() {
    if !docker() {
        return;
    }
    let project = Project::new();
    openmono::gguf::fixture::write(
        &project.path().join("fixture.gguf"),
        openmono::gguf::fixture::SENTENCE,
    )
    .expect("fixture model");
    project.file(
        "openmono.kdl",
        "network \"n\"\nmodel \"tiny\" {\n    gguf \"fixture.gguf\"\n    network \"n\"\n    context 4096\n}\ncontainer \"c\" {\n    image \"openmono/agent:latest\"\n    network \"n\"\n}\ntask \"ask\" {\n    agent \"c\" model=\"tiny\"\n    prompt \"What holds?\"\n    max-tokens 16\n}\n",
    );
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains("      llama, "),
        "the header is read: {}",
        plan.stdout
    );
    let run = project.run(&["apply"]);
    let transcript = project
        .state
        .path()
        .join("runs")
        .join(run.run_id())
        .join("ask.jsonl");
    assert_eq!(
        run.code,
        Some(0),
        "{}\n{}",
        run.stdout,
        std::fs::read_to_string(transcript).unwrap_or_default()
    );
    assert!(
        run.stdout.contains("  ✓ task `ask` (agent, exit code 0, ")
            && run.stdout.contains(&format!(
                "      answer:\n        {}\n",
                openmono::gguf::fixture::SENTENCE
            )),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

/// A run task that says two lines, then waits, and one after it.
const TALKS_THEN_WAITS: &str = "network \"n\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    network \"n\"\n}\ntask \"long\" {\n    run \"box\" \"echo one; echo two; sleep 300\"\n}\ntask \"later\" after=\"long\" {\n    run \"box\" \"true\"\n}\n";

#[test]
fn a_task_stopped_by_a_signal_is_reported_cancelled_with_its_time_and_output() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file("openmono.kdl", TALKS_THEN_WAITS);
    let (child, id, _lines) = start_long_run(&project);
    // Signal once the task has written its lines to its log.
    let log = project.state.path().join("runs").join(&id).join("long.log");
    let begun = std::time::Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("two\n")) {
        assert!(
            begun.elapsed().as_secs() < 60,
            "no output in {}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    signal(&child, libc::SIGINT);
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    let expected_tail = format!(
        "      output (last 2 lines):\n        one\n        two\n      log: {}\n  - task `later` (run): not run\n",
        log.display()
    );
    for report in [
        stdout.to_string(),
        project.run(&["runs", "show", &id]).stdout,
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with("  ✗ task `long` (run, cancelled after "))
            .unwrap_or_else(|| panic!("no cancelled task in:\n{report}"));
        let seconds: f64 = line
            .trim_start_matches("  ✗ task `long` (run, cancelled after ")
            .trim_end_matches("s)")
            .parse()
            .expect("seconds");
        assert!((1.0..60.0).contains(&seconds), "{line}");
        assert!(
            report.contains(&format!("{line}\n{expected_tail}")),
            "{report}"
        );
        assert!(!report.contains("task `long` (run): not run"), "{report}");
    }
    assert_run_gone(&id);
}

#[test]
fn a_task_stopped_by_another_task_failing_is_cancelled_in_the_json_report() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"long\" {\n    run \"box\" \"echo waiting; sleep 300\"\n}\ntask \"bad\" {\n    run \"box\" \"sleep 3; exit 3\"\n}\ntask \"later\" after=\"long\" {\n    run \"box\" \"true\"\n}\n",
    );
    let run = project.run(&["apply", "--output", "json"]);
    run.expect_code(1);
    let finished: serde_json::Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "run-finished")
        .unwrap_or_else(|| panic!("no run-finished in:\n{}", run.stdout));
    let task = |name: &str| {
        finished["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no task {name} in {finished}"))
            .clone()
    };
    assert_eq!(task("bad")["status"], "failed");
    let long = task("long");
    assert_eq!(long["status"], "cancelled", "{long}");
    assert_eq!(
        long["output_tail"],
        serde_json::json!(["waiting"]),
        "{long}"
    );
    let seconds = long["seconds"].as_f64().expect("seconds");
    assert!((2.0..60.0).contains(&seconds), "{long}");
    assert_eq!(task("later")["status"], "not-run");
    assert_run_gone(finished["run_id"].as_str().expect("run id"));
}

/// A playbook over the var `word`, whose task fails for `bad`.
pub const SAYS_A_WORD: &str = "var \"word\"\nnetwork \"n\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    network \"n\"\n}\ntask \"say\" {\n    run \"box\" \"echo {{ var.word }}; test {{ var.word }} != bad\"\n}\n";

#[test]
fn a_matrix_reaps_what_killed_runs_left_once_before_its_runs() {
    if !docker() {
        return;
    }
    // A run killed two minutes ago: its owner is gone (a process that has ended).
    let mut gone = std::process::Command::new("true").spawn().expect("spawn");
    let pid = gone.id();
    gone.wait().expect("reap");
    let run = format!("dead{}", std::process::id());
    let volume = format!("openmono-test-{run}");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 120;
    docker_lines(&[
        "volume",
        "create",
        "--label",
        &format!("dev.openmono.run={run}"),
        "--label",
        &format!("dev.openmono.owner-pid={pid}"),
        "--label",
        &format!("dev.openmono.started={started}"),
        &volume,
    ]);
    let project = Project::new();
    project.file("openmono.kdl", SAYS_A_WORD);
    let applied = project.run(&["apply", "--matrix", "word=one,two", "--matrix-jobs", "2"]);
    applied.expect_code(0);
    // Once for the matrix (another test's apply may have reaped it first), not per run.
    let said = applied
        .stderr
        .matches(&format!("Removed 1 object(s) left by run {run} "))
        .count();
    assert!(said <= 1, "{}", applied.stderr);
    assert!(
        !docker_lines(&["volume", "ls", "-q"]).contains(&volume),
        "{}",
        applied.stderr
    );
}

#[test]
fn a_matrix_runs_the_playbook_once_per_input_each_on_its_own_network() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file("openmono.kdl", SAYS_A_WORD);
    let run = project.run(&[
        "apply",
        "--matrix",
        "word=one,two,bad",
        "--matrix-jobs",
        "2",
    ]);
    run.expect_code(1);
    // Three runs, each with its own id, each torn down whole.
    let ids = run.report_ids();
    assert_eq!(ids.len(), 3, "{}", run.stdout);
    for id in &ids {
        assert_run_gone(id);
        assert!(
            run.stderr.contains(&format!(": openmono-{id}-n\n")),
            "no network of its own for {id}: {}",
            run.stderr
        );
    }
    let summary = run
        .stdout
        .split_once("Matrix of 3 run(s): 2 succeeded, 1 did not\n")
        .map_or_else(|| panic!("no summary: {}", run.stdout), |(_, rest)| rest);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 3, "{summary}");
    for (line, (mark, word, id, note)) in lines.iter().zip([
        ("✓", "one", &ids[0], "succeeded in "),
        ("✓", "two", &ids[1], "succeeded in "),
        ("✗", "bad", &ids[2], "failed in "),
    ]) {
        assert!(
            line.starts_with(&format!("  {mark} word={word}  run {id}: {note}")),
            "{line}"
        );
    }
    assert!(
        lines[2].ends_with("s: run task `say`: the command exited with code 1"),
        "{}",
        lines[2]
    );
    // Each run's lines are tagged with its input.
    for word in ["one", "two", "bad"] {
        assert!(
            run.stderr
                .contains(&format!("] [word={word}] ✓ network `n` (")),
            "{}",
            run.stderr
        );
        assert!(
            run.stdout.contains(&format!("── word={word} ──\n")),
            "{}",
            run.stdout
        );
    }
    // A var given both ways, or a matrix var twice, starts nothing.
    for args in [
        &["apply", "--matrix", "word=a,b", "--var", "word=c"][..],
        &["apply", "--matrix", "word=a", "--matrix", "word=b"],
    ] {
        let refused = project.run(args);
        refused.expect_code(2);
        assert!(refused.stderr.starts_with("error: "), "{}", refused.stderr);
        assert!(!refused.stderr.contains("Run "), "{}", refused.stderr);
    }
}

#[test]
fn a_playbooks_own_matrix_runs_each_value_and_var_and_matrix_flags_narrow_or_replace_it() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &format!("{SAYS_A_WORD}matrix \"word\" \"one\" \"two\"\n"),
    );
    // `plan` shows the matrix and plans its first input; a saved plan wants it fixed.
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(
            "\n  Matrix: word = one, two: `apply` makes 2 run(s), each apart; this plan is for word=one (`--var` plans another)\n"
        ),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("$ echo one; test one != bad"),
        "{}",
        plan.stdout
    );
    let saved = project.run(&["plan", "--out", "plan.json"]);
    saved.expect_code(2);
    assert_eq!(
        saved.stderr,
        "error: a saved plan is one run, and the playbook's matrix leaves vars open: fix them with --var word=…\n"
    );
    assert!(!project.path().join("plan.json").exists());
    project
        .run(&["plan", "--out", "plan.json", "--var", "word=two"])
        .expect_code(0);
    // Without flags, each value runs; `--matrix` replaces the values; `--var` fixes one.
    let summary_of = |run: &crate::support::Run| -> Vec<String> {
        run.stdout
            .lines()
            .skip_while(|l| !l.starts_with("Matrix of "))
            .map(|l| l.split("  run ").next().unwrap_or(l).trim_end().to_owned())
            .collect()
    };
    let all = project.run(&["apply"]);
    all.expect_code(0);
    assert_eq!(
        summary_of(&all),
        [
            "Matrix of 2 run(s): 2 succeeded, 0 did not",
            "  ✓ word=one",
            "  ✓ word=two"
        ]
    );
    let replaced = project.run(&["apply", "--matrix", "word=bad,three"]);
    replaced.expect_code(1);
    assert_eq!(
        summary_of(&replaced),
        [
            "Matrix of 2 run(s): 1 succeeded, 1 did not",
            "  ✗ word=bad",
            "  ✓ word=three"
        ]
    );
    let fixed = project.run(&["apply", "--var", "word=solo"]);
    fixed.expect_code(0);
    assert!(!fixed.stdout.contains("Matrix of"), "{}", fixed.stdout);
    assert!(fixed.stdout.contains("        solo\n"), "{}", fixed.stdout);
    for id in [&all, &replaced, &fixed]
        .iter()
        .flat_map(|r| r.report_ids())
    {
        assert_run_gone(&id);
    }
}

#[test]
fn a_matrix_in_json_gives_each_input_as_an_object() {
    if !docker() {
        return;
    }
    let project = Project::new();
    project.file("openmono.kdl", SAYS_A_WORD);
    // An input is its vars as an object, on every event and in the summary.
    let json = project.run(&["apply", "--output", "json", "--matrix", "word=one,two"]);
    json.expect_code(0);
    let lines: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        lines
            .iter()
            .filter(|l| l["event"] != "matrix")
            .all(|l| l["input"] == serde_json::json!({"word": "one"})
                || l["input"] == serde_json::json!({"word": "two"})),
        "{}",
        json.stdout
    );
    let summary = lines.last().expect("a summary");
    assert_eq!(summary["event"], "matrix");
    assert_eq!(
        summary["runs"][1]["input"],
        serde_json::json!({"word": "two"})
    );
    assert_eq!(summary["runs"][1]["succeeded"], true);
    for run in summary["runs"].as_array().expect("runs") {
        assert_run_gone(run["run_id"].as_str().expect("run id"));
    }
}
