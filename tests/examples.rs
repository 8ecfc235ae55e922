//! The example playbooks that need no model, applied on the real engine: what the book's
//! recipes say they do, they do, and they leave nothing behind.

use crate::support::{Project, assert_run_gone, docker, root};

fn example(name: &str) -> String {
    root()
        .join("playbooks")
        .join(name)
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

#[test]
fn the_test_suite_runs_in_a_box_without_a_network_and_its_failure_is_the_runs() {
    if !docker() {
        return;
    }
    let playbook = example("test-suite.kdl");
    // The demo project as it is: one test fails on purpose.
    let project = Project::new();
    let run = project.run(&["apply", &playbook]);
    run.expect_code(1);
    for line in [
        "  ✗ task `test` (run, exit code 1, ",
        "        FAIL: 'Rust & KDL!' -> 'Rust-KDL', expected 'rust-kdl'\n        1 of 4 failed\n",
        "  failure: run task `test`: the command exited with code 1\n",
        "Teardown removed 1 container(s) and 0 network(s).\n",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} not in:\n{}",
            run.stdout
        );
    }
    assert_run_gone(&run.run_id());

    // A fixed copy passes; the box has no network interface but loopback.
    project.file(
        "demo/slug.sh",
        "printf '%s\\n' \"$*\" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//'\n",
    );
    project.file(
        "demo/test.sh",
        &std::fs::read_to_string(root().join("playbooks/demo/test.sh")).expect("test.sh"),
    );
    let run = project.run(&[
        "apply",
        &playbook,
        "--var",
        "project=demo",
        "--var",
        "test=sh test.sh && ls /sys/class/net",
    ]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("        all 4 passed\n        lo\n"),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

// The engines of these machines have no GPU; on one that has, this run would go on to
// start the CPU-only server image.
#[test]
fn the_gpu_example_plans_anywhere_and_says_why_it_cannot_run_without_a_gpu() {
    if !docker() {
        return;
    }
    let project = Project::new();
    let run = project.run(&["apply", &example("gpu.kdl")]);
    run.expect_code(1);
    assert!(
        run.stdout.contains(
            "  failure: model `gpu`: the model offloads layers to a GPU (`gpu-layers`), and the engine has no GPU support"
        ),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}
