//! Runs a [`Plan`] on a Docker engine, one step after another, then tears down every
//! object the run created: on success, on failure and on Ctrl-C or SIGTERM. Objects are
//! named from the run id and labelled with it, so that teardown can also sweep what a
//! cancelled step created but did not get to record.

use std::{
    collections::HashMap,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use futures_util::FutureExt;

use crate::{
    agent::event::AgentEvent,
    agent::supervise::TIMED_OUT,
    plan::Plan,
    playbook::{Health, HealthProbe},
    step::{MODEL_MOUNT, MODEL_PORT, Step, TaskSettings, WORKSPACE},
};

use super::{
    BindMount, CheckReport, ContainerSpec, Engine, EngineError, HealthVerdict, Liveness, Progress,
    Report, Stream, TaskReport, TaskStatus, run_dir,
};

/// Where the copied openmono binary lives inside task containers.
pub const SELF_PATH: &str = "/.openmono/openmono";
/// The label every object of a run carries, with the run id as its value.
pub const RUN_LABEL: &str = "dev.openmono.run";

/// Settings of one `apply`.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How long a model may take to answer `/health` with 200.
    pub model_timeout: Duration,
    /// The run's id, from [`run_dir::new_run_id`]; templates may have used it.
    pub run_id: String,
}

/// An object the run created, in creation order.
enum Created {
    /// A volume of the run (kept volumes are not recorded: they outlive it).
    Volume {
        name: String,
    },
    /// `log`: where to keep the container's output when it is removed.
    Container {
        id: String,
        log: Option<PathBuf>,
    },
    Network {
        id: String,
    },
}

/// Why the steps stopped before the end.
enum Stop {
    Failed(String),
    Interrupted,
}

struct Executor<'a> {
    created: Vec<Created>,
    /// Engine ids of containers and names of networks, by playbook name.
    containers: HashMap<String, String>,
    dir: PathBuf,
    engine: Engine,
    networks: HashMap<String, String>,
    /// Engine names of volumes, by playbook name.
    volumes: HashMap<String, String>,
    options: &'a ApplyOptions,
    plan: &'a Plan,
    progress: Progress,
    run_id: String,
    /// The openmono binary, read once, copied into every task container.
    self_binary: Vec<u8>,
    tasks: Vec<TaskReport>,
}

/// Applies `plan`: connects, checks images, runs the steps, tears down, and reports.
pub async fn apply(plan: &Plan, options: &ApplyOptions) -> Result<Report, EngineError> {
    let engine = Engine::connect().await?;
    let mut missing: Vec<String> = Vec::new();
    let built: Vec<&String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::BuildImage { reference, .. } => Some(reference),
            _ => None,
        })
        .collect();
    for step in &plan.steps {
        if let Step::StartContainer { image, .. } | Step::StartModel { image, .. } = step
            && !built.contains(&image)
            && !missing.contains(image)
            && !engine.image_exists(image).await?
        {
            missing.push(image.clone());
        }
    }
    if !missing.is_empty() {
        return Err(EngineError::ImageMissing {
            image: missing.join("`, `"),
        });
    }
    let self_binary = std::env::current_exe()
        .and_then(std::fs::read)
        .map_err(|source| EngineError::SelfBinary { source })?;
    let run_id = options.run_id.clone();
    let dir = run_dir::state_dir().join("runs").join(&run_id);
    std::fs::create_dir_all(&dir).map_err(|source| EngineError::RunDir {
        path: dir.display().to_string(),
        source,
    })?;
    let mut executor = Executor {
        created: Vec::new(),
        containers: HashMap::new(),
        dir,
        engine,
        networks: HashMap::new(),
        volumes: HashMap::new(),
        options,
        plan,
        progress: Progress::new(),
        run_id,
        self_binary,
        tasks: Vec::new(),
    };
    Ok(executor.run().await)
}

impl Executor<'_> {
    async fn run(&mut self) -> Report {
        self.progress.line(&format!(
            "Run {} of playbook `{}`; logs in {}",
            self.run_id,
            self.plan.playbook,
            self.dir.display()
        ));
        let (interrupt, interrupted) = tokio::sync::watch::channel(false);
        let listener = tokio::spawn(async move {
            shutdown_signal().await;
            let _ = interrupt.send(true);
        });
        // A panic in a step must still end in teardown.
        let stop = match std::panic::AssertUnwindSafe(self.steps(interrupted))
            .catch_unwind()
            .await
        {
            Ok(result) => result.err(),
            Err(panic) => Some(Stop::Failed(format!(
                "internal error: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic")
            ))),
        };
        listener.abort();
        if let Some(Stop::Interrupted) = &stop {
            self.progress
                .finish_step("interrupted", false, "tearing down");
        }
        let mut report = self.teardown().await;
        report.tasks = std::mem::take(&mut self.tasks);
        match stop {
            Some(Stop::Failed(why)) => report.failure = Some(why),
            Some(Stop::Interrupted) => report.interrupted = true,
            None => {}
        }
        report.elapsed = self.progress.elapsed();
        // The summary stays with the logs; the run goes on even if it cannot be written.
        if let Err(e) = std::fs::write(self.dir.join("report.txt"), format!("{report}\n")) {
            self.progress
                .line(&format!("cannot write the run's report: {e}"));
        }
        report
    }

    /// Runs the steps in order until one fails or an interrupt comes. Steps that create
    /// something run to their end (a second or two), so that nothing is created behind
    /// teardown's back; steps that wait (models, tasks) stop at once.
    async fn steps(
        &mut self,
        mut interrupted: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        for (i, step) in self.plan.steps.iter().enumerate() {
            if *interrupted.borrow() {
                self.skipped(i);
                return Err(Stop::Interrupted);
            }
            let label = step.label();
            self.progress.start_step(&label);
            let result = if matches!(
                step,
                Step::WaitModel { .. } | Step::AgentTask { .. } | Step::RunTask { .. }
            ) {
                tokio::select! {
                    result = self.step(step) => result,
                    _ = interrupted.wait_for(|i| *i) => {
                        self.progress.finish_step(&label, false, "interrupted");
                        self.skipped(i);
                        return Err(Stop::Interrupted);
                    }
                }
            } else {
                self.step(step).await
            };
            match result {
                Ok(note) => self.progress.finish_step(&label, true, &note),
                Err(why) if step.continues_on_error() => {
                    self.progress.finish_step(
                        &label,
                        false,
                        &format!("{why}; the run goes on (continue-on-error)"),
                    );
                }
                Err(why) => {
                    self.progress.finish_step(&label, false, "failed");
                    self.skipped(i + 1);
                    return Err(Stop::Failed(format!("{label}: {why}")));
                }
            }
        }
        Ok(())
    }

    /// Reports the tasks from step `from` on that did not run or did not finish.
    fn skipped(&mut self, from: usize) {
        for step in &self.plan.steps[from..] {
            let (Step::AgentTask { task, .. } | Step::RunTask { task, .. }) = step else {
                continue;
            };
            if self.tasks.iter().any(|t| t.name == *task) {
                continue;
            }
            self.tasks.push(TaskReport {
                answer: None,
                check: None,
                duration: Duration::ZERO,
                exit_code: None,
                kind: if matches!(step, Step::AgentTask { .. }) {
                    "agent"
                } else {
                    "run"
                },
                log: self.dir.join(format!("{task}.log")),
                name: task.clone(),
                output_tail: Vec::new(),
                status: TaskStatus::NotRun,
                transcript: None,
            });
        }
    }

    /// Runs one step; `Ok` carries a short note for the progress line.
    async fn step(&mut self, step: &Step) -> Result<String, String> {
        match step {
            Step::CreateNetwork { egress, name } => self.create_network(name, *egress).await,
            Step::CreateVolume { keep, name } => self.create_volume(name, *keep).await,
            Step::BuildImage {
                args,
                context,
                dockerfile,
                reference,
            } => self.build_image(reference, context, dockerfile, args).await,
            Step::StartModel { .. } => self.start_model(step).await,
            Step::StartContainer { .. } => self.start_container(step).await,
            Step::WaitModel { from, model, url } => self.wait_model(from, model, url).await,
            Step::AgentTask { .. } => self.agent_task(step).await,
            Step::RunTask {
                command,
                container,
                settings,
                task,
            } => self.run_task(task, container, command, settings).await,
        }
    }

    fn engine_name(&self, name: &str) -> String {
        format!("openmono-{}-{name}", self.run_id)
    }

    fn labels(&self, resource: &str) -> HashMap<String, String> {
        HashMap::from([
            (RUN_LABEL.to_owned(), self.run_id.clone()),
            (
                "dev.openmono.playbook".to_owned(),
                self.plan.playbook.clone(),
            ),
            ("dev.openmono.resource".to_owned(), resource.to_owned()),
            (
                "dev.openmono.owner-pid".to_owned(),
                std::process::id().to_string(),
            ),
        ])
    }

    /// Builds an image the engine lacks; one it has is left alone (no rebuild).
    async fn build_image(
        &self,
        reference: &str,
        context: &Path,
        dockerfile: &str,
        args: &[(String, String)],
    ) -> Result<String, String> {
        if self
            .engine
            .image_exists(reference)
            .await
            .map_err(|e| error_chain(&e))?
        {
            return Ok("on the engine already".into());
        }
        let archive = context_archive(context)
            .map_err(|e| format!("cannot pack the build context {}: {e}", context.display()))?;
        let log_path = self
            .dir
            .join(format!("image-{}.log", reference.replace(['/', ':'], "-")));
        let mut log = create_file(&log_path)?;
        let mut tail: Vec<String> = Vec::new();
        let labels = HashMap::from([(
            "dev.openmono.built-by".to_owned(),
            self.plan.playbook.clone(),
        )]);
        let progress = &self.progress;
        let built = self
            .engine
            .build_image(reference, dockerfile, args, labels, archive, |line| {
                let _ = writeln!(log, "{line}");
                progress.detail(line);
                if tail.len() == 15 {
                    tail.remove(0);
                }
                tail.push(line.to_owned());
            })
            .await
            .map_err(|e| error_chain(&e))?;
        match built {
            Ok(()) => Ok("built".into()),
            Err(why) => Err(format!(
                "the build failed: {why}; its last lines:\n{}",
                indent(&tail.join("\n"))
            )),
        }
    }

    async fn create_volume(&mut self, name: &str, keep: bool) -> Result<String, String> {
        let (engine_name, labels) = if keep {
            // Named by the playbook, not the run, so that the next run finds it; without
            // the run's label, so that teardown and gc leave it.
            let playbook: String = self
                .plan
                .playbook
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            (
                format!("openmono-{playbook}-{name}"),
                HashMap::from([
                    ("dev.openmono.keep".to_owned(), self.plan.playbook.clone()),
                    ("dev.openmono.resource".to_owned(), name.to_owned()),
                ]),
            )
        } else {
            (self.engine_name(name), self.labels(name))
        };
        self.engine
            .create_volume(&engine_name, labels)
            .await
            .map_err(|e| error_chain(&e))?;
        if !keep {
            self.created.push(Created::Volume {
                name: engine_name.clone(),
            });
        }
        self.volumes.insert(name.to_owned(), engine_name.clone());
        Ok(engine_name)
    }

    async fn create_network(&mut self, name: &str, egress: bool) -> Result<String, String> {
        let engine_name = self.engine_name(name);
        let id = self
            .engine
            .create_network(&engine_name, self.labels(name), egress)
            .await
            .map_err(|e| error_chain(&e))?;
        self.created.push(Created::Network { id });
        self.networks.insert(name.to_owned(), engine_name.clone());
        Ok(engine_name)
    }

    async fn start_model(&mut self, step: &Step) -> Result<String, String> {
        let Step::StartModel {
            args,
            context,
            gguf,
            image,
            jinja,
            name,
            network,
            ..
        } = step
        else {
            unreachable!("called for StartModel only")
        };
        let mut cmd: Vec<String> = [
            "-m",
            MODEL_MOUNT,
            "--host",
            "0.0.0.0",
            "--port",
            &MODEL_PORT.to_string(),
            "-c",
            &context.to_string(),
            "--alias",
            name,
        ]
        .map(str::to_owned)
        .to_vec();
        if *jinja {
            cmd.push("--jinja".into());
        }
        cmd.extend(args.iter().cloned());
        let mut labels = self.labels(name);
        labels.insert("dev.openmono.kind".to_owned(), "model".to_owned());
        let spec = ContainerSpec {
            cmd,
            image: image.clone(),
            labels,
            mounts: vec![BindMount {
                read_only: true,
                source: gguf.display().to_string(),
                target: MODEL_MOUNT.to_owned(),
                volume: false,
            }],
            name: self.engine_name(name),
            networks: vec![(self.network(network)?, vec![name.clone()])],
            read_only_rootfs: true,
            user: Some("65534:65534".into()),
            ..ContainerSpec::default()
        };
        let id = self.create(name, spec).await?;
        self.engine
            .start_container(&id)
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(String::new())
    }

    async fn start_container(&mut self, step: &Step) -> Result<String, String> {
        let Step::StartContainer {
            env,
            health,
            image,
            limits,
            name,
            networks,
            user,
            volumes,
            workdir,
            workspace,
        } = step
        else {
            unreachable!("called for StartContainer only")
        };
        let mut mounts: Vec<BindMount> = workspace
            .iter()
            .map(|(w, read_only)| BindMount {
                read_only: *read_only,
                source: w.display().to_string(),
                target: WORKSPACE.to_owned(),
                volume: false,
            })
            .collect();
        for (volume, target, read_only) in volumes {
            mounts.push(BindMount {
                read_only: *read_only,
                source: self
                    .volumes
                    .get(volume)
                    .cloned()
                    .ok_or_else(|| format!("volume `{volume}` was not created"))?,
                target: target.clone(),
                volume: true,
            });
        }
        let mut joined = Vec::new();
        for (net, alias) in networks {
            let mut aliases = vec![name.clone()];
            aliases.extend(alias.iter().cloned());
            joined.push((self.network(net)?, aliases));
        }
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let user = user.clone().unwrap_or_else(|| format!("{uid}:{gid}"));
        let archive = self_archive(&self.self_binary, &user)
            .map_err(|e| format!("cannot pack the openmono binary: {e}"))?;
        let mut environment = vec!["HOME=/tmp".to_owned()];
        environment.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        let spec = ContainerSpec {
            cmd: vec!["sandbox-init".into()],
            entrypoint: Some(vec![SELF_PATH.into()]),
            env: environment,
            health: health.as_ref().map(|h| {
                let test = match &h.probe {
                    HealthProbe::Http(url) => {
                        vec![
                            "CMD".to_owned(),
                            SELF_PATH.to_owned(),
                            "probe".to_owned(),
                            url.clone(),
                        ]
                    }
                    HealthProbe::Command(command) => vec!["CMD-SHELL".to_owned(), command.clone()],
                };
                (test, h.interval, h.timeout, h.retries)
            }),
            limits: *limits,
            image: image.clone(),
            labels: self.labels(name),
            mounts,
            name: self.engine_name(name),
            networks: joined,
            user: Some(user),
            working_dir: workdir
                .clone()
                .or_else(|| workspace.as_ref().map(|_| WORKSPACE.to_owned())),
            ..ContainerSpec::default()
        };
        let id = self.create(name, spec).await?;
        self.engine
            .upload(&id, archive)
            .await
            .map_err(|e| error_chain(&e))?;
        self.engine
            .start_container(&id)
            .await
            .map_err(|e| error_chain(&e))?;
        match health {
            Some(health) => self.wait_healthy(&id, health).await,
            None => Ok(String::new()),
        }
    }

    /// Waits for the engine's health check to say healthy; an unhealthy verdict or an
    /// exited container fails at once, with what the check or the container said.
    async fn wait_healthy(&self, id: &str, health: &Health) -> Result<String, String> {
        loop {
            let (liveness, verdict, last) =
                self.engine.health(id).await.map_err(|e| error_chain(&e))?;
            if let Liveness::Exited(code) = liveness {
                let tail = self.engine.log_tail(id, 15).await;
                return Err(format!(
                    "the container exited with code {code} before it was healthy; its last lines:\n{}",
                    indent(&tail)
                ));
            }
            match verdict {
                HealthVerdict::Healthy => return Ok("healthy".into()),
                HealthVerdict::Unhealthy => {
                    return Err(format!(
                        "unhealthy after {} failed checks; the last said:\n{}",
                        health.retries,
                        indent(last.trim())
                    ));
                }
                HealthVerdict::Starting => self.progress.detail("waiting until healthy"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn create(&mut self, name: &str, spec: ContainerSpec) -> Result<String, String> {
        // A model server's output is its only account of a load that went wrong.
        let log = spec
            .labels
            .get("dev.openmono.kind")
            .filter(|kind| *kind == "model")
            .map(|_| self.dir.join(format!("{name}.server.log")));
        let id = self
            .engine
            .create_container(spec)
            .await
            .map_err(|e| error_chain(&e))?;
        self.created.push(Created::Container {
            id: id.clone(),
            log,
        });
        self.containers.insert(name.to_owned(), id.clone());
        Ok(id)
    }

    fn network(&self, name: &str) -> Result<String, String> {
        self.networks
            .get(name)
            .cloned()
            .ok_or_else(|| format!("network `{name}` was not created"))
    }

    fn container(&self, name: &str) -> Result<String, String> {
        self.containers
            .get(name)
            .cloned()
            .ok_or_else(|| format!("container `{name}` was not started"))
    }

    /// Asks the model's `/health` from inside `from` until it answers 200; fails at once
    /// when the model's container exits, with its last log lines.
    async fn wait_model(&mut self, from: &str, model: &str, url: &str) -> Result<String, String> {
        let model_id = self.container(model)?;
        let from_id = self.container(from)?;
        // A timeout too large to add is no timeout at all.
        let deadline = Instant::now().checked_add(self.options.model_timeout);
        let health = format!("{url}/health");
        loop {
            if let Liveness::Exited(code) = self
                .engine
                .liveness(&model_id)
                .await
                .map_err(|e| error_chain(&e))?
            {
                let tail = self.engine.log_tail(&model_id, 15).await;
                return Err(format!(
                    "the model server exited with code {code} while loading; its last lines:\n{}",
                    indent(&tail)
                ));
            }
            let cmd = vec![SELF_PATH.to_owned(), "probe".to_owned(), health.clone()];
            let code = self
                .engine
                .exec(&from_id, cmd, &[], |_, _| {})
                .await
                .map_err(|e| error_chain(&e))?;
            match code {
                0 => return Ok(format!("{url} answers")),
                1 => self.progress.detail("loading the model (503)"),
                _ => self.progress.detail("waiting for the server to listen"),
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                let tail = self.engine.log_tail(&model_id, 15).await;
                return Err(format!(
                    "not ready after {}s; the server's last lines:\n{}",
                    self.options.model_timeout.as_secs(),
                    indent(&tail)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn agent_task(&mut self, step: &Step) -> Result<String, String> {
        let Step::AgentTask {
            check,
            container,
            max_steps,
            max_tokens,
            model,
            model_url,
            prompt,
            settings,
            task,
        } = step
        else {
            unreachable!("called for AgentTask only")
        };
        let id = self.container(container)?;
        let transcript_path = self.dir.join(format!("{task}.jsonl"));
        let log_path = self.dir.join(format!("{task}.log"));
        let mut transcript = create_file(&transcript_path)?;
        let mut log = create_file(&log_path)?;
        let cmd = [
            SELF_PATH,
            "agent",
            "--model-url",
            model_url,
            "--model",
            model,
            "--prompt",
            prompt,
            "--max-steps",
            &max_steps.to_string(),
            "--max-tokens",
            &max_tokens.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        let cmd = supervised(settings, cmd);
        let started = Instant::now();
        let mut answer = None;
        let progress = &self.progress;
        let code = self
            .engine
            .exec(&id, cmd, &env_list(settings), |stream, line| match stream {
                Stream::Stdout => match AgentEvent::parse_line(line) {
                    Some(event) => {
                        // The transcript holds events only, one JSON object a line.
                        let _ = writeln!(transcript, "{}", event.to_line());
                        match event {
                            AgentEvent::Final { answer: a, .. } => answer = Some(a),
                            event => progress.detail(&describe(&event)),
                        }
                    }
                    None => {
                        let _ = writeln!(log, "{line}");
                    }
                },
                Stream::Stderr => {
                    let _ = writeln!(log, "{line}");
                }
            })
            .await
            .map_err(|e| error_chain(&e))?;
        // With a `check`, its exit status decides, whatever the agent said.
        let check_result = match check {
            Some(command) if code != i64::from(TIMED_OUT) => {
                Some(self.check(&id, task, command, settings).await?)
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
        self.tasks.push(TaskReport {
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

    async fn run_task(
        &mut self,
        task: &str,
        container: &str,
        command: &str,
        settings: &TaskSettings,
    ) -> Result<String, String> {
        let id = self.container(container)?;
        let log_path = self.dir.join(format!("{task}.log"));
        let started = Instant::now();
        let (code, tail) = self.shell(&id, command, settings, &log_path).await?;
        self.tasks.push(TaskReport {
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
    async fn check(
        &self,
        id: &str,
        task: &str,
        command: &str,
        settings: &TaskSettings,
    ) -> Result<CheckReport, String> {
        self.progress.detail("running the check");
        let log = self.dir.join(format!("{task}.check.log"));
        let (exit_code, output_tail) = self.shell(id, command, settings, &log).await?;
        Ok(CheckReport {
            exit_code,
            log,
            output_tail,
        })
    }

    /// Runs `command` with `/bin/sh -c` in a container, under `supervise` (for the task's
    /// timeout), its output in `log_path`; returns the exit code and the last lines.
    async fn shell(
        &self,
        id: &str,
        command: &str,
        settings: &TaskSettings,
        log_path: &Path,
    ) -> Result<(i64, Vec<String>), String> {
        const TAIL: usize = 20;
        let mut log = create_file(log_path)?;
        let mut tail: Vec<String> = Vec::new();
        // The engine keeps stdout and stderr apart and cannot say which line came first;
        // one stream keeps the output in the order it was written.
        let cmd = supervised(
            settings,
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
                if tail.len() == TAIL {
                    tail.remove(0);
                }
                tail.push(line.to_owned());
            })
            .await
            .map_err(|e| error_chain(&e))?;
        Ok((code, tail))
    }

    /// Removes what the run created, newest first, then sweeps anything else that carries
    /// the run's label (created by a step that was cancelled before it could record it).
    async fn teardown(&mut self) -> Report {
        let mut report = Report {
            dir: self.dir.clone(),
            run_id: self.run_id.clone(),
            ..Report::default()
        };
        let mut errors = Vec::new();
        self.progress.start_step("teardown");
        for created in self.created.drain(..).rev() {
            match created {
                Created::Container { id, log } => {
                    if let Some(path) = log {
                        let text = self.engine.log_tail(&id, 10_000).await;
                        let _ = std::fs::write(path, text);
                    }
                    match self.engine.remove_container(&id).await {
                        Ok(()) => report.removed_containers += 1,
                        Err(e) => errors.push(error_chain(&e)),
                    }
                }
                Created::Volume { name } => match self.engine.remove_volume(&name).await {
                    Ok(()) => report.removed_volumes += 1,
                    Err(e) => errors.push(error_chain(&e)),
                },
                Created::Network { id } => match self.engine.remove_network(&id).await {
                    Ok(()) => report.removed_networks += 1,
                    Err(e) => {
                        let users = self.engine.network_users(&id).await;
                        errors.push(if users.is_empty() {
                            error_chain(&e)
                        } else {
                            format!(
                                "{}; containers still attached: {}",
                                error_chain(&e),
                                users.join(", ")
                            )
                        });
                    }
                },
            }
        }
        if let Ok((containers, networks)) = self.engine.labelled(RUN_LABEL, &self.run_id).await {
            for (id, _) in containers {
                if self.engine.remove_container(&id).await.is_ok() {
                    report.removed_containers += 1;
                }
            }
            for (id, _) in networks {
                if self.engine.remove_network(&id).await.is_ok() {
                    report.removed_networks += 1;
                }
            }
        }
        if let Ok(volumes) = self.engine.labelled_volumes(RUN_LABEL, &self.run_id).await {
            for name in volumes {
                if self.engine.remove_volume(&name).await.is_ok() {
                    report.removed_volumes += 1;
                }
            }
        }
        if let Ok(volumes) = self.engine.labelled_volumes(RUN_LABEL, &self.run_id).await {
            report
                .leftovers
                .extend(volumes.iter().map(|name| format!("volume {name}")));
        }
        match self.engine.labelled(RUN_LABEL, &self.run_id).await {
            Ok((containers, networks)) => {
                report.leftovers.extend(
                    containers
                        .iter()
                        .map(|(_, name)| format!("container {name}")),
                );
                report
                    .leftovers
                    .extend(networks.iter().map(|(_, name)| format!("network {name}")));
            }
            Err(e) => report
                .leftovers
                .push(format!("unknown: {}", error_chain(&e))),
        }
        let ok = report.leftovers.is_empty();
        self.progress
            .finish_step("teardown", ok, &errors.join("; "));
        report
    }
}

/// What the agent's exit code means for its task.
fn agent_outcome(code: i64, settings: &TaskSettings) -> Result<String, String> {
    match code {
        0 => Ok("answered".into()),
        c if c == i64::from(TIMED_OUT) => Err(timed_out(settings)),
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
fn command_outcome(code: i64, settings: &TaskSettings) -> Result<(), String> {
    match code {
        0 => Ok(()),
        126 => Err("the command could not be started (exit code 126)".into()),
        c if c == i64::from(TIMED_OUT) && settings.timeout.is_some() => Err(timed_out(settings)),
        127 => Err("command not found (exit code 127)".into()),
        _ => Err(format!("the command exited with code {code}")),
    }
}

/// A build context folder as a tar archive, for the engine's build.
fn context_archive(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()
}

/// `argv` under `openmono supervise`, which enforces the task's timeout inside the box.
fn supervised(settings: &TaskSettings, argv: Vec<String>) -> Vec<String> {
    let mut cmd = vec![SELF_PATH.to_owned(), "supervise".to_owned()];
    if let Some(timeout) = settings.timeout {
        cmd.extend(["--timeout-ms".to_owned(), timeout.as_millis().to_string()]);
    }
    cmd.push("--".to_owned());
    cmd.extend(argv);
    cmd
}

fn env_list(settings: &TaskSettings) -> Vec<String> {
    settings
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

fn timed_out(settings: &TaskSettings) -> String {
    let secs = settings.timeout.unwrap_or_default().as_secs();
    format!("timed out after {secs}s; its processes were killed")
}

/// The openmono binary as a tar archive holding `.openmono/openmono`, for upload into a
/// container before it starts (a copy, never a mount of the host's file). Both belong
/// to `nobody` and are read-only: tasks run as another user without capabilities, so
/// they cannot replace the binary that later tasks and the agent run as.
fn self_archive(bytes: &[u8], task_user: &str) -> std::io::Result<Vec<u8>> {
    let uid = task_user.split(':').next().unwrap_or_default();
    let owner: u64 = match uid {
        "65534" => 65533,
        // A user known by name only: root owns the binary, and a named user is not root.
        name if !name.is_empty() && name != "root" && name.parse::<u32>().is_err() => 0,
        _ => 65534,
    };
    let mut builder = tar::Builder::new(Vec::with_capacity(bytes.len() + 4096));
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o555);
    dir.set_uid(owner);
    dir.set_gid(owner);
    dir.set_size(0);
    builder.append_data(&mut dir, ".openmono/", std::io::empty())?;
    let mut file = tar::Header::new_gnu();
    file.set_uid(owner);
    file.set_gid(owner);
    file.set_mode(0o555);
    file.set_size(bytes.len() as u64);
    builder.append_data(&mut file, ".openmono/openmono", bytes)?;
    builder.into_inner()
}

fn create_file(path: &Path) -> Result<File, String> {
    File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line for the progress display of an agent event.
fn describe(event: &AgentEvent) -> String {
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
        AgentEvent::Final { .. } => "done".into(),
        AgentEvent::Error { message } => format!("error: {message}"),
    }
}

/// Resolves on the first Ctrl-C, SIGTERM, SIGHUP (the terminal went away) or SIGQUIT:
/// each of them ends the run with a teardown instead of killing openmono outright.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut streams: Vec<_> = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ]
    .into_iter()
    .filter_map(|kind| signal(kind).ok())
    .collect();
    if streams.is_empty() {
        // No handler could be installed: never resolve rather than resolve at once.
        std::future::pending::<()>().await;
    }
    let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
    futures_util::future::select_all(waits).await;
}
