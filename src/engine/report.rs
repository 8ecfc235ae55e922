//! What a run did, for the summary printed at its end.

use std::{fmt, path::PathBuf, time::Duration};

/// The outcome of a whole run.
#[derive(Debug, Default)]
pub struct Report {
    /// The folder with the run's logs and transcripts.
    pub dir: PathBuf,
    pub elapsed: Duration,
    /// Why the run stopped early, if it did.
    pub failure: Option<String>,
    pub interrupted: bool,
    /// Engine objects that teardown could not remove (should be empty).
    pub leftovers: Vec<String>,
    /// Why teardown could not remove something.
    pub teardown_errors: Vec<String>,
    pub removed_containers: usize,
    pub removed_networks: usize,
    pub removed_volumes: usize,
    pub run_id: String,
    pub tasks: Vec<TaskReport>,
    /// What came back of each workspace that travelled to an engine elsewhere.
    pub workspace: Vec<String>,
}

/// One task's outcome.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// The agent's final answer.
    pub answer: Option<String>,
    /// An agent task's `check`, when it has one and it ran.
    pub check: Option<CheckReport>,
    pub duration: Duration,
    pub exit_code: Option<i64>,
    pub kind: &'static str,
    /// The task's output log.
    pub log: PathBuf,
    pub name: String,
    /// The last lines of a `run` task's output, or of a cancelled task's log.
    pub output_tail: Vec<String>,
    pub status: TaskStatus,
    /// The agent's events, one JSON object per line.
    pub transcript: Option<PathBuf>,
}

/// How an agent task's `check` ended.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub exit_code: i64,
    pub log: PathBuf,
    pub output_tail: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Started, then stopped by a signal or by another task's failure.
    Cancelled,
    Failed,
    /// An earlier failure or an interrupt stopped the run before it started.
    NotRun,
    Succeeded,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none() && !self.interrupted && self.leftovers.is_empty()
    }
}

impl Report {
    /// The run's outcome in a few words.
    pub fn outcome(&self) -> &'static str {
        if self.interrupted {
            "interrupted"
        } else if self.failure.is_some() {
            "failed"
        } else if !self.leftovers.is_empty() {
            "failed to tear down"
        } else if self.tasks.iter().any(|t| t.status == TaskStatus::Failed) {
            // Only tasks that may fail (`continue-on-error`) fail in a run that goes on.
            "succeeded, with failed tasks that continue on error"
        } else {
            "succeeded"
        }
    }

    /// The report as the `run-finished` event of `--output json`.
    pub fn to_json(&self) -> serde_json::Value {
        let path = |p: &PathBuf| p.display().to_string();
        let tasks: Vec<serde_json::Value> = self
            .tasks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name,
                    "kind": t.kind,
                    "status": match t.status {
                        TaskStatus::Succeeded => "succeeded",
                        TaskStatus::Failed => "failed",
                        TaskStatus::NotRun => "not-run",
                        TaskStatus::Cancelled => "cancelled",
                    },
                    "exit_code": t.exit_code,
                    "seconds": t.duration.as_secs_f64(),
                    "answer": t.answer,
                    "output_tail": t.output_tail,
                    "log": path(&t.log),
                    "transcript": t.transcript.as_ref().map(path),
                    "check": t.check.as_ref().map(|c| serde_json::json!({
                        "exit_code": c.exit_code,
                        "output_tail": c.output_tail,
                        "log": path(&c.log),
                    })),
                })
            })
            .collect();
        serde_json::json!({
            "event": "run-finished",
            "run_id": self.run_id,
            "outcome": self.outcome(),
            "succeeded": self.succeeded(),
            "failure": self.failure,
            "seconds": self.elapsed.as_secs_f64(),
            "tasks": tasks,
            "removed": {
                "containers": self.removed_containers,
                "networks": self.removed_networks,
                "volumes": self.removed_volumes,
            },
            "leftovers": self.leftovers,
            "teardown_errors": self.teardown_errors,
            "workspace": self.workspace,
            "dir": path(&self.dir),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = self.outcome();
        writeln!(
            f,
            "Run {} {outcome} in {:.1}s",
            self.run_id,
            self.elapsed.as_secs_f64()
        )?;
        for task in &self.tasks {
            let mark = match task.status {
                TaskStatus::Succeeded => "✓",
                TaskStatus::Failed | TaskStatus::Cancelled => "✗",
                TaskStatus::NotRun => {
                    writeln!(f, "  - task `{}` ({}): not run", task.name, task.kind)?;
                    continue;
                }
            };
            write!(f, "  {mark} task `{}` ({}", task.name, task.kind)?;
            if let Some(code) = task.exit_code {
                write!(f, ", exit code {code}")?;
            }
            if let Some(check) = &task.check {
                write!(f, ", check exit code {}", check.exit_code)?;
            }
            let cancelled = if task.status == TaskStatus::Cancelled {
                "cancelled after "
            } else {
                ""
            };
            writeln!(f, ", {cancelled}{:.1}s)", task.duration.as_secs_f64())?;
            if let Some(answer) = &task.answer {
                let answer = answer.trim();
                if answer.is_empty() {
                    writeln!(f, "      answer: (empty)")?;
                } else {
                    writeln!(f, "      answer:")?;
                    for line in answer.lines().take(20) {
                        writeln!(f, "        {}", printable(line))?;
                    }
                }
            }
            if !task.output_tail.is_empty() {
                let n = task.output_tail.len();
                let lines = if n == 1 { "line" } else { "lines" };
                writeln!(f, "      output (last {n} {lines}):")?;
                for line in &task.output_tail {
                    writeln!(f, "        {}", printable(line))?;
                }
            }
            if let Some(check) = &task.check {
                writeln!(f, "      check: exit code {}", check.exit_code)?;
                for line in &check.output_tail {
                    writeln!(f, "        {}", printable(line))?;
                }
                writeln!(f, "      check log: {}", check.log.display())?;
            }
            if let Some(t) = &task.transcript {
                writeln!(f, "      transcript: {}", t.display())?;
            }
            writeln!(f, "      log: {}", task.log.display())?;
        }
        if let Some(failure) = &self.failure {
            // Failures quote logs from inside the box, several lines of them.
            for (i, line) in failure.lines().enumerate() {
                let lead = if i == 0 { "  failure: " } else { "  " };
                writeln!(f, "{lead}{}", printable(line))?;
            }
        }
        for line in &self.workspace {
            writeln!(f, "{}", printable(line))?;
        }
        if self.removed_volumes == 0 {
            writeln!(
                f,
                "Teardown removed {} container(s) and {} network(s).",
                self.removed_containers, self.removed_networks
            )?;
        } else {
            writeln!(
                f,
                "Teardown removed {} container(s), {} network(s) and {} volume(s).",
                self.removed_containers, self.removed_networks, self.removed_volumes
            )?;
        }
        if !self.leftovers.is_empty() {
            writeln!(
                f,
                "Left behind; remove by hand (`docker rm -f NAME`, `docker network rm NAME`, `docker volume rm NAME`, `docker service rm NAME`): {}",
                self.leftovers.join(", ")
            )?;
            for error in &self.teardown_errors {
                writeln!(f, "  {}", printable(error))?;
            }
        }
        write!(f, "Logs: {}", self.dir.display())
    }
}

/// Longest line of task output a report shows; the log has it whole.
const LINE_LIMIT: usize = 500;

/// Text from inside the box, made safe to print on the user's terminal: control
/// characters (escape sequences could rewrite the screen or the window title) are shown
/// as `\u{…}` escapes, and a very long line is cut.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LINE_LIMIT + 8));
    for (i, c) in text.chars().enumerate() {
        if i == LINE_LIMIT {
            out.push_str(" […]");
            break;
        }
        if c.is_control() && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        assert_eq!(
            printable("\u{1b}]0;PWNED\u{7}red\tok"),
            "\\u{1b}]0;PWNED\\u{7}red\tok"
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let line = "x".repeat(10_000);
        assert_eq!(printable(&line).chars().count(), LINE_LIMIT + 4);
    }
}
