//! The agent driven through exact scenarios by a scripted model (`model { replay … }`),
//! end to end on the real engine: the replay server runs in its own container on the
//! run's internal network, the agent in the box, and after every run nothing with the
//! run's label is left.

use openmono::agent::{AgentEvent, EndReason};
use serde_json::{Value, json};

use crate::support::{Project, Run, assert_run_gone, docker};

/// A project whose playbook has the model `m` replaying `script`, and an agent task `t`
/// in `box` (the project as its workspace) with these extra lines.
fn scenario(script: &str, task: &str) -> Project {
    let project = Project::new();
    project.file("session.jsonl", script);
    project.file(
        "openmono.kdl",
        &format!(
            "network \"n\"\nmodel \"m\" {{\n    replay \"session.jsonl\"\n    network \"n\"\n}}\n\
             container \"box\" {{\n    image \"openmono/agent:latest\"\n    network \"n\"\n    workspace \".\"\n}}\n\
             task \"t\" {{\n    agent \"box\" model=\"m\"\n    prompt \"Fix greeting.txt\"\n{task}}}\n"
        ),
    );
    project
}

/// The run's folder.
fn run_dir(project: &Project, run: &Run) -> std::path::PathBuf {
    project.state.path().join("runs").join(run.run_id())
}

/// The events of task `t`'s transcript.
fn transcript(project: &Project, run: &Run) -> Vec<AgentEvent> {
    let path = run_dir(project, run).join("t.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| AgentEvent::parse_line(line).unwrap_or_else(|| panic!("bad line {line}")))
        .collect()
}

/// The chat requests the replay server got, in order, from its log in the run's folder.
fn requests(project: &Project, run: &Run) -> Vec<Value> {
    let path = run_dir(project, run).join("m.server.log");
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let requests: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect();
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request["request"], i + 1, "{log}");
    }
    requests.into_iter().map(|r| r["body"].clone()).collect()
}

fn last_message(request: &Value) -> &Value {
    request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .expect("messages")
}

fn final_event(events: &[AgentEvent]) -> (&str, u32, EndReason) {
    match events.last() {
        Some(AgentEvent::Final {
            answer,
            steps,
            reason,
        }) => (answer.as_str(), *steps, *reason),
        other => panic!("the transcript does not end with `final`: {other:?}"),
    }
}

/// How the report says the agent ended on a model it could not use.
const MODEL_FAILED: &str =
    "the model could not be reached or answered with an error (exit code 3); see the transcript";

/// Asserts that task `t` failed with the agent's exit `code`, for this reason.
#[track_caller]
fn assert_failed(run: &Run, code: i32, why: &str) {
    for line in [
        format!("  ✗ task `t` (agent, exit code {code}, "),
        format!("  failure: agent task `t`: {why}\n"),
    ] {
        assert!(run.stdout.contains(&line), "{line}\n{}", run.stdout);
    }
}

/// Runs `apply`; asserts the exit code and that teardown left nothing.
#[track_caller]
fn apply(project: &Project, code: i32) -> Run {
    let run = project.run(&["apply"]);
    run.expect_code(code);
    assert!(
        run.stdout
            .contains("Teardown removed 2 container(s) and 1 network(s)."),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
    run
}

/// Edits `greeting.txt` with its arguments in 6 chunks, then says it is done.
const EDIT: &str = r#"{"content": "I will fix the greeting.", "tool_calls": [{"id": "e1", "name": "edit_file", "arguments": {"path": "greeting.txt", "old_text": "helo", "new_text": "hello"}}], "chunks": 6}
{"content": "Fixed the greeting.", "chunks": 2}
"#;

#[test]
fn a_scripted_edit_passes_the_check_and_its_transcript_replays_the_same() {
    if !docker() {
        return;
    }
    let project = scenario(EDIT, "    check \"grep -qx 'hello world' greeting.txt\"\n");
    project.file("greeting.txt", "helo world\n");
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(&format!(
            "  2. + start model `m`: openmono replay from `openmono/agent:latest` on `n` [after 1]\n      mount {}/session.jsonl (2 replies) at /models/replay.jsonl (read-only)\n      answers request n with reply n, served as `m` at http://m:8080\n",
            std::fs::canonicalize(project.path()).expect("path").display()
        )),
        "{}",
        plan.stdout
    );
    let run = apply(&project, 0);
    assert!(
        run.stdout
            .contains("  ✓ task `t` (agent, exit code 0, check exit code 0, "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("      answer:\n        Fixed the greeting.\n"),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("greeting.txt")).expect("file"),
        "hello world\n"
    );
    let events = transcript(&project, &run);
    // The six pieces of the arguments came back together.
    assert!(
        events.contains(&AgentEvent::ToolCall {
            step: 1,
            id: "e1".into(),
            name: "edit_file".into(),
            arguments: r#"{"new_text":"hello","old_text":"helo","path":"greeting.txt"}"#.into()
        }),
        "{events:?}"
    );
    assert_eq!(
        final_event(&events),
        ("Fixed the greeting.", 2, EndReason::Done)
    );
    let sent = requests(&project, &run);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        last_message(&sent[1]),
        &json!({"role": "tool", "tool_call_id": "e1", "content": "edited `greeting.txt` at line 1: 1 line replaced by 1"})
    );

    // The transcript is a script: the recorded session replays to the same end.
    let replayed = scenario(
        &std::fs::read_to_string(run_dir(&project, &run).join("t.jsonl")).expect("transcript"),
        "    check \"grep -qx 'hello world' greeting.txt\"\n",
    );
    replayed.file("greeting.txt", "helo world\n");
    let plan = replayed.run(&["plan"]);
    assert!(
        plan.stdout.contains("(2 replies, from a transcript)"),
        "{}",
        plan.stdout
    );
    let again = apply(&replayed, 0);
    assert_eq!(
        std::fs::read_to_string(replayed.path().join("greeting.txt")).expect("file"),
        "hello world\n"
    );
    assert_eq!(
        final_event(&transcript(&replayed, &again)),
        ("Fixed the greeting.", 2, EndReason::Done)
    );
}

/// A check that says what is wrong when it fails, with one retry.
const CHECK_WITH_RETRY: &str = "    check #\"grep -qx 'hello world' greeting.txt || { echo \"want 'hello world', got '$(cat greeting.txt)'\"; exit 1; }\"# retries=1\n";

/// What the model reads when [`CHECK_WITH_RETRY`] failed after the first round.
const CHECK_FEEDBACK: &str = "The task is not done yet: its check `grep -qx 'hello world' greeting.txt || { echo \"want 'hello world', got '$(cat greeting.txt)'\"; exit 1; }` failed.\nexit code 1\nwant 'hello world', got 'helo world'\n\nFix what the check reports, then reply with a short final answer again. You have 1 more round; the check runs again after your answer.";

/// The check events of a transcript: round, step, exit code, output.
fn checks(events: &[AgentEvent]) -> Vec<(u32, u32, Option<i32>, &str)> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Check {
                round,
                step,
                exit_code,
                output,
                ..
            } => Some((*round, *step, *exit_code, output.as_str())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_failing_check_goes_back_to_the_agent_and_the_next_round_fixes_it() {
    if !docker() {
        return;
    }
    let project = scenario(
        r#"{"content": "The greeting looks fine to me."}
{"tool_calls": [{"id": "e1", "name": "edit_file", "arguments": {"path": "greeting.txt", "old_text": "helo", "new_text": "hello"}}]}
{"content": "Fixed the greeting."}
"#,
        CHECK_WITH_RETRY,
    );
    project.file("greeting.txt", "helo world\n");
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(
            "\n      retries: 1: while the check fails, its output goes back to the agent for another round\n"
        ),
        "{}",
        plan.stdout
    );
    let run = apply(&project, 0);
    assert!(
        run.stdout
            .contains("  ✓ task `t` (agent, exit code 0, check exit code 0, "),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("greeting.txt")).expect("file"),
        "hello world\n"
    );
    let events = transcript(&project, &run);
    assert_eq!(
        checks(&events),
        [(
            1,
            1,
            Some(1),
            "exit code 1\nwant 'hello world', got 'helo world'"
        )]
    );
    assert_eq!(
        final_event(&events),
        ("Fixed the greeting.", 3, EndReason::Done)
    );
    // The check's output reached the model, after its first final answer.
    let sent = requests(&project, &run);
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent[1]["messages"].as_array().expect("messages")[2..],
        [
            json!({"role": "assistant", "content": "The greeting looks fine to me."}),
            json!({"role": "user", "content": CHECK_FEEDBACK}),
        ]
    );
    let shown = project.run(&["runs", "show", &run.run_id()]);
    shown.expect_code(0);
    assert!(
        shown.stdout.contains(
            "  [1] check after round 1: exit code 1\n                           want 'hello world', got 'helo world'\n"
        ),
        "{}",
        shown.stdout
    );
}

#[test]
fn when_the_retries_run_out_the_host_check_fails_the_task_with_its_output() {
    if !docker() {
        return;
    }
    let project = scenario(
        "{\"content\": \"Done.\"}\n{\"content\": \"Still done.\"}\n{\"content\": \"never asked\"}\n",
        CHECK_WITH_RETRY,
    );
    project.file("greeting.txt", "helo world\n");
    let run = apply(&project, 1);
    assert_failed(&run, 0, "the check failed: the command exited with code 1");
    assert!(
        run.stdout.contains(
            "  ✗ task `t` (agent, exit code 0, check exit code 1, "
        ) && run.stdout.contains(
            "      check: exit code 1\n        want 'hello world', got 'helo world'\n      check log: "
        ),
        "{}",
        run.stdout
    );
    let events = transcript(&project, &run);
    // The agent checks after the first round; after the last, the host's check decides.
    assert_eq!(
        checks(&events),
        [(
            1,
            1,
            Some(1),
            "exit code 1\nwant 'hello world', got 'helo world'"
        )]
    );
    assert_eq!(final_event(&events), ("Still done.", 2, EndReason::Done));
    let sent = requests(&project, &run);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        last_message(&sent[1]),
        &json!({"role": "user", "content": CHECK_FEEDBACK})
    );
}

#[test]
fn a_failing_tool_and_a_malformed_call_are_answered_and_the_run_goes_on() {
    if !docker() {
        return;
    }
    let project = scenario(
        r#"{"tool_calls": [{"id": "s1", "name": "shell", "arguments": {"command": "echo oops >&2; exit 3"}}]}
{"tool_calls": [{"id": "s2", "name": "shell", "arguments": "{\"command\": \"echo hi"}]}
{"content": "Gave up."}
"#,
        "",
    );
    let run = apply(&project, 0);
    let sent = requests(&project, &run);
    assert_eq!(sent.len(), 3);
    assert_eq!(
        last_message(&sent[1]),
        &json!({"role": "tool", "tool_call_id": "s1", "content": "exit code 3\noops\n"})
    );
    assert_eq!(
        last_message(&sent[2]),
        &json!({"role": "tool", "tool_call_id": "s2", "content": "error: the arguments are not valid JSON (EOF while parsing a string at line 1 column 20); call `shell` with arguments like {\"command\": \"ls -la\"}"})
    );
    let events = transcript(&project, &run);
    let results: Vec<(&str, Option<i32>)> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolResult { id, exit_code, .. } => Some((id.as_str(), *exit_code)),
            _ => None,
        })
        .collect();
    assert_eq!(results, [("s1", Some(3)), ("s2", None)]);
    assert_eq!(final_event(&events), ("Gave up.", 3, EndReason::Done));
}

#[test]
fn a_model_that_never_stops_is_ended_by_the_budget() {
    if !docker() {
        return;
    }
    // Calling tools for ever: the step budget ends it.
    let call = r#"{"content": "Still looking.", "tool_calls": [{"name": "shell", "arguments": {"command": "true"}}]}"#;
    let project = scenario(
        &format!("{call}\n{call}\n{call}\n{call}\n"),
        "    max-steps 3\n",
    );
    let run = apply(&project, 1);
    assert_failed(&run, 2, "the agent used up its steps (exit code 2)");
    assert_eq!(
        final_event(&transcript(&project, &run)),
        ("Still looking.", 3, EndReason::BudgetSpent)
    );
    assert_eq!(requests(&project, &run).len(), 3);

    // A reply that never ends: the agent cuts it off at its token budget (and the
    // slack of 8 for the server's own last events), as the server should have, and
    // takes it as the answer.
    let project = scenario(
        "{\"content\": \"And on \", \"end\": \"endless\"}\n",
        "    max-tokens 16\n    timeout \"5m\"\n",
    );
    let run = apply(&project, 0);
    let answer = format!("And on {}", "and on ".repeat(16 + 8 - 1));
    assert_eq!(
        final_event(&transcript(&project, &run)),
        (answer.trim_end(), 1, EndReason::Done)
    );
    assert_eq!(requests(&project, &run).len(), 1);

    // A budget of tokens too large to end it in time: the task's time ends it, and the
    // agent says so itself before its supervisor would have to kill it.
    let project = scenario(
        "{\"content\": \"And on \", \"end\": \"endless\"}\n",
        "    max-tokens 100000\n    timeout \"3s\"\n",
    );
    let run = apply(&project, 1);
    assert_failed(
        &run,
        124,
        "its time ran out after 3s: the agent stopped (`time_spent` in the transcript)",
    );
    assert_eq!(
        final_event(&transcript(&project, &run)),
        ("", 0, EndReason::TimeSpent)
    );
}

#[test]
fn an_agent_stopped_by_a_signal_has_its_transcript_ended_as_interrupted() {
    if !docker() {
        return;
    }
    let project = scenario(
        "{\"content\": \"Thinking. \", \"end\": \"endless\"}\n",
        "    max-tokens 100000\n",
    );
    let child = project
        .command(&["apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openmono");
    // Until the agent has started: its transcript holds the `start` event.
    let runs = project.state.path().join("runs");
    let started = std::time::Instant::now();
    let begun = || {
        std::fs::read_dir(&runs).ok()?.flatten().find_map(|run| {
            let text = std::fs::read_to_string(run.path().join("t.jsonl")).ok()?;
            text.contains(r#""event":"start""#).then_some(())
        })
    };
    while begun().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_mins(1),
            "the agent did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill has no memory effects; the pid is our own child's.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGINT) };
    let run = Run::from(child.wait_with_output().expect("openmono ends"));
    run.expect_code(130);
    assert!(
        run.stdout.contains("  ✗ task `t` (agent, cancelled after "),
        "{}",
        run.stdout
    );
    assert_eq!(
        final_event(&transcript(&project, &run)),
        ("", 0, EndReason::Interrupted)
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn a_context_overflow_is_compacted_or_ends_the_task_as_context_full() {
    if !docker() {
        return;
    }
    let big = r#"{"tool_calls": [{"id": "c1", "name": "shell", "arguments": {"command": "yes | head -c 5000"}}]}"#;
    // Both forms of llama-server's overflow; the first is cured by eliding the output.
    let project = scenario(
        &format!("{big}\n{{\"overflow\": 400}}\n{{\"content\": \"Done.\"}}\n"),
        "",
    );
    let run = apply(&project, 0);
    let events = transcript(&project, &run);
    let compactions: Vec<(u32, u32, u32)> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Compacted {
                step,
                dropped_turns,
                elided,
                ..
            } => Some((*step, *dropped_turns, *elided)),
            _ => None,
        })
        .collect();
    assert_eq!(compactions, [(2, 0, 1)]);
    assert_eq!(final_event(&events), ("Done.", 2, EndReason::Done));
    let sent = requests(&project, &run);
    assert_eq!(
        last_message(&sent[2]),
        &json!({"role": "tool", "tool_call_id": "c1", "content": "[output elided: 5012 bytes]"})
    );

    // An overflow that no compaction cures ends the task; the same request is never
    // sent twice.
    let project = scenario(
        &format!(
            "{big}\n{{\"overflow\": 500}}\n{{\"overflow\": 400}}\n{{\"overflow\": 500}}\n{{\"content\": \"never\"}}\n"
        ),
        "",
    );
    let run = apply(&project, 1);
    assert_failed(&run, 3, MODEL_FAILED);
    let events = transcript(&project, &run);
    assert_eq!(final_event(&events), ("", 1, EndReason::ContextFull));
    let sizes: Vec<usize> = requests(&project, &run)
        .iter()
        .map(|r| r["messages"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [2, 4, 4, 2]);
}

#[test]
fn a_server_that_dies_mid_reply_fails_the_task_and_teardown_removes_everything() {
    if !docker() {
        return;
    }
    let project = scenario(
        r#"{"tool_calls": [{"id": "s1", "name": "shell", "arguments": {"command": "echo step one"}}]}
{"content": "This reply is never finished.", "chunks": 4, "end": "exit"}
{"content": "never"}
"#,
        "",
    );
    let run = apply(&project, 1);
    assert_failed(&run, 3, MODEL_FAILED);
    let events = transcript(&project, &run);
    assert_eq!(final_event(&events), ("", 1, EndReason::ModelUnreachable));
    assert!(
        events.iter().any(|e| matches!(e, AgentEvent::Error { message } if message.contains("the reply broke off"))),
        "{events:?}"
    );
    let log = std::fs::read_to_string(run_dir(&project, &run).join("m.server.log")).expect("log");
    assert!(
        log.ends_with("replay: the script says the server dies here\n"),
        "{log}"
    );
}

#[test]
fn the_example_replay_playbook_runs() {
    if !docker() {
        return;
    }
    let project = Project::new();
    let playbook = crate::support::root().join("playbooks/replay.kdl");
    let run = project.run(&["apply", playbook.to_str().expect("utf-8 path")]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            "      answer:\n        openmono runs coding agents with local models in a sealed box, declared by a KDL playbook.\n"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("  ✓ task `look` (agent, exit code 0, check exit code 0, "),
        "{}",
        run.stdout
    );
    assert_run_gone(&run.run_id());
}

#[test]
fn an_mcp_server_in_the_box_offers_its_tools_answers_calls_and_is_stopped() {
    if !docker() {
        return;
    }
    let project = scenario(
        r#"{"tool_calls": [{"id": "m1", "name": "loud__shout", "arguments": {"text": "hello box"}}, {"id": "m2", "name": "loud__fail"}]}
{"content": "Shouted."}
"#,
        "    mcp \"loud\" \"bash tools/shout.sh\"\n",
    );
    project.file("tools/shout.sh", include_str!("mcp/shout.sh"));
    let plan = project.run(&["plan"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(
            "\n      mcp server `loud` (its tools as `loud__…`): $ bash tools/shout.sh\n"
        ),
        "{}",
        plan.stdout
    );
    let run = apply(&project, 0);
    let events = transcript(&project, &run);
    assert_eq!(
        events[1],
        AgentEvent::McpServer {
            server: "loud".into(),
            tools: vec!["loud__shout".into(), "loud__fail".into()],
            error: None
        }
    );
    assert_eq!(final_event(&events), ("Shouted.", 2, EndReason::Done));
    let sent = requests(&project, &run);
    assert_eq!(sent.len(), 2);
    let tools = sent[0]["tools"].as_array().expect("tools");
    assert_eq!(
        tools[6..],
        [
            json!({"type": "function", "function": {"name": "loud__shout", "description": "Repeat a text in capitals", "parameters": {"type": "object", "properties": {"text": {"type": "string", "description": "What to shout"}}, "required": ["text"]}}}),
            json!({"type": "function", "function": {"name": "loud__fail", "description": "Always fails", "parameters": {"type": "object", "properties": {}}}}),
        ]
    );
    // The tool's result, and its error, reached the model.
    assert_eq!(
        sent[1]["messages"].as_array().expect("messages")[3..],
        [
            json!({"role": "tool", "tool_call_id": "m1", "content": "HELLO BOX!"}),
            json!({"role": "tool", "tool_call_id": "m2", "content": "error: the fail tool always fails"}),
        ]
    );
    // The server ran in the box, in the workspace, and was stopped by closing its stdin.
    let log = std::fs::read_to_string(project.path().join("mcp.log")).expect("mcp.log");
    let kinds: Vec<&str> = log.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(kinds, ["started", "call", "call", "stopped"], "{log}");
    let shown = project.run(&["runs", "show", &run.run_id()]);
    shown.expect_code(0);
    assert!(
        shown
            .stdout
            .contains("\n  mcp server `loud`: 2 tools: loud__shout, loud__fail\n"),
        "{}",
        shown.stdout
    );
}

#[test]
fn an_mcp_server_that_does_not_start_is_reported_and_the_agent_goes_on() {
    if !docker() {
        return;
    }
    let project = scenario(
        r#"{"tool_calls": [{"id": "m1", "name": "gone__shout", "arguments": {"text": "hi"}}]}
{"content": "No server."}
"#,
        "    mcp \"gone\" \"echo not a server; exit 3\"\n",
    );
    let run = apply(&project, 0);
    let events = transcript(&project, &run);
    let AgentEvent::McpServer {
        server,
        tools,
        error: Some(error),
    } = &events[1]
    else {
        panic!("no failed mcp_server event: {events:?}");
    };
    assert_eq!((server.as_str(), tools.len()), ("gone", 0));
    assert!(error.starts_with("the MCP handshake failed: "), "{error}");
    let sent = requests(&project, &run);
    assert_eq!(sent[0]["tools"].as_array().map(Vec::len), Some(6));
    assert_eq!(
        last_message(&sent[1]),
        &json!({"role": "tool", "tool_call_id": "m1", "content": "error: there is no tool named `gone__shout`; the tools are shell, read_file, write_file, edit_file, list_dir, search_text"})
    );
}
