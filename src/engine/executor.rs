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

mod resources;
mod tasks;
mod teardown;

use crate::{
    agent::event::AgentEvent,
    agent::supervise::TIMED_OUT,
    plan::Plan,
    playbook::{Health, HealthProbe},
    step::{MODEL_MOUNT, MODEL_PORT, Step, TaskSettings, WORKSPACE},
};

use super::{
    BindMount, CheckReport, ContainerSpec, Engine, EngineError, HealthVerdict, Liveness,
    ObjectKind, Progress, Report, Stream, TaskReport, TaskStatus, gc, run_dir,
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
    /// This host's name and this process's start time, for the owner labels.
    host: String,
    owner_start: String,
    /// When the run started, in seconds since the Unix epoch.
    started: u64,
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
    // Runs whose openmono was killed left their objects; reap them before adding ours.
    let reaped = gc::collect(&engine, false, Duration::from_mins(1)).await?;
    let mut executor = Executor {
        host: gc::host_name(),
        owner_start: gc::process_start(std::process::id()).unwrap_or_default(),
        started: gc::now_secs(),
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
    for dead in &reaped {
        executor.progress.line(&format!(
            "Removed {} object(s) left by run {} (its openmono, pid {}, is gone)",
            dead.objects.len(),
            dead.run,
            dead.owner_pid
        ));
    }
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
            (gc::OWNER_PID.to_owned(), std::process::id().to_string()),
            (gc::OWNER_START.to_owned(), self.owner_start.clone()),
            (gc::OWNER_HOST.to_owned(), self.host.clone()),
            (gc::STARTED.to_owned(), self.started.to_string()),
        ])
    }
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
