//! Bad playbooks: each problem is a diagnostic with the file, the line and column, a
//! label on the exact span and a help line; all problems of a stage come at once.

use crate::support::{Project, squeezed};

/// Plans `text` as `bad.kdl` and compares the whole rendered diagnostic.
#[track_caller]
fn assert_diagnostic(text: &str, expected: &str) {
    let project = Project::new();
    project.file("bad.kdl", text);
    let run = project.run(&["plan", "bad.kdl"]);
    run.expect_code(2);
    assert_eq!(run.stdout, "", "nothing on stdout");
    assert_eq!(
        run.stderr.trim_end(),
        expected.trim_end(),
        "\n{}",
        run.stderr
    );
}

#[test]
fn syntax_error_names_line_and_column() {
    assert_diagnostic(
        "container \"box\" {\n    image \"x\n}\n",
        r#"openmono::playbook

  × `bad.kdl` has 1 problem

Error: openmono::decode::syntax

  × Unexpected newline in single-line quoted string
   ╭─[bad.kdl:2:11]
 1 │ container "box" {
 2 │     image "x
   ·           ─┬
   ·            ╰── not quoted string
 3 │ }
   ╰────
  help: You can make a string multi-line by wrapping it in '"""', with a newline immediately after
        the opening quotes.
"#,
    );
}

#[test]
fn kdl_v1_boolean_points_at_the_value_and_says_how_to_write_it() {
    assert_diagnostic(
        "network \"sandbox\"\ncontainer \"box\" {\n    image \"x\" internal=true\n}\n",
        r"openmono::playbook

  × `bad.kdl` has 1 problem

Error: openmono::decode::syntax

  × Expected identifier string
   ╭─[bad.kdl:3:24]
 2 │ container \x22box\x22 {
 3 │     image \x22x\x22 internal=true
   ·                        ──┬─
   ·                          ╰── not identifier string
 4 │ }
   ╰────
  help: KDL v2 writes this keyword with a `#`: `#true`
"
        .replace(r"\x22", "\"")
        .as_str(),
    );
}

#[test]
fn every_decode_problem_is_reported_at_once() {
    assert_diagnostic(
        r#"network "sandbox"
netwrk "other"
container "box" {
    imag "x"
}
container "box" {
    image "y"
}
"#,
        r#"openmono::playbook

  × `bad.kdl` has 4 problems

Error: openmono::decode::unknown_node

  × unknown node `netwrk` at the top level
   ╭─[bad.kdl:2:1]
 1 │ network "sandbox"
 2 │ netwrk "other"
   · ───┬──
   ·    ╰── unknown
 3 │ container "box" {
   ╰────
  help: did you mean `network`?

Error: openmono::decode::missing_child

  × container `box` has no `image`
   ╭─[bad.kdl:3:1]
 2 │ netwrk "other"
 3 │ container "box" {
   · ────┬────
   ·     ╰── needs `image`
 4 │     imag "x"
   ╰────
  help: add `image "openmono/agent:latest"`: the image to run

Error: openmono::decode::duplicate

  × model or container `box` is defined twice
   ╭─[bad.kdl:3:11]
 2 │ netwrk "other"
 3 │ container "box" {
   ·           ──┬──
   ·             ╰── first defined here
 4 │     imag "x"
 5 │ }
 6 │ container "box" {
   ·           ──┬──
   ·             ╰── defined again here
 7 │     image "y"
   ╰────
  help: give each model or container its own name

Error: openmono::decode::unknown_node

  × unknown node `imag` in `container`
   ╭─[bad.kdl:4:5]
 3 │ container "box" {
 4 │     imag "x"
   ·     ──┬─
   ·       ╰── unknown
 5 │ }
   ╰────
  help: did you mean `image`?
"#,
    );
}

#[test]
fn unknown_references_and_a_whole_cycle() {
    assert_diagnostic(
        r#"container "box" {
    image "x"
}
task "a" after="c" {
    run "box" "true"
}
task "b" after="a" {
    run "box" "true"
}
task "c" after="b" {
    run "box" "true"
}
task "d" {
    agent "bx" model="coder"
    prompt "hi"
}
"#,
        r#"openmono::playbook

  × `bad.kdl` has 3 problems

Error: openmono::graph::cycle

  × tasks wait for each other in a cycle: a → b → c → a
   ╭─[bad.kdl:7:10]
 6 │ }
 7 │ task "b" after="a" {
   ·          ────┬────
   ·              ╰── this `after` closes the cycle
 8 │     run "box" "true"
   ╰────
  help: remove one of these `after` references

Error: openmono::graph::unknown_reference

  × unknown container `bx`
    ╭─[bad.kdl:14:11]
 13 │ task "d" {
 14 │     agent "bx" model="coder"
    ·           ──┬─
    ·             ╰── no container has this name
 15 │     prompt "hi"
    ╰────
  help: did you mean `box`?

Error: openmono::graph::unknown_reference

  × unknown model `coder`
    ╭─[bad.kdl:14:16]
 13 │ task "d" {
 14 │     agent "bx" model="coder"
    ·                ──────┬──────
    ·                      ╰── no model has this name
 15 │     prompt "hi"
    ╰────
  help: the playbook defines no model: add `model "coder"`
"#,
    );
}

#[test]
fn a_model_and_an_agent_on_different_networks() {
    let project = Project::new();
    project.file("m.gguf", "GGUF and then some");
    project.file(
        "bad.kdl",
        r#"network "a"
network "b"
model "coder" {
    gguf "m.gguf"
    network "a"
}
container "box" {
    image "x"
    network "b"
}
task "t" {
    agent "box" model="coder"
    prompt "hi"
}
"#,
    );
    let run = project.run(&["plan", "bad.kdl"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("× container `box` cannot reach model `coder`: they share no network"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("help: add `network \"a\"` to container `box`"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_model_file_and_a_file_that_is_not_gguf() {
    let project = Project::new();
    project.file("not-a-model.gguf", "<html>not a model</html>");
    project.file(
        "bad.kdl",
        r#"network "n"
model "one" {
    gguf "models/missing.gguf"
    network "n"
}
model "two" {
    gguf "not-a-model.gguf"
    network "n"
}
"#,
    );
    let run = project.run(&["plan", "bad.kdl"]);
    run.expect_code(2);
    assert_eq!(
        run.stderr.trim_end(),
        r#"openmono::playbook

  × `bad.kdl` has 2 problems

Error: openmono::plan::model_missing

  × model file `models/missing.gguf` does not exist
   ╭─[bad.kdl:3:10]
 2 │ model "one" {
 3 │     gguf "models/missing.gguf"
   ·          ──────────┬──────────
   ·                    ╰── no such file
 4 │     network "n"
   ╰────
  help: a relative path starts at the playbook's folder; any GGUF file llama.cpp loads will do (in
        openmono's own repository, `images/fetch-model` puts the example one in `models/`)

Error: openmono::plan::not_gguf

  × `not-a-model.gguf` is not a GGUF model file
   ╭─[bad.kdl:7:10]
 6 │ model "two" {
 7 │     gguf "not-a-model.gguf"
   ·          ─────────┬────────
   ·                   ╰── does not start with `GGUF`
 8 │     network "n"
   ╰────
  help: llama-server loads GGUF files, which start with the bytes `GGUF`"#
    );
}

#[test]
fn wrong_types_missing_values_and_unknown_properties() {
    let project = Project::new();
    project.file(
        "bad.kdl",
        r#"model "m" {
    context "big"
}
container 42 {
    image "x"
}
task "t" retries=3 {
    agent "box"
}
"#,
    );
    let run = project.run(&["plan", "bad.kdl"]);
    run.expect_code(2);
    let expected = [
        "× `bad.kdl` has 7 problems",
        "× expected an integer, found a string",
        "╭─[bad.kdl:2:13]",
        "× model `m` has no `gguf`",
        "× model `m` has no `network`",
        "× expected a string, found an integer",
        "╭─[bad.kdl:4:11]",
        "help: quote it: `\"42\"`",
        "× unknown property `retries` on `task`",
        "help: `task` takes: `after`",
        "× `agent` needs a `model=` property",
        "× task `t` has no `prompt`",
    ];
    for line in expected {
        assert!(
            run.stderr.contains(line),
            "missing {line:?} in\n{}",
            run.stderr
        );
    }
}

#[test]
fn an_override_that_weakens_isolation_says_so() {
    let project = Project::new();
    project.file("w.kdl", "network \"n\" egress=#false egress=#true\n");
    let run = project.run(&["plan", "w.kdl"]);
    run.expect_code(0);
    assert_eq!(
        run.stderr.trim_end(),
        r"openmono::playbook

  ⚠ `w.kdl` has 1 warning

Warning: openmono::decode::overridden

  ⚠ property `egress` on `network` is given twice; the last one wins
   ╭─[w.kdl:1:13]
 1 │ network \x22n\x22 egress=#false egress=#true
   ·             ──────┬────── ──────┬─────
   ·                   │             ╰── this one wins
   ·                   ╰── first given here
   ╰────
  help: this override WEAKENS ISOLATION: the network is not internal, and containers on it can
        reach the internet, the LAN and the host"
            .replace(r"\x22", "\"")
    );
    assert!(run.stdout.contains("EGRESS ALLOWED"), "{}", run.stdout);
}

#[test]
fn hostile_files_get_an_error_not_a_crash() {
    let project = Project::new();
    // An error far along one very long line, and children nested hundreds deep.
    project.file(
        "long.kdl",
        &format!("network \"{}\" junk=1\n", "a".repeat(70_000)),
    );
    project.file(
        "deep.kdl",
        &format!(
            "container \"box\" {}{}",
            "{ a ".repeat(300),
            "}".repeat(300)
        ),
    );
    project.file(
        "empty.kdl",
        "container \"box\" {\n    image \"\"\n}\ntask \"t\" {\n    run \"box\" \"\"\n}\n",
    );
    for (file, expected) in [
        ("long.kdl", "unknown property `junk` on `network`"),
        ("deep.kdl", "children are nested more than 64 levels deep"),
        ("empty.kdl", "this value is empty"),
    ] {
        let run = project.run(&["plan", file]);
        run.expect_code(2);
        assert!(run.stderr.contains(expected), "{file}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{file}: {}", run.stderr);
    }
}

#[test]
fn a_closed_stderr_or_a_full_disk_is_not_a_crash() {
    let project = Project::new();
    project.file("bad.kdl", "netwrk \"n\"\n");
    project.file("good.kdl", "network \"n\"\n");
    let mut child = project
        .command(&["plan", "bad.kdl"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stderr.take());
    assert_eq!(child.wait().expect("wait").code(), Some(2));
    let full = std::fs::File::create("/dev/full").expect("/dev/full");
    let status = project
        .command(&["plan", "good.kdl"])
        .stdout(full)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run");
    assert_eq!(
        status.code(),
        Some(1),
        "output that cannot be written is a failure"
    );
}

#[test]
fn included_files_join_the_playbook_and_their_problems_name_them() {
    let project = Project::new();
    project.file(
        "main.kdl",
        "include \"sub/box.kdl\"\ninclude \"sub/box.kdl\"\ntask \"t\" {\n    run \"box\" \"echo hi\"\n}\n",
    );
    // Paths in an included file are relative to it; a file included twice is read once.
    project.file(
        "sub/box.kdl",
        "container \"box\" {\n    image \"openmono/agent:latest\"\n    workspace \".\"\n}\n",
    );
    let run = project.run(&["plan", "main.kdl"]);
    run.expect_code(0);
    let sub = std::fs::canonicalize(project.path().join("sub")).expect("sub");
    assert!(
        run.stdout
            .contains(&format!("      mount {} at /workspace", sub.display())),
        "{}",
        run.stdout
    );

    project.file("a.kdl", "include \"b.kdl\"\nnetwork \"n\"\n");
    project.file("b.kdl", "include \"a.kdl\"\nnetwork \"n\"\n");
    project.file("top.kdl", "include \"a.kdl\"\ninclude \"missing.kdl\"\n");
    let run = project.run(&["plan", "top.kdl"]);
    run.expect_code(2);
    assert_eq!(
        run.stderr.trim_end(),
        r#"openmono::playbook

  × `top.kdl` has 3 problems

Error: openmono::decode::include_missing

  × cannot include `missing.kdl`: No such file or directory (os error 2)
   ╭─[top.kdl:2:9]
 1 │ include "a.kdl"
 2 │ include "missing.kdl"
   ·         ──────┬──────
   ·               ╰── included here
   ╰────
  help: an `include` path is relative to the file that includes it

Error: openmono::decode::duplicate

  × network `n` is defined twice
   ╭─[a.kdl:2:9]
 1 │ include "b.kdl"
 2 │ network "n"
   ·         ─┬─
   ·          ╰── defined again here
   ╰────
   ╭─[b.kdl:2:9]
 1 │ include "a.kdl"
 2 │ network "n"
   ·         ─┬─
   ·          ╰── first defined here
   ╰────
  help: give each network its own name

Error: openmono::decode::include_loop

  × files include each other in a loop: a.kdl → b.kdl → a.kdl
   ╭─[b.kdl:1:9]
 1 │ include "a.kdl"
   ·         ───┬───
   ·            ╰── this `include` closes the loop
 2 │ network "n"
   ╰────
  help: remove one of these `include`s"#
    );
}

#[test]
fn only_kdl_files_can_be_included() {
    let project = Project::new();
    project.file("secret.txt", "root:x:0:0\n");
    project.file("main.kdl", "include \"secret.txt\"\n");
    let run = project.run(&["plan", "main.kdl"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("cannot include `secret.txt`: only `.kdl` files can be included"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("root:x"), "{}", run.stderr);
    // A folder named like a playbook is not one.
    std::fs::create_dir(project.path().join("folder.kdl")).expect("mkdir");
    project.file("main.kdl", "include \"folder.kdl\"\n");
    let run = project.run(&["plan", "main.kdl"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(
            "cannot include `folder.kdl`: it is not a regular file (a folder, a device or a pipe)"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_playbook_that_is_not_utf8_says_where_the_bad_byte_is() {
    let project = Project::new();
    std::fs::write(
        project.path().join("latin1.kdl"),
        b"network \"n\"\n// caf\xe9\n",
    )
    .expect("write");
    let run = project.run(&["validate", "latin1.kdl"]);
    run.expect_code(2);
    assert!(
        squeezed(&run.stderr).contains(&squeezed(
            "the file is not UTF-8 text: byte 19 (line 2, column 7) is not valid UTF-8; save the playbook as UTF-8"
        )),
        "{}",
        run.stderr
    );
}
