//! `openmono runs` and `openmono runs show ID`: past runs, from their folders under the
//! state directory (`report.txt`, transcripts, logs), newest first.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::{agent::AgentEvent, engine::report::printable};

/// One line per run: its id, how long ago it started, and its report's first line.
pub fn list(state: &Path) -> String {
    let mut runs = run_dirs(state);
    runs.sort_by_key(|(_, modified)| std::cmp::Reverse(*modified));
    if runs.is_empty() {
        return format!("no runs in {}\n", state.join("runs").display());
    }
    let mut out = String::new();
    for (dir, modified) in runs {
        let id = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let headline = std::fs::read_to_string(dir.join("report.txt"))
            .ok()
            .and_then(|r| r.lines().next().map(str::to_owned))
            .unwrap_or_else(|| no_report(&dir));
        let _ = writeln!(out, "{id}  {:>9}  {}", ago(modified), printable(&headline));
    }
    out
}

/// A run's report and, for each agent task, its transcript in plain words.
pub fn show(state: &Path, id: &str) -> Result<String, String> {
    let dir = run_dir(state, id)?;
    let mut out = std::fs::read_to_string(dir.join("report.txt"))
        .unwrap_or_else(|_| format!("{}\n", no_report(&dir)));
    let mut transcripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    transcripts.sort();
    for path in transcripts {
        let task = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let _ = writeln!(out, "\nTranscript of agent task `{task}`:");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for event in text.lines().filter_map(AgentEvent::parse_line) {
            let _ = writeln!(out, "{}", event_text(&event));
        }
    }
    Ok(out)
}

/// The folder of run `id` under the state directory `state`; an error says why not.
pub fn run_dir(state: &Path, id: &str) -> Result<PathBuf, String> {
    // An id is a folder name under runs/, nothing else.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("`{id}` is not a run id"));
    }
    let dir = state.join("runs").join(id);
    if !dir.is_dir() {
        return Err(format!("no run `{id}` in {}", state.join("runs").display()));
    }
    Ok(dir)
}

/// Whether the openmono of the run in `dir` still runs, as its `owner` file says.
pub fn under_way(dir: &Path) -> bool {
    owner(dir).is_some_and(|(pid, start)| crate::engine::gc::owner_alive(&pid, Some(&start)))
}

/// The pid and start time the `owner` file of the run in `dir` holds.
fn owner(dir: &Path) -> Option<(String, String)> {
    let owner = std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
    let mut fields = owner.split_whitespace().map(str::to_owned);
    Some((fields.next()?, fields.next()?))
}

/// Why a run has no report: its openmono still runs, or it is gone (killed, or the
/// machine stopped), as the `owner` file that `apply` writes says (pid and start time).
fn no_report(dir: &Path) -> String {
    match owner(dir) {
        None => "(no report: still running, or killed)".to_owned(),
        Some((pid, start)) if crate::engine::gc::owner_alive(&pid, Some(&start)) => {
            format!("(no report yet: still running, pid {pid})")
        }
        // A workspace that travelled and did not come back is fetched first: gc keeps
        // its volume, and would remove the boxes that still hold it.
        Some(_) if !crate::engine::Travelled::pending(dir).is_empty() => {
            let id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            format!("(no report: its openmono was killed or the machine stopped; `openmono runs fetch {id}` brings its workspace back, then `openmono gc` removes what it left)")
        }
        Some(_) => "(no report: its openmono was killed or the machine stopped; `openmono gc` removes what it left)".to_owned(),
    }
}

/// The file in a run's folder that names its openmono: `PID START`, the process's
/// start time as `/proc/PID/stat` gives it.
pub const OWNER_FILE: &str = "owner";

/// `lead` before the first line of `text` and its width of blanks before the others.
fn block(lead: &str, text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let prefix = if i == 0 {
            lead.to_owned()
        } else {
            " ".repeat(lead.chars().count())
        };
        let _ = writeln!(out, "{prefix}{}", printable(line));
    }
    if out.is_empty() {
        // An event without text (an empty answer) still shows its lead.
        return lead.trim_end().trim_end_matches(':').to_owned();
    }
    out.trim_end().to_owned()
}

/// How the `final` event begins: the steps, and the reason as the transcript and the
/// book spell it (`done`, `time_spent`, …).
fn final_lead(steps: u32, reason: crate::agent::EndReason) -> String {
    let reason = serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let steps = match steps {
        1 => "1 step".to_owned(),
        n => format!("{n} steps"),
    };
    format!("  final after {steps} ({reason}): ")
}

/// An event as a person reads it; text from the box is made safe for a terminal.
fn event_text(event: &AgentEvent) -> String {
    match event {
        AgentEvent::Start {
            model,
            model_url,
            max_steps,
        } => {
            format!("  start: model `{model}` at {model_url}, at most {max_steps} steps")
        }
        AgentEvent::ModelTurn {
            step,
            content,
            tool_calls,
            ..
        } => {
            let text = content.as_deref().unwrap_or("");
            block(
                &format!("  [{step}] model ({tool_calls} tool calls): "),
                text,
            )
        }
        AgentEvent::ToolCall {
            step,
            name,
            arguments,
            ..
        } => block(&format!("  [{step}] {name} "), arguments),
        AgentEvent::ToolResult {
            step,
            output,
            truncated,
            ..
        } => {
            let cut = if *truncated { " (cut)" } else { "" };
            block(&format!("  [{step}] result{cut}: "), output)
        }
        AgentEvent::Check {
            round,
            step,
            output,
            truncated,
            ..
        } => {
            let cut = if *truncated { " (cut)" } else { "" };
            block(
                &format!("  [{step}] check after round {round}{cut}: "),
                output,
            )
        }
        AgentEvent::McpServer {
            server,
            tools,
            error,
        } => match error {
            None => format!(
                "  mcp server `{server}`: {} tools: {}",
                tools.len(),
                tools.join(", ")
            ),
            Some(error) => block(&format!("  mcp server `{server}` did not start: "), error),
        },
        AgentEvent::Final {
            answer,
            steps,
            reason,
        } => block(&final_lead(*steps, *reason), answer),
        AgentEvent::Error { message } => block("  error: ", message),
        AgentEvent::Compacted {
            step,
            reason,
            dropped_turns,
            elided,
            bytes_before,
            bytes_after,
        } => block(
            &format!(
                "  [{step}] compacted ({dropped_turns} turns dropped, {elided} texts elided, \
                 {bytes_before} → {bytes_after} bytes): "
            ),
            reason,
        ),
        AgentEvent::TextTools { step, reason } => block(
            &format!("  [{step}] tools called in text from now on: "),
            reason,
        ),
    }
}

fn run_dirs(state: &Path) -> Vec<(PathBuf, SystemTime)> {
    std::fs::read_dir(state.join("runs"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
        .collect()
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`.
fn ago(time: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(time)
        .map_or(0, |d| d.as_secs());
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::EndReason;

    #[test]
    fn lists_runs_and_shows_one_with_its_transcript_in_words() {
        let state = tempfile::tempdir().expect("temp dir");
        let dir = state.path().join("runs/abc123");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("report.txt"), "Run abc123 succeeded in 1.0s\n").expect("write");
        let events = [
            AgentEvent::ToolCall {
                step: 1,
                id: "c1".into(),
                name: "shell".into(),
                arguments: r#"{"command":"ls"}"#.into(),
            },
            AgentEvent::ToolResult {
                step: 1,
                id: "c1".into(),
                exit_code: Some(0),
                output: "exit code 0\nREADME.md\n\u{1b}[2J".into(),
                truncated: false,
            },
            AgentEvent::Check {
                round: 1,
                step: 2,
                exit_code: Some(1),
                output: "exit code 1\nFAIL: greeting".into(),
                truncated: true,
            },
            AgentEvent::Final {
                answer: "done".into(),
                steps: 2,
                reason: EndReason::Done,
            },
        ];
        let transcript: String = events.iter().map(|e| e.to_line() + "\n").collect();
        std::fs::write(dir.join("fix.jsonl"), transcript).expect("write");

        let listed = list(state.path());
        assert!(listed.starts_with("abc123  "), "{listed}");
        assert!(
            listed.ends_with("Run abc123 succeeded in 1.0s\n"),
            "{listed}"
        );

        let shown = show(state.path(), "abc123").expect("shown");
        assert_eq!(
            shown,
            "Run abc123 succeeded in 1.0s\n\nTranscript of agent task `fix`:\n  [1] shell {\"command\":\"ls\"}\n  [1] result: exit code 0\n              README.md\n              \\u{1b}[2J\n  [2] check after round 1 (cut): exit code 1\n                                 FAIL: greeting\n  final after 2 steps (done): done\n"
        );
        assert!(show(state.path(), "../x").is_err());
        assert!(show(state.path(), "nope").is_err());
    }

    #[test]
    fn a_run_without_a_report_is_told_running_or_gone_by_its_owner() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid = std::process::id();
        let start = crate::engine::gc::process_start(pid).expect("own start");
        std::fs::write(dir.path().join(OWNER_FILE), format!("{pid} {start}\n")).expect("write");
        assert_eq!(
            no_report(dir.path()),
            format!("(no report yet: still running, pid {pid})")
        );
        // The same pid with another start time: a process that came after.
        std::fs::write(dir.path().join(OWNER_FILE), format!("{pid} 1\n")).expect("write");
        assert!(no_report(dir.path()).starts_with("(no report: its openmono was killed"));
        // A workspace that has not come back: `runs fetch` first.
        let record = serde_json::json!({
            "container": "box",
            "dir": "/nowhere",
            "image": "openmono/agent:latest",
            "protected": [],
            "read_only": false,
            "sent": {},
            "volume": "openmono-x-box.workspace",
        });
        std::fs::write(dir.path().join("workspace-box.json"), record.to_string()).expect("write");
        let id = dir.path().file_name().expect("name").to_string_lossy();
        assert_eq!(
            no_report(dir.path()),
            format!(
                "(no report: its openmono was killed or the machine stopped; `openmono runs fetch {id}` brings its workspace back, then `openmono gc` removes what it left)"
            )
        );
        std::fs::remove_file(dir.path().join("workspace-box.json")).expect("remove");
        std::fs::remove_file(dir.path().join(OWNER_FILE)).expect("remove");
        assert_eq!(
            no_report(dir.path()),
            "(no report: still running, or killed)"
        );
    }

    #[test]
    fn an_agent_stopped_without_an_answer_still_shows_how_it_ended() {
        let end = AgentEvent::Final {
            answer: String::new(),
            steps: 1,
            reason: EndReason::Interrupted,
        };
        assert_eq!(event_text(&end), "  final after 1 step (interrupted)");
    }
}
