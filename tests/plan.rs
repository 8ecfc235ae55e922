//! `openmono plan`: the steps in order, teardown included, with no engine needed.

use crate::support::{Project, root};

#[test]
fn example_playbook_plan_lists_every_step_in_order() {
    let project = Project::new();
    let playbook = root().join("playbooks/hello-agent.kdl");
    let mut cmd = project.command(&["plan", playbook.to_str().expect("utf-8 path")]);
    // No engine at all: plan must not need one.
    cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let run = crate::support::Run::from(cmd.output().expect("run"));
    run.expect_code(0);
    let root = root().display().to_string();
    let stdout = run.stdout.replace(&root, "<root>");
    assert_eq!(
        stdout,
        "\
Plan for playbook `hello-agent` (<root>/playbooks/hello-agent.kdl): 6 steps, then teardown
  The smallest complete run: a model, an agent, a private network
  Engine: unix:///nonexistent/docker.sock from DOCKER_HOST
  Each step starts once the steps in its [after …] are done; the others run at the same time.

  1. + create network `sandbox`: internal, no route out, no host address, no outside names
  2. + start model `gemma`: llama-server from `openmono/llama-server:latest` on `sandbox` [after 1]
      mount <root>/models/gemma-3-270m-q4_k_m.gguf (241.4 MiB) at /models/model.gguf (read-only)
      gemma3, 268M parameters, Q4_K_M, trained for 32768 tokens of context
      memory: about 277.4 MiB (weights 241.4 MiB + KV cache 36.0 MiB for 2048 tokens)
      context 2048, --jinja (tool calls), served as `gemma` at http://gemma:8080
  3. + start container `agent` from `openmono/agent:latest` on `sandbox` [after 1]
      mount <root> at /workspace (read-only), its only host mount
      runs as the user who runs openmono; no capabilities, no new privileges
      limits: memory half the engine's, all the engine's CPUs but one, 1024 processes
      openmono copied in to run tasks
  4. ~ wait for model `gemma`: GET http://gemma:8080/health answers 200, asked from `agent` [after 2, 3]
  5. + run agent task `look` in `agent` with model `gemma` (at most 3 steps of 96 tokens) [after 2, 3, 4]
      prompt: In one sentence: what is a sandbox for a coding agent?
      self-test first: the agent starts only if the box has no route out and nothing outside answers
      timeout 1h: then its processes are killed
  6. + run task `files` in `agent` [after 2, 3, 5]
      $ ls /workspace && git -C /workspace status --short >/tmp/status && head -n 5 /tmp/status
      timeout 1h: then its processes are killed

Who can reach whom:
  `sandbox`: `gemma` and `agent` reach each other by name, and nothing else: not the host, the LAN or the internet

Teardown, always, also when a step fails or is interrupted:
  7. - remove container `agent`
  8. - remove container `gemma`
  9. - remove network `sandbox`
"
    );
}

#[test]
fn plan_reads_openmono_kdl_by_default_and_orders_by_after() {
    let project = Project::new();
    project.file(
        "openmono.kdl",
        r#"
container "box" {
    image "openmono/agent:latest"
}
task "second" after="first" {
    run "box" "echo 2"
}
task "first" {
    run "box" """
        echo 1
        echo one
        """
}
"#,
    );
    let run = project.run(&["plan"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "\
Plan for playbook `openmono` (openmono.kdl): 3 steps, then teardown
  Engine: unix:///var/run/docker.sock (the default: no --engine, DOCKER_HOST or context)
  Each step starts once the steps in its [after …] are done; the others run at the same time.

  1. + start container `box` from `openmono/agent:latest` with no network
      no host mounts
      runs as the user who runs openmono; no capabilities, no new privileges
      limits: memory half the engine's, all the engine's CPUs but one, 1024 processes
      openmono copied in to run tasks
  2. + run task `first` in `box` [after 1]
      $ echo 1
        echo one
      timeout 1h: then its processes are killed
  3. + run task `second` in `box` [after 1, 2]
      $ echo 2
      timeout 1h: then its processes are killed

Who can reach whom:
  `box` is on no network: it reaches nothing, and nothing reaches it

Teardown, always, also when a step fails or is interrupted:
  4. - remove container `box`
"
    );
}

#[test]
fn a_playbook_too_large_or_not_a_file_is_refused_at_once() {
    let project = Project::new();
    let line = format!("// {}\n", "x".repeat(1000));
    let big = line.repeat(4300);
    project.file("big.kdl", &big);
    project.file("small.kdl", "include \"big.kdl\"\n");
    for (args, says) in [
        (&["plan", "big.kdl"][..], "cannot read playbook `big.kdl`"),
        (&["validate", "big.kdl"], "larger than 4 MiB"),
        (&["fmt", "big.kdl"], "larger than 4 MiB"),
        (
            &["plan", "small.kdl"],
            "cannot include `big.kdl`: the file is larger than 4 MiB",
        ),
        (&["plan", "/dev/zero"], "not a regular file"),
        (&["validate", "/dev/zero"], "not a regular file"),
        (&["plan", "."], "not a regular file"),
    ] {
        let started = std::time::Instant::now();
        let run = project.run(args);
        run.expect_code(2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{args:?}"
        );
    }
}

#[test]
fn a_missing_playbook_file_is_a_clear_error() {
    let project = Project::new();
    let run = project.run(&["plan", "missing.kdl"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("cannot read playbook `missing.kdl`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("No such file or directory"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    let project = Project::new();
    let playbook = root().join("playbooks/hello-agent.kdl");
    let mut child = project
        .command(&["plan", playbook.to_str().expect("utf-8 path")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Close the pipe before openmono writes to it, as `openmono plan | head -0` would.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn validate_checks_every_file_and_fails_if_one_is_bad() {
    let project = Project::new();
    project.file("good.kdl", "network \"n\"\n");
    project.file("bad.kdl", "network \"n\"\nnetwork \"n\"\n");
    let run = project.run(&["validate", "good.kdl", "bad.kdl"]);
    run.expect_code(2);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("good.kdl: ok\n"), "{}", run.stderr);
    assert!(
        run.stderr.contains("× network `n` is defined twice"),
        "{}",
        run.stderr
    );
    let run = project.run(&["validate", "good.kdl"]);
    run.expect_code(0);
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "network \"n\"\ncontainer \"c\" {\n    image \"i\"\n    network \"n\"\n}\ntask \"a\" {\n    run \"c\" \"x\"\n}\ntask \"b\" after=\"a\" {\n    run \"c\" \"y\"\n}\n",
    );
    let run = project.run(&["graph"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "digraph \"openmono\" {\n    rankdir=LR;\n    n0 [label=\"network n\"];\n    n1 [label=\"container c\"];\n    n2 [label=\"task a\"];\n    n3 [label=\"task b\"];\n    n0 -> n1;\n    n1 -> n2;\n    n1 -> n3;\n    n2 -> n3;\n}\n"
    );
    let run = project.run(&["graph", "--format", "mermaid"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "flowchart LR\n    n0[\"network n\"]\n    n1[\"container c\"]\n    n2[\"task a\"]\n    n3[\"task b\"]\n    n0 --> n1\n    n1 --> n2\n    n1 --> n3\n    n2 --> n3\n"
    );
}

#[test]
fn vars_come_from_defaults_the_environment_and_the_command_line() {
    let project = Project::new();
    project.file(
        "openmono.kdl",
        r#"var "who" default="default"
var "n" type="int" default=1
container "box" {
    image "openmono/agent:latest"
}
task "t" {
    run "box" "echo {{ var.who }} {{ var.n * 10 }} {{ run.id }}"
}
"#,
    );
    let step = |run: &crate::support::Run| {
        run.expect_code(0);
        run.stdout
            .lines()
            .find(|l| l.contains("$ echo"))
            .expect("the command")
            .trim()
            .to_owned()
    };
    assert_eq!(step(&project.run(&["plan"])), "$ echo default 10 <run-id>");
    let mut cmd = project.command(&["plan"]);
    cmd.env("OPENMONO_VAR_who", "env")
        .env("OPENMONO_VAR_n", "2");
    assert_eq!(
        step(&crate::support::Run::from(cmd.output().expect("run"))),
        "$ echo env 20 <run-id>"
    );
    let mut cmd = project.command(&["plan", "--var", "who=flag"]);
    cmd.env("OPENMONO_VAR_who", "env");
    assert_eq!(
        step(&crate::support::Run::from(cmd.output().expect("run"))),
        "$ echo flag 10 <run-id>"
    );
    let run = project.run(&["plan", "--var", "whom=x"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("× `--var whom=…` names no var of this playbook"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("help: did you mean `who`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn fmt_rewrites_the_layout_and_nothing_else() {
    let project = Project::new();
    let messy = "\n// the box\ncontainer \"box\" {\n  image \"openmono/agent:latest\"   \n\n\n      workspace \".\"  // here\n}\ntask \"t\" {\nrun \"box\" \"\"\"\n    echo {\n    \"\"\"\n}\n";
    project.file("openmono.kdl", messy);
    project.file("broken.kdl", "container \"c\" {\n");
    let before = project.run(&["plan"]);
    before.expect_code(0);

    let check = project.run(&["fmt", "--check"]);
    check.expect_code(1);
    assert_eq!(check.stderr, "openmono.kdl: not formatted\n");
    assert_eq!(
        std::fs::read_to_string(project.path().join("openmono.kdl")).expect("read"),
        messy
    );

    project.run(&["fmt"]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(project.path().join("openmono.kdl")).expect("read"),
        "// the box\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n\n    workspace \".\" // here\n}\ntask \"t\" {\n    run \"box\" \"\"\"\n    echo {\n    \"\"\"\n}\n"
    );
    project.run(&["fmt", "--check"]).expect_code(0);
    let after = project.run(&["plan"]);
    assert_eq!(after.stdout, before.stdout, "the same playbook");

    let broken = project.run(&["fmt", "broken.kdl"]);
    broken.expect_code(2);
    assert!(
        broken.stderr.contains("No closing '}' for child block"),
        "{}",
        broken.stderr
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("broken.kdl")).expect("read"),
        "container \"c\" {\n"
    );
}

#[test]
fn fmt_refuses_what_would_overflow_the_parser_as_plan_does() {
    let project = Project::new();
    let deep = "a { b ".repeat(3000);
    project.file("deep.kdl", &deep);
    project.file(
        "closed.kdl",
        &format!("{}{}", "a { ".repeat(3000), "}".repeat(3000)),
    );
    project.file("dashes.kdl", &format!("a {} b\n", "/-".repeat(5000)));
    for (file, says) in [
        ("deep.kdl", "children are nested more than 64 levels deep"),
        ("closed.kdl", "children are nested more than 64 levels deep"),
        ("dashes.kdl", "more than 16 `/-` in one node"),
    ] {
        for args in [
            &["fmt", file][..],
            &["fmt", "--check", file],
            &["plan", file],
        ] {
            let run = project.run(args);
            run.expect_code(2);
            assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        }
    }
    assert_eq!(
        std::fs::read_to_string(project.path().join("deep.kdl")).expect("read"),
        deep
    );
}

#[test]
fn a_playbook_with_nothing_to_do_prints_no_empty_teardown() {
    let project = Project::new();
    project.file("nothing.kdl", "playbook \"nothing\"\n");
    let run = project.run(&["plan", "nothing.kdl"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "Plan for playbook `nothing` (nothing.kdl): 0 steps, nothing to do\n"
    );
    project.file("empty.kdl", "");
    for command in ["plan", "validate", "apply"] {
        let run = project.run(&[command, "empty.kdl"]);
        run.expect_code(2);
        assert!(
            run.stderr.contains("the playbook is empty"),
            "{command}: {}",
            run.stderr
        );
    }
}

#[test]
fn detailed_exitcode_says_whether_there_is_anything_to_do() {
    let project = Project::new();
    project.file("empty.kdl", "playbook \"nothing\"\n");
    project.file(
        "box.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n}\n",
    );
    project.file("broken.kdl", "container \"box\" {\n");
    project
        .run(&["plan", "--detailed-exitcode", "empty.kdl"])
        .expect_code(0);
    project
        .run(&["plan", "--detailed-exitcode", "box.kdl"])
        .expect_code(2);
    let broken = project.run(&["plan", "--detailed-exitcode", "broken.kdl"]);
    broken.expect_code(1);
    assert!(broken.stderr.contains("broken.kdl"), "{}", broken.stderr);
    // Without the flag, the usual codes.
    project.run(&["plan", "box.kdl"]).expect_code(0);
    project.run(&["plan", "broken.kdl"]).expect_code(2);
}

#[test]
fn a_saved_plan_is_refused_when_its_playbook_or_vars_would_change_it() {
    let project = Project::new();
    let playbook = "var \"msg\" default=\"hi\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n}\ntask \"t\" {\n    run \"box\" \"echo {{ var.msg }}\"\n}\n";
    project.file("openmono.kdl", playbook);
    let saved = project.run(&["plan", "--out", "plan.json", "--var", "msg=hello"]);
    saved.expect_code(0);
    assert!(saved.stdout.contains("$ echo hello\n"), "{}", saved.stdout);
    assert!(
        saved.stderr.contains(
            "Saved the plan to plan.json; `openmono apply plan.json` runs exactly it, once."
        ),
        "{}",
        saved.stderr
    );
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.path().join("plan.json")).expect("plan file"),
    )
    .expect("json");
    assert_eq!(file["plan"]["steps"][1]["command"], "echo hello");
    assert_eq!(file["plan"]["needs"], serde_json::json!([[], [0]]));
    // --var cannot change a saved plan.
    let var = project.run(&["apply", "plan.json", "--var", "msg=other"]);
    var.expect_code(2);
    assert_eq!(
        var.stderr,
        "error: a saved plan keeps the vars it was made with; --var cannot change them\n"
    );
    // A changed playbook is refused before anything is created: no engine is needed.
    project.file("openmono.kdl", &format!("{playbook}// edited\n"));
    let changed = project
        .command(&["apply", "plan.json"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("run");
    assert_eq!(changed.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(
        stderr.ends_with(
            "openmono.kdl changed since the plan was made: make the plan again and review it\n"
        ),
        "{stderr}"
    );
    // Not a plan file.
    project.file("other.json", "{\"steps\": []}\n");
    let other = project.run(&["apply", "other.json"]);
    other.expect_code(2);
    assert!(
        other
            .stderr
            .starts_with("error: cannot read the plan file other.json: not an openmono plan file: missing field `format`"),
        "{}",
        other.stderr
    );
}

#[test]
fn plan_shows_every_mount_with_its_mode_and_the_permissions_it_uses() {
    let project = Project::new();
    project.file("my data:v1/hello.txt", "hello");
    project.file("out/.keep", "");
    std::os::unix::fs::symlink("my data:v1", project.path().join("data-link")).expect("symlink");
    project.file(
        "openmono.kdl",
        r#"var "where" default="/in"
container "box" {
    image "openmono/agent:latest"
    workspace "." read-only=#true
    mount "data-link" "{{ var.where }}/data//"
    mount "out" "/out" read-only=#false allow="home"
    mount "/usr/share" "/share" allow="outside-project"
    tmpfs "/scratch" size="8MiB"
    read-only-root #true
}
container "plain" {
    image "openmono/agent:latest"
    tmpfs "/tmp"
    read-only-root #true
}
"#,
    );
    let run = project.run(&["plan"]);
    run.expect_code(0);
    let dir = std::fs::canonicalize(project.path()).expect("canonical");
    assert_eq!(
        run.stdout.replace(&dir.display().to_string(), "<project>"),
        "\
Plan for playbook `openmono` (openmono.kdl): 2 steps, then teardown
  Engine: unix:///var/run/docker.sock (the default: no --engine, DOCKER_HOST or context)

  1. + start container `box` from `openmono/agent:latest` with no network
      mount <project> at /workspace (read-only)
      mount <project>/my data:v1 at /in/data (read-only)
      mount <project>/out at /out (READ-WRITE: the container can change these host files)
        allow `home` is not needed for this source
      mount /usr/share at /share (read-only)
        ALLOWED outside-project: host files that are not part of the project
      read-only root filesystem
      tmpfs at /scratch (8.0 MiB in memory, nothing in it runs)
      tmpfs at /tmp (64.0 MiB in memory, nothing in it runs), for the read-only root
      runs as the user who runs openmono; no capabilities, no new privileges
      limits: memory half the engine's, all the engine's CPUs but one, 1024 processes
      openmono copied in to run tasks
  2. + start container `plain` from `openmono/agent:latest` with no network
      no host mounts
      read-only root filesystem
      tmpfs at /tmp (64.0 MiB in memory, nothing in it runs)
      runs as the user who runs openmono; no capabilities, no new privileges
      limits: memory half the engine's, all the engine's CPUs but one, 1024 processes
      openmono copied in to run tasks

Who can reach whom:
  `box` is on no network: it reaches nothing, and nothing reaches it
  `plain` is on no network: it reaches nothing, and nothing reaches it

Teardown, always, also when a step fails or is interrupted:
  3. - remove container `plain`
  4. - remove container `box`
"
    );
}

#[test]
fn a_mount_that_leads_to_the_engine_socket_is_refused_and_allowed_by_name() {
    let project = Project::new();
    // Where the engine socket is (the Docker default, unless DOCKER_HOST names another).
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    std::os::unix::fs::symlink(&socket, project.path().join("innocent")).expect("symlink");
    let playbook = |allow: &str| {
        format!(
            "container \"box\" {{\n    image \"i\"\n    mount \"innocent\" \"/innocent\"{allow}\n}}\n"
        )
    };
    project.file("openmono.kdl", &playbook(""));
    let run = project.run(&["plan"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("× mount source `innocent` is refused: it leads to `"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Error: openmono::plan::mount_refused"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("write `allow=\"engine-socket outside-project\"` on this mount"),
        "{}",
        run.stderr
    );
    project.file(
        "openmono.kdl",
        &playbook(" allow=\"engine-socket outside-project\""),
    );
    let run = project.run(&["plan"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            "        ALLOWED engine-socket: CONTROL OF THE CONTAINER ENGINE, WHICH IS ROOT ON THE HOST"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn plan_reads_the_model_header_estimates_memory_and_checks_the_pin() {
    let gguf = crate::support::gemma();
    if !gguf.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is missing: run images/setup",
            gguf.display()
        );
        eprintln!(
            "\n!!! SKIPPED: {} is missing; run images/setup !!!\n",
            gguf.display()
        );
        return;
    }
    let pin = openmono::plan::sha256_file(&gguf).expect("hash");
    let project = Project::new();
    project.file(
        "openmono.kdl",
        &format!(
            "network \"n\"\nmodel \"m\" {{\n    gguf \"{}\" sha256=\"{pin}\"\n    network \"n\"\n    context 16777216\n    parallel 4\n    alias \"tiny\"\n    load-timeout \"90s\"\n}}\ncontainer \"c\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n}}\ntask \"t\" {{\n    agent \"c\" model=\"m\"\n    prompt \"ask {{{{ models.m.name }}}} at {{{{ models.m.url }}}}\"\n}}\n",
            gguf.display()
        ),
    );
    // No engine: the memory is this machine's, and plan says so.
    let run = Project::command(&project, &["plan"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}");
    for line in [
        "(241.4 MiB) at /models/model.gguf (read-only), SHA-256 as pinned\n",
        "      gemma3, 268M parameters, Q4_K_M, trained for 32768 tokens of context\n",
        "      memory: about 288.2 GiB (weights 241.4 MiB + KV cache 288.0 GiB for 16777216 tokens, shared by 4 requests at once)\n",
        "      context 16777216, --jinja (tool calls), --parallel 4, served as `tiny` at http://m:8080\n",
        "      warning: it needs about 288.2 GiB, more than the ",
        " this machine (the engine did not answer) has: it may fail to load\n",
        "GET http://m:8080/health answers 200, asked from `c` [after 2, 3]\n      at most 1m30s\n",
        "      prompt: ask tiny at http://m:8080\n",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
}

#[test]
fn doctor_without_the_engine_docker_host_names_says_so() {
    let run = Project::new()
        .command(&["doctor"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.starts_with(
            "✓ engine: unix:///nonexistent/docker.sock from DOCKER_HOST\n✗ the Docker engine is not running: nothing answers at `unix:///nonexistent/docker.sock`\n    check that an engine runs and answers at that address (`docker -H unix:///nonexistent/docker.sock info`), and that it is the one you mean: it came from DOCKER_HOST; `openmono doctor` says which engine is chosen and why\n"
        ),
        "{stdout}"
    );
}

#[test]
fn init_writes_a_starter_that_plans_and_apply_without_a_playbook_uses_it() {
    let project = Project::new();
    project.file("Cargo.toml", "[package]\nname = \"x\"\n");
    std::fs::create_dir_all(project.path().join("models")).expect("models");
    std::fs::write(
        project.path().join("models/model.gguf"),
        crate::support::tiny_gguf(),
    )
    .expect("model");
    // No playbook yet: plan shows the built-in default, and says so.
    let builtin = project.run(&["plan"]);
    builtin.expect_code(0);
    assert!(
        builtin.stderr.starts_with(
            "No openmono.kdl here: using the built-in default playbook (`openmono init` writes it out to edit).\n"
        ),
        "{}",
        builtin.stderr
    );
    let init = project.run(&["init"]);
    init.expect_code(0);
    assert!(
        init.stderr
            .contains("; its check is `cargo test --offline`.\n"),
        "{}",
        init.stderr
    );
    let written = std::fs::read_to_string(project.path().join("openmono.kdl")).expect("written");
    assert!(
        written.contains("    check \"cargo test --offline\""),
        "{written}"
    );
    // The file is the built-in default: the same plan (the file, now there, is kept
    // read-only in the workspace), and already in `fmt`'s layout.
    let planned = project.run(&["plan"]);
    planned.expect_code(0);
    assert_eq!(
        planned
            .stdout
            .replace("        read-only in it: openmono.kdl\n", ""),
        builtin.stdout
    );
    project.run(&["fmt", "--check"]).expect_code(0);
    project.run(&["validate"]).expect_code(0);
    // Never over a playbook that is there, unless asked.
    let again = project.run(&["init"]);
    again.expect_code(1);
    assert_eq!(
        again.stderr,
        "error: openmono.kdl is already here; `openmono init --force` replaces it\n"
    );
    std::fs::write(project.path().join("openmono.kdl"), "// mine\n").expect("edit");
    project.run(&["init", "--force"]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(project.path().join("openmono.kdl")).expect("read"),
        written
    );
}

#[test]
fn completions_and_the_manual_come_from_the_command_definitions() {
    let project = Project::new();
    let bash = project.run(&["completions", "bash"]);
    bash.expect_code(0);
    // Valid bash, offering the user's commands and not the hidden ones run in the box.
    let script = project.path().join("openmono.bash");
    std::fs::write(&script, &bash.stdout).expect("write");
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for command in ["apply", "plan", "doctor", "init", "gc"] {
        assert!(
            bash.stdout.contains(&format!("openmono,{command})")),
            "{command}"
        );
    }
    for hidden in ["sandbox-init", "supervise", "probe"] {
        assert!(
            !bash.stdout.contains(&format!("openmono,{hidden})")),
            "{hidden}"
        );
    }
    let zsh = project.run(&["completions", "zsh"]);
    zsh.expect_code(0);
    assert!(
        zsh.stdout.starts_with("#compdef openmono"),
        "{}",
        zsh.stdout
    );
    let man = project.run(&["man"]);
    man.expect_code(0);
    assert!(man.stdout.contains(".TH openmono 1"), "{}", man.stdout);
    assert!(
        man.stdout.contains("Run the playbook on the Docker engine"),
        "{}",
        man.stdout
    );
    project.run(&["completions", "tcsh"]).expect_code(2);
}

#[test]
fn plan_says_who_can_reach_whom() {
    let project = Project::new();
    project.file(
        "openmono.kdl",
        r#"
network "a"
network "b"
network "out" egress=#true
network "empty"
container "one" {
    image "openmono/agent:latest"
    network "a"
    network "out"
}
container "two" {
    image "openmono/agent:latest"
    network "b"
}
container "loner" {
    image "openmono/agent:latest"
}
task "t" {
    run "one" "true"
}
"#,
    );
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    let reach = plan
        .stdout
        .split_once("Who can reach whom:\n")
        .and_then(|(_, rest)| rest.split_once("\n\n"))
        .map_or_else(|| panic!("{}", plan.stdout), |(reach, _)| reach);
    assert_eq!(
        reach,
        "  `a`: only `one`; through it, no one: not the host, the LAN or the internet\n  \
         `b`: only `two`; through it, no one: not the host, the LAN or the internet\n  \
         `out`: only `one`; through it (egress), the host, the LAN and the internet\n  \
         `empty`: no one is on it\n  \
         `loner` is on no network: it reaches nothing, and nothing reaches it"
    );
}

#[test]
fn a_workspace_is_judged_like_a_mount_and_allowed_by_name() {
    let project = Project::new();
    let playbook = |workspace: &str| {
        format!("container \"box\" {{\n    image \"i\"\n    workspace {workspace}\n}}\n")
    };
    // The project's own folder needs nothing.
    project.file("openmono.kdl", &playbook("\".\""));
    let run = project.run(&["plan"]);
    run.expect_code(0);
    let dir = std::fs::canonicalize(project.path()).expect("canonical");
    assert!(
        run.stdout.contains(&format!(
            "      mount {} at /workspace (read-write), its only host mount\n",
            dir.display()
        )),
        "{}",
        run.stdout
    );
    // The same folder as the home folder is refused, and `allow="home"` lets it through.
    let as_home = |project: &Project| {
        crate::support::Run::from(
            project
                .command(&["plan"])
                .env("HOME", project.path())
                .output()
                .expect("run"),
        )
    };
    let run = as_home(&project);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("× workspace `.` is refused: it is your home folder\n"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    project.file("openmono.kdl", &playbook("\".\" allow=\"home\""));
    let run = as_home(&project);
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            "      mount {} at /workspace (read-write), its only host mount\n        ALLOWED home: your personal files, keys and tokens\n",
            dir.display()
        )),
        "{}",
        run.stdout
    );
    // A folder outside the playbook's is the project the playbook names: no permission.
    project.file("openmono.kdl", &playbook("\"/usr/share\" read-only=#true"));
    project.run(&["plan"]).expect_code(0);
    // A system folder, refused, then let through by exactly the permission it needs.
    project.file("openmono.kdl", &playbook("\"/etc\" read-only=#true"));
    let run = project.run(&["plan"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("Error: openmono::plan::workspace_refused"),
        "{}",
        run.stderr
    );
    project.file(
        "openmono.kdl",
        &playbook("\"/etc\" read-only=#true allow=\"system\""),
    );
    let run = project.run(&["plan"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            "      mount /etc at /workspace (read-only), its only host mount\n        ALLOWED system: the host's system files (configuration, devices, kernel state)\n"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn the_built_in_default_playbook_is_named_as_such_in_its_problems() {
    let project = Project::new();
    // No playbook and no model: the built-in default's model file is missing.
    let run = project.run(&["plan"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(
            "openmono::playbook\n\n  × the built-in default playbook has 1 problem\n\nError: openmono::plan::model_missing\n"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("╭─[the built-in default playbook:13:10]\n"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("openmono.kdl:"), "{}", run.stderr);
}

#[test]
fn a_var_variable_in_the_wrong_case_is_warned_about() {
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "var \"image-name\" default=\"i\"\ncontainer \"box\" {\n    image \"{{ var[\\\"image-name\\\"] }}\"\n}\n",
    );
    let run = crate::support::Run::from(
        project
            .command(&["plan"])
            .env("OPENMONO_VAR_IMAGE_NAME", "other")
            .output()
            .expect("run"),
    );
    run.expect_code(0);
    assert_eq!(
        run.stderr,
        "warning: OPENMONO_VAR_IMAGE_NAME sets no var of this playbook and is ignored: var names are case-sensitive; did you mean OPENMONO_VAR_image_name?\n"
    );
    assert!(run.stdout.contains("from `i`"), "{}", run.stdout);
    // The right case sets it, without a word.
    let run = crate::support::Run::from(
        project
            .command(&["plan"])
            .env("OPENMONO_VAR_image_name", "other")
            .output()
            .expect("run"),
    );
    run.expect_code(0);
    assert_eq!(run.stderr, "");
    assert!(run.stdout.contains("from `other`"), "{}", run.stdout);
}

#[test]
fn a_matrix_is_planned_for_its_first_input_and_too_large_a_one_is_refused() {
    let project = Project::new();
    // A path in the matrix is the playbook's, as a default is: wherever plan runs.
    project.file(
        "sub/openmono.kdl",
        "var \"data\" type=\"path\"\nvar \"n\" type=\"int\"\nmatrix \"data\" \"one\" \"two\"\nmatrix \"n\" 1 2 3\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    env \"DATA\" \"{{ var.data }}\"\n}\n",
    );
    let sub = std::fs::canonicalize(project.path().join("sub")).expect("canonical");
    let plan = project.run(&["plan", "sub/openmono.kdl"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(&format!(
            "\n  Matrix: data = {0}/one, {0}/two; n = 1, 2, 3: `apply` makes 6 run(s), each apart; this plan is for data={0}/one n=1 (`--var` plans another)\n",
            sub.display()
        )),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains(&format!("\n      env DATA={}/one\n", sub.display())),
        "{}",
        plan.stdout
    );
    // A saved plan is one run: every open var is named.
    let out = project.run(&["plan", "sub/openmono.kdl", "--out", "p.json"]);
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        "error: a saved plan is one run, and the playbook's matrix leaves vars open: fix them with --var data=… --var n=…\n"
    );
    // More than a thousand runs: refused before anything, by plan, validate and apply.
    let values: Vec<String> = (1..=40).map(|i| i.to_string()).collect();
    project.file(
        "big.kdl",
        &format!(
            "var \"a\"\nvar \"b\"\nmatrix \"a\" {0}\nmatrix \"b\" {0}\ncontainer \"box\" {{\n    image \"openmono/agent:latest\"\n}}\n",
            values.join(" ")
        ),
    );
    for command in ["plan", "validate", "apply"] {
        let refused = project.run(&[command, "big.kdl"]);
        refused.expect_code(2);
        assert_eq!(
            refused.stderr,
            "error: the matrix makes more than 1000 runs (40 values of `a` × 40 values of `b`): give fewer values, or fix some vars with --var\n",
            "{command}"
        );
    }
    // A --matrix of a var the playbook does not have names that flag, in plan and apply.
    for command in ["plan", "apply"] {
        let unknown = project.run(&[command, "big.kdl", "--matrix", "zz=1,2", "--var", "a=1"]);
        unknown.expect_code(2);
        assert_eq!(
            unknown.stderr,
            "error: --matrix zz=…: the playbook has no var `zz` (declare it: `var \"zz\"`)\n",
            "{command}"
        );
    }
}

#[test]
fn plan_with_matrix_shows_the_runs_apply_with_the_same_flags_makes() {
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "var \"word\"\nvar \"n\" type=\"int\"\nmatrix \"n\" 1 2\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    env \"WORD\" \"{{ var.word }}-{{ var.n }}\"\n}\n",
    );
    // --matrix adds a var to the playbook's own matrix, or replaces its values.
    let plan = project.run(&["plan", "--matrix", "word=x,y,z"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains("\n  Matrix: n = 1, 2; word = x, y, z: `apply` makes 6 run(s), each apart; this plan is for n=1 word=x (`--var` plans another)\n")
            && plan.stdout.contains("\n      env WORD=x-1\n"),
        "{}",
        plan.stdout
    );
    let plan = project.run(&["plan", "--matrix", "n=7,8,9", "--var", "word=w"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains("\n  Matrix: n = 7, 8, 9: `apply` makes 3 run(s), each apart; this plan is for n=7 (`--var` plans another)\n")
            && plan.stdout.contains("\n      env WORD=w-7\n"),
        "{}",
        plan.stdout
    );
    // What apply refuses, plan refuses: a var set twice; and a saved plan is one run.
    let twice = project.run(&["plan", "--matrix", "word=x", "--var", "word=y"]);
    twice.expect_code(2);
    assert_eq!(
        twice.stderr,
        "error: `word` is set by both --var and --matrix: keep one\n"
    );
    let saved = project.run(&["plan", "--matrix", "word=x", "--out", "p.json"]);
    saved.expect_code(2);
    assert_eq!(
        saved.stderr,
        "error: a saved plan is one run: --out takes no --matrix (fix each var with --var)\n"
    );
    assert!(!project.path().join("p.json").exists());
    let detailed = project.run(&[
        "plan",
        "--matrix",
        "word=x",
        "--var",
        "word=y",
        "--detailed-exitcode",
    ]);
    detailed.expect_code(1);
}

#[test]
fn every_input_of_a_matrix_is_checked_by_validate_and_plan_as_by_apply() {
    let project = Project::new();
    project.file(
        "openmono.kdl",
        "var \"p\" type=\"path\"\ncontainer \"box\" {\n    image \"openmono/agent:latest\"\n    workspace \"{{ var.p }}\"\n}\nmatrix \"p\" \".\" \"missing\"\n",
    );
    let dir = std::fs::canonicalize(project.path()).expect("canonical");
    let said = format!(
        "(with the matrix input p={}/missing: `apply` would start no run)\n",
        dir.display()
    );
    // --matrix gives the values as they are written (the var makes them paths).
    let given = "(with the matrix input p=missing: `apply` would start no run)\n".to_owned();
    for (command, said) in [
        (&["validate", "openmono.kdl"][..], &said),
        (&["plan"], &said),
        (&["plan", "--matrix", "p=.,missing"], &given),
    ] {
        let run = project.run(command);
        run.expect_code(2);
        assert!(
            run.stderr.contains("× workspace `") && run.stderr.ends_with(said.as_str()),
            "{command:?}: {}",
            run.stderr
        );
    }
    // The first input alone plans.
    project.run(&["plan", "--var", "p=."]).expect_code(0);
    std::fs::create_dir(project.path().join("missing")).expect("mkdir");
    project.run(&["validate", "openmono.kdl"]).expect_code(0);
}
