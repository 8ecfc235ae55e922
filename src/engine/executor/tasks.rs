//! The steps that run tasks inside the box: an agent loop, a shell command, a check.

use super::*;

impl Executor<'_> {
    pub(super) async fn agent_task(
        &self,
        step: &Step,
        bar: &StepProgress<'_>,
    ) -> Result<String, String> {
        let Step::AgentTask {
            check,
            container,
            self_test,
            settings,
            task,
            ..
        } = step
        else {
            unreachable!("called for AgentTask only")
        };
        // From here, as the step's progress line counts: the self-test is the task's time.
        let started = Instant::now();
        let id = self.container(container)?;
        let transcript_path = self.dir.join(format!("{task}.jsonl"));
        let log_path = self.dir.join(format!("{task}.log"));
        let mut log = create_file(&log_path)?;
        if *self_test {
            self.guard((task, container, &id), (&mut log, &log_path), bar)
                .await?;
        }
        // Made once the agent starts: a task stopped by its self-test has none.
        let mut transcript = create_file(&transcript_path)?;
        // The agent ends itself when the task's time is up (what the self-test left of
        // it), with `time_spent` in its transcript; the supervisor kills it a little
        // later only if it did not.
        let left = settings
            .timeout
            .map(|t| t.saturating_sub(started.elapsed()));
        let backstop = left.map(|t| t + AGENT_BACKSTOP);
        let cmd = supervised(backstop, agent_command(step, left));
        let mut answer = None;
        let code = self
            .engine
            .exec(&id, cmd, &env_list(settings), |stream, line| {
                let event = match stream {
                    Stream::Stdout => AgentEvent::parse_line(line),
                    Stream::Stderr => None,
                };
                let Some(event) = event else {
                    bar.output(task, line);
                    let _ = writeln!(log, "{line}");
                    return;
                };
                // The transcript holds events only, one JSON object a line.
                let _ = writeln!(transcript, "{}", event.to_line());
                let said = describe(&event);
                bar.output(task, &said);
                if let AgentEvent::Final { answer: a, .. } = event {
                    answer = Some(a);
                } else {
                    bar.detail(&said);
                }
            })
            .await
            .map_err(|e| error_chain(&e))?;
        // With a `check`, its exit status decides, whatever the agent said.
        let check_result = match check {
            Some(command) if code != i64::from(TIMED_OUT) => {
                Some(self.check(&id, task, command, settings, bar).await?)
            }
            _ => None,
        };
        let ok = match &check_result {
            Some(c) => c.exit_code == 0,
            None => code == 0,
        };
        let check_outcome = check_result
            .as_ref()
            .map(|c| command_outcome(c.exit_code, settings));
        lock(&self.tasks).push(TaskReport {
            answer,
            check: check_result,
            duration: started.elapsed(),
            exit_code: Some(code),
            kind: "agent",
            log: log_path,
            name: task.clone(),
            output_tail: Vec::new(),
            status: if ok {
                TaskStatus::Succeeded
            } else {
                TaskStatus::Failed
            },
            transcript: Some(transcript_path),
        });
        if let Some(outcome) = check_outcome {
            return outcome
                .map(|()| "the check passed".to_owned())
                .map_err(|why| format!("the check failed: {why}"));
        }
        agent_outcome(code, settings)
    }

    pub(super) async fn run_task(
        &self,
        task: &str,
        container: &str,
        command: &str,
        settings: &TaskSettings,
        bar: &StepProgress<'_>,
    ) -> Result<String, String> {
        let id = self.container(container)?;
        let log_path = self.dir.join(format!("{task}.log"));
        let started = Instant::now();
        let (code, tail) = self
            .shell(&id, command, settings, &log_path, (task, bar))
            .await?;
        lock(&self.tasks).push(TaskReport {
            answer: None,
            check: None,
            duration: started.elapsed(),
            exit_code: Some(code),
            kind: "run",
            log: log_path,
            name: task.to_owned(),
            output_tail: tail,
            status: if code == 0 {
                TaskStatus::Succeeded
            } else {
                TaskStatus::Failed
            },
            transcript: None,
        });
        command_outcome(code, settings).map(|()| "exit code 0".to_owned())
    }

    /// An agent task's `check`, run where the agent worked.
    pub(super) async fn check(
        &self,
        id: &str,
        task: &str,
        command: &str,
        settings: &TaskSettings,
        bar: &StepProgress<'_>,
    ) -> Result<CheckReport, String> {
        bar.detail("running the check");
        let log = self.dir.join(format!("{task}.check.log"));
        let name = format!("{task} check");
        let (exit_code, output_tail) = self
            .shell(id, command, settings, &log, (&name, bar))
            .await?;
        Ok(CheckReport {
            exit_code,
            log,
            output_tail,
        })
    }

    /// Runs `command` with `/bin/sh -c` in a container, under `supervise` (for the task's
    /// timeout), its output in `log_path` and, with `--follow`, shown as `name`'s;
    /// returns the exit code and the last lines.
    pub(super) async fn shell(
        &self,
        id: &str,
        command: &str,
        settings: &TaskSettings,
        log_path: &Path,
        (name, bar): (&str, &StepProgress<'_>),
    ) -> Result<(i64, Vec<String>), String> {
        const TAIL: usize = 20;
        let mut log = create_file(log_path)?;
        let mut tail: Vec<String> = Vec::new();
        // The engine keeps stdout and stderr apart and cannot say which line came first;
        // one stream keeps the output in the order it was written.
        let cmd = supervised(
            settings.timeout,
            vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!("exec 2>&1\n{command}"),
            ],
        );
        let code = self
            .engine
            .exec(id, cmd, &env_list(settings), |_, line| {
                let _ = writeln!(log, "{line}");
                bar.output(name, line);
                if tail.len() == TAIL {
                    tail.remove(0);
                }
                tail.push(line.to_owned());
            })
            .await
            .map_err(|e| error_chain(&e))?;
        Ok((code, tail))
    }
}

/// `openmono agent` for an agent task. The check goes with it when it has retries: the
/// agent then runs it after each round that a failure can follow with another. The
/// check that decides the task is still the host's, after the agent.
fn agent_command(step: &Step, timeout: Option<Duration>) -> Vec<String> {
    let Step::AgentTask {
        check,
        max_steps,
        max_tokens,
        mcp,
        model_url,
        prompt,
        retries,
        served_model,
        settings,
        ..
    } = step
    else {
        unreachable!("called for AgentTask only")
    };
    let mut cmd = [
        SELF_PATH,
        "agent",
        "--model-url",
        model_url,
        "--model",
        served_model,
        "--prompt",
        prompt,
        "--max-steps",
        &max_steps.to_string(),
        "--max-tokens",
        &max_tokens.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    for (name, command) in mcp {
        cmd.extend(["--mcp".to_owned(), format!("{name}={command}")]);
    }
    if let Some(timeout) = timeout {
        cmd.extend(["--timeout-ms".to_owned(), timeout.as_millis().to_string()]);
    }
    let Some(check) = check.as_ref().filter(|_| *retries > 0) else {
        return cmd;
    };
    cmd.extend([
        "--check".to_owned(),
        check.clone(),
        "--check-retries".to_owned(),
        retries.to_string(),
    ]);
    if let Some(timeout) = settings.timeout {
        cmd.extend(["--check-timeout".to_owned(), timeout.as_secs().to_string()]);
    }
    cmd
}

/// What the agent's exit code means for its task.
pub(super) fn agent_outcome(code: i64, settings: &TaskSettings) -> Result<String, String> {
    match code {
        0 => Ok("answered".into()),
        c if c == i64::from(TIMED_OUT) => Err(format!(
            "its time ran out after {}s: the agent stopped (`time_spent` in the transcript)",
            settings.timeout.unwrap_or_default().as_secs()
        )),
        2 => Err("the agent used up its steps (exit code 2)".into()),
        3 => Err(
            "the model could not be reached or answered with an error (exit code 3); see the transcript"
                .into(),
        ),
        126 | 127 => Err(format!(
            "the openmono binary in the container could not run (exit code {code}); something in the box removed or broke {SELF_PATH}"
        )),
        _ => Err(format!("the agent ended with exit code {code}")),
    }
}

/// What a shell command's exit code means for its task.
pub(super) fn command_outcome(code: i64, settings: &TaskSettings) -> Result<(), String> {
    match code {
        0 => Ok(()),
        126 => Err("the command could not be started (exit code 126)".into()),
        c if c == i64::from(TIMED_OUT) && settings.timeout.is_some() => Err(timed_out(settings)),
        127 => Err("command not found (exit code 127)".into()),
        _ => Err(format!("the command exited with code {code}")),
    }
}

/// How long after the task's time the supervisor kills an agent that did not end itself.
const AGENT_BACKSTOP: Duration = Duration::from_secs(10);

/// `argv` under `openmono supervise`, which enforces a task's `timeout` inside the box.
pub(super) fn supervised(timeout: Option<Duration>, argv: Vec<String>) -> Vec<String> {
    let mut cmd = vec![SELF_PATH.to_owned(), "supervise".to_owned()];
    if let Some(timeout) = timeout {
        cmd.extend(["--timeout-ms".to_owned(), timeout.as_millis().to_string()]);
    }
    cmd.push("--".to_owned());
    cmd.extend(argv);
    cmd
}

pub(super) fn env_list(settings: &TaskSettings) -> Vec<String> {
    settings
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

pub(super) fn timed_out(settings: &TaskSettings) -> String {
    let secs = settings.timeout.unwrap_or_default().as_secs();
    format!("timed out after {secs}s; its processes were killed")
}

/// One line for the progress display of an agent event.
pub(super) fn describe(event: &AgentEvent) -> String {
    match event {
        AgentEvent::Start { model, .. } => format!("asking {model}"),
        AgentEvent::ModelTurn {
            step, tool_calls, ..
        } => {
            format!("step {step}: the model answered ({tool_calls} tool calls)")
        }
        AgentEvent::ToolCall {
            step,
            name,
            arguments,
            ..
        } => {
            let args: String = arguments.chars().take(60).collect();
            format!("step {step}: {name} {args}")
        }
        AgentEvent::ToolResult {
            step, exit_code, ..
        } => match exit_code {
            Some(code) => format!("step {step}: exit code {code}"),
            None => format!("step {step}: done"),
        },
        AgentEvent::Check {
            round, exit_code, ..
        } => match exit_code {
            Some(0) => format!("check after round {round}: passed"),
            Some(code) => format!(
                "check after round {round}: exit code {code}; its output goes back to the model"
            ),
            None => format!(
                "check after round {round}: did not finish; its output goes back to the model"
            ),
        },
        AgentEvent::McpServer {
            server,
            tools,
            error,
        } => match error {
            None => format!("mcp server `{server}`: {} tools", tools.len()),
            Some(error) => format!("mcp server `{server}` did not start: {error}"),
        },
        AgentEvent::Final { .. } => "done".into(),
        AgentEvent::Error { message } => format!("error: {message}"),
        AgentEvent::Compacted {
            step,
            bytes_before,
            bytes_after,
            ..
        } => format!(
            "step {step}: compacted the conversation ({bytes_before} → {bytes_after} bytes)"
        ),
        AgentEvent::TextTools { step, .. } => format!("step {step}: tools called in text"),
    }
}
