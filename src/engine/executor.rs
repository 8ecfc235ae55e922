//! Runs a [`Plan`] on a Docker engine, one step after another, then tears down every
//! object the run created: on success, on failure and on Ctrl-C or SIGTERM. Objects are
//! named from the run id and labelled with it, so that teardown can also sweep what a
//! cancelled step created but did not get to record.

use std::{
    collections::HashMap,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{FutureExt, StreamExt};

mod resources;
mod sealing;
mod tasks;
mod teardown;
mod workspace;

pub use workspace::{Lost, Travelled, WORKSPACE_LABEL};

use crate::{
    agent::event::AgentEvent,
    agent::supervise::TIMED_OUT,
    plan::Plan,
    playbook::{Health, HealthProbe},
    step::{MODEL_MOUNT, MODEL_PORT, REPLAY_MOUNT, Step, TaskSettings, WORKSPACE},
};

use super::{
    BindMount, Capacity, CheckReport, ContainerSpec, Engine, EngineError, HealthVerdict, Liveness,
    ObjectKind, Output, Progress, Report, Stream, TaskReport, TaskStatus, gc, lock,
    progress::StepProgress, run_dir,
};

/// Where the copied openmono binary lives inside task containers.
pub const SELF_PATH: &str = "/.openmono/openmono";
/// The label every object of a run carries, with the run id as its value.
pub const RUN_LABEL: &str = "dev.openmono.run";
/// The label of a volume that holds a file kept on the engine for later runs (a model,
/// a replay script, openmono's binary), with the file's SHA-256 as its value.
pub const FILE_LABEL: &str = "dev.openmono.file";
/// How the volume of openmono's binary is named: `openmono-file-<16 hex>` then this.
pub const BINARY_VOLUME: &str = "-openmono";
/// The label of a run's objects that names the SHA-256 of the openmono binary that runs
/// it: `gc` leaves the copy of that binary alone while the run is alive.
pub const BINARY_LABEL: &str = "dev.openmono.binary";

/// Settings of one `apply`.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The engine to run on.
    pub endpoint: super::Endpoint,
    /// How many steps may run at the same time (at least 1).
    pub jobs: usize,
    /// How long a model may take to answer `/health` with 200.
    pub model_timeout: Duration,
    /// Text or JSON events.
    pub output: Output,
    /// Show the output of tasks as it comes.
    pub follow: bool,
    /// The run's id, from [`run_dir::new_run_id`]; templates may have used it.
    pub run_id: String,
    /// The input of a run of a matrix (its vars, `lang=rust`): it tags every line and
    /// event, and the progress is plain lines, since several runs share the terminal.
    pub input: Option<Vec<(String, String)>>,
    /// The swarm node to run on, when a matrix spreads its runs over a swarm; `None`:
    /// the engine's own node.
    pub node: Option<super::SwarmNode>,
}

/// How long ago a dead run must have started for `apply` to reap it (one killed a
/// moment ago is `openmono gc`'s to reap).
pub const REAP_AGE: Duration = Duration::from_mins(1);

/// How many steps run at the same time unless `--jobs` says otherwise.
pub const DEFAULT_JOBS: usize = 8;

/// How long a container gets to stop after SIGTERM when a run ends early.
const GRACE: Duration = Duration::from_secs(5);

/// An object the run created, in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Created {
    /// A volume of the run (kept volumes are not recorded: they outlive it).
    Volume {
        name: String,
    },
    /// `log`: where to keep the container's output when it is removed.
    Container {
        id: String,
        log: Option<PathBuf>,
        name: String,
    },
    Network {
        id: String,
        name: String,
    },
}

impl std::fmt::Display for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Volume { name } => write!(f, "volume {name}"),
            Self::Container { name, .. } => write!(f, "container {name}"),
            Self::Network { name, .. } => write!(f, "network {name}"),
        }
    }
}

/// What a run created and has not removed yet, shared with its signal listener.
type CreatedList = Arc<Mutex<Vec<Created>>>;

/// Why the steps stopped before the end.
enum Stop {
    Failed(String),
    Interrupted,
}

/// How a step ended.
enum Outcome {
    Done,
    Failed(String),
    /// Stopped because the run is stopping.
    Cancelled,
}

struct Executor<'a> {
    /// What the engine's machine has: the default limits are fractions of it.
    capacity: Capacity,
    /// This host's name and this process's start time, for the owner labels.
    host: String,
    owner_start: String,
    /// When the run started, in seconds since the Unix epoch.
    started: u64,
    /// What the run created and teardown has not removed yet; the signal listener reads
    /// it to say what is left when a third signal ends openmono at once.
    created: CreatedList,
    /// Engine ids of containers and names of networks, by playbook name.
    containers: Mutex<HashMap<String, String>>,
    dir: PathBuf,
    engine: Engine,
    networks: Mutex<HashMap<String, String>>,
    /// Engine names of volumes, by playbook name.
    volumes: Mutex<HashMap<String, String>>,
    options: &'a ApplyOptions,
    plan: &'a Plan,
    progress: Progress,
    run_id: String,
    /// The openmono binary, read once, copied into the engine's volume for it.
    self_binary: Vec<u8>,
    /// Its SHA-256, in hex.
    self_hash: String,
    /// That volume's name, once it is filled (or why it could not be).
    self_volume: tokio::sync::OnceCell<Result<String, String>>,
    tasks: Mutex<Vec<TaskReport>>,
    /// Workspaces copied to an engine elsewhere, to bring back at teardown.
    travelled: Mutex<Vec<workspace::Travelled>>,
}

/// Applies `plan`: connects, checks images, runs the steps, tears down, and reports.
pub async fn apply(plan: &Plan, options: &ApplyOptions) -> Result<Report, EngineError> {
    // Caught from here on: a signal before the steps begin stops the run before them.
    let signals = signal_streams();
    let engine = run_engine(plan, options).await?;
    let mut missing: Vec<String> = Vec::new();
    // Each image once: ten containers of one image ask the engine once.
    let images = plan.engine_images();
    // The engine answers these at once; asked one after the other they were a third
    // of the time before the first step.
    let present =
        futures_util::future::try_join_all(images.iter().map(|image| engine.image_exists(image)));
    let needed: u64 = plan.steps.iter().filter_map(Step::memory_estimate).sum();
    // For the default limits of every container, and to warn of models that will not fit.
    let capacity = async { engine.capacity().await.unwrap_or_default() };
    // Runs whose openmono was killed left their objects; reap them before adding ours.
    // What cannot go at once (an overlay that a node's container still holds) is left
    // to `openmono gc`, which sees every node. A matrix reaps once, before its runs.
    let reap = options.input.is_none();
    let reaped = async {
        if reap {
            gc::collect(
                std::slice::from_ref(&engine),
                false,
                REAP_AGE,
                Duration::ZERO,
            )
            .await
        } else {
            Ok(Vec::new())
        }
    };
    // The binary, and its hash, which names the volume that holds its copy on the engine.
    let own = tokio::task::spawn_blocking(|| {
        let bytes = std::env::current_exe().and_then(std::fs::read)?;
        let hash = crate::plan::hex(&sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes),
        ));
        Ok::<_, std::io::Error>((bytes, hash))
    });
    let (present, capacity, reaped, own) = tokio::join!(present, capacity, reaped, own);
    for (image, present) in images.iter().zip(present?) {
        if !present {
            missing.push((*image).clone());
        }
    }
    if !missing.is_empty() {
        let engine = match options.node.as_ref().filter(|n| n.engine.is_some()) {
            Some(node) => format!("the engine of swarm node {node}"),
            None => "this engine".to_owned(),
        };
        return Err(EngineError::image_missing(&missing, &engine));
    }
    let (self_binary, self_hash) = own
        .map_err(std::io::Error::other)
        .and_then(|read| read)
        .map_err(|source| EngineError::SelfBinary { source })?;
    let run_id = options.run_id.clone();
    let dir = run_dir::state_dir().join("runs").join(&run_id);
    // The run's own folder is new, or the id is in use (a saved plan applied twice at once).
    dir.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::create_dir(&dir))
        .map_err(|source| EngineError::RunDir {
            path: dir.display().to_string(),
            source,
        })?;
    let reaped = reaped?;
    // For `openmono runs`, which tells a run under way from one whose openmono is gone.
    let owner_start = gc::process_start(std::process::id()).unwrap_or_default();
    let _ = std::fs::write(
        dir.join(crate::runs::OWNER_FILE),
        format!("{} {owner_start}\n", std::process::id()),
    );
    let executor = Executor {
        capacity,
        host: gc::host_name(),
        owner_start,
        started: gc::now_secs(),
        created: Arc::default(),
        containers: Mutex::default(),
        dir,
        engine,
        networks: Mutex::default(),
        volumes: Mutex::default(),
        options,
        plan,
        progress: Progress::new(options.output, options.follow, options.input.as_deref()),
        run_id,
        self_binary,
        self_hash,
        self_volume: tokio::sync::OnceCell::new(),
        tasks: Mutex::default(),
        travelled: Mutex::default(),
    };
    if capacity.memory > 0 && needed > capacity.memory {
        executor.progress.line(&format!(
            "warning: the models need about {}, more than the {} the engine has: they may fail to load",
            crate::step::human_bytes(needed),
            crate::step::human_bytes(capacity.memory)
        ));
    }
    say_reaped(&executor.progress, &reaped);
    Ok(executor.run(signals).await)
}

impl Executor<'_> {
    async fn run(&self, signals: Vec<tokio::signal::unix::Signal>) -> Report {
        if self.options.output == Output::Json {
            self.progress.event(
                "run-started",
                serde_json::json!({
                    "run_id": self.run_id,
                    "playbook": self.plan.playbook,
                    "dir": self.dir.display().to_string(),
                    "steps": self.plan.steps.iter().map(Step::label).collect::<Vec<_>>(),
                    // On a swarm, for a matrix's run: the node it was placed on.
                    "node": self.options.node.as_ref().map(|node| {
                        serde_json::json!({ "id": node.id, "hostname": node.hostname })
                    }),
                }),
            );
        } else {
            self.progress.line(&format!(
                "Run {} of playbook `{}`; logs in {}",
                self.run_id,
                self.plan.playbook,
                self.dir.display()
            ));
        }
        let (signals_sender, signalled) = tokio::sync::watch::channel(0u32);
        let listener = tokio::spawn(listen(
            signals_sender,
            signals,
            Arc::clone(&self.created),
            self.run_id.clone(),
        ));
        // A panic in a step must still end in teardown.
        let stop = match std::panic::AssertUnwindSafe(self.steps(signalled.clone()))
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
        let mut report = self.teardown(stop.is_some(), signalled.clone()).await;
        listener.abort();
        // A signal during teardown came after every step: the run is still one that was
        // told to stop, and says so (exit code 130), as the message on stderr did.
        let stop = stop.or_else(|| (*signalled.borrow() > 0).then_some(Stop::Interrupted));
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        // Tasks finish in any order; the report follows the plan's.
        tasks.sort_by_key(|t| {
            self.plan
                .steps
                .iter()
                .position(|s| s.task() == Some(t.name.as_str()))
        });
        report.tasks = tasks;
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

    /// Runs the steps, each as soon as the steps it needs are done and at most
    /// `jobs` at a time, until all are done, one fails or a signal comes. Then nothing
    /// new starts, and the steps that wait (models, health, tasks) stop at once; steps
    /// that create something run to their end (a second or two), so that nothing is
    /// created behind teardown's back.
    async fn steps(&self, mut signalled: tokio::sync::watch::Receiver<u32>) -> Result<(), Stop> {
        let count = self.plan.steps.len();
        let mut started = vec![false; count];
        let mut done = vec![false; count];
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        let mut running = futures_util::stream::FuturesUnordered::new();
        // With `--follow`: the output of each container, from its start to the end.
        let mut followers = futures_util::stream::FuturesUnordered::new();
        let mut stop: Option<Stop> = None;
        loop {
            // A signal before the first step, or between two polls: nothing new starts.
            if stop.is_none() && *signalled.borrow() > 0 {
                stop = Some(Stop::Interrupted);
                let _ = cancel.send(true);
            }
            if stop.is_none() {
                // A model takes seconds to load and every agent waits for it: while a
                // model's container is being started, other containers wait their
                // turn, so that the engine gives it its whole attention.
                let mut model_starting = (0..count).any(|i| {
                    started[i] && !done[i] && matches!(self.plan.steps[i], Step::StartModel { .. })
                });
                for i in self.launch_order() {
                    if running.len() >= self.options.jobs.max(1) {
                        break;
                    }
                    let ready = self.plan.needs.get(i).is_none_or(|needs| {
                        needs.iter().all(|n| done.get(*n).copied().unwrap_or(true))
                    });
                    let held =
                        model_starting && matches!(self.plan.steps[i], Step::StartContainer { .. });
                    if !started[i] && ready && !held {
                        started[i] = true;
                        model_starting |= matches!(self.plan.steps[i], Step::StartModel { .. });
                        running.push(self.run_step(i, cancelled.clone()));
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                Some((i, outcome)) = running.next() => match outcome {
                    Outcome::Done => {
                        done[i] = true;
                        if let (true, Step::StartContainer { name, .. } | Step::StartModel { name, .. } | Step::StartReplay { name, .. }) =
                            (self.progress.follows(), &self.plan.steps[i])
                        {
                            followers.push(self.follow(name, i + 1));
                        }
                    }
                    Outcome::Failed(why) => {
                        if stop.is_none() {
                            stop = Some(Stop::Failed(why));
                        }
                        let _ = cancel.send(true);
                    }
                    Outcome::Cancelled => {}
                },
                Some(()) = followers.next(), if !followers.is_empty() => {}
                _ = signalled.wait_for(|n| *n > 0), if stop.is_none() => {
                    stop = Some(Stop::Interrupted);
                    let _ = cancel.send(true);
                }
            }
        }
        // A task whose step never started did not run (those cancelled are reported).
        self.not_run();
        stop.map_or(Ok(()), Err)
    }

    /// The steps in the order to start those that are ready: models first, since their
    /// load is the longest wait of a run, then the plan's order.
    fn launch_order(&self) -> impl Iterator<Item = usize> + '_ {
        let model = |i: &usize| matches!(self.plan.steps[*i], Step::StartModel { .. });
        let steps = 0..self.plan.steps.len();
        steps
            .clone()
            .filter(model)
            .chain(steps.filter(move |i| !model(i)))
    }

    /// Runs step `i` with its own progress line; the steps that wait stop when
    /// `cancelled` turns true.
    async fn run_step(
        &self,
        i: usize,
        mut cancelled: tokio::sync::watch::Receiver<bool>,
    ) -> (usize, Outcome) {
        let step = &self.plan.steps[i];
        let label = step.label();
        let started = Instant::now();
        let bar = self.progress.start_step(&label, Some(i + 1));
        // `None`: cancelled.
        let result = match step {
            Step::StartContainer {
                health: Some(health),
                ..
            } => match self.start_container(step).await {
                Ok(id) => tokio::select! {
                    result = self.wait_healthy(&id, health, &bar) => Some(result),
                    _ = cancelled.wait_for(|c| *c) => None,
                },
                Err(why) => Some(Err(why)),
            },
            Step::WaitModel { .. } | Step::AgentTask { .. } | Step::RunTask { .. } => {
                tokio::select! {
                    result = self.step(step, &bar) => Some(result),
                    _ = cancelled.wait_for(|c| *c) => None,
                }
            }
            _ => Some(self.step(step, &bar).await),
        };
        let outcome = match result {
            Some(Ok(note)) => {
                bar.finish(true, &note);
                Outcome::Done
            }
            None => {
                bar.finish(false, "cancelled");
                self.cancelled(step, started.elapsed());
                Outcome::Cancelled
            }
            Some(Err(why)) if step.continues_on_error() => {
                bar.finish(
                    false,
                    &format!("{why}; the run goes on (continue-on-error)"),
                );
                Outcome::Done
            }
            Some(Err(why)) => {
                bar.finish(false, "failed");
                Outcome::Failed(format!("{label}: {why}"))
            }
        };
        (i, outcome)
    }

    /// Shows what container `name` writes, as it comes, until it stops.
    async fn follow(&self, name: &str, step: usize) {
        if let Ok(id) = self.container(name) {
            self.engine
                .follow_logs(&id, |_, line| self.progress.output(Some(step), name, line))
                .await;
        }
    }

    /// Reports task `step`, stopped after `ran` by a signal or another step's failure,
    /// with the last lines of its log.
    fn cancelled(&self, step: &Step, ran: Duration) {
        const TAIL: usize = 20;
        let (Step::AgentTask { task, .. } | Step::RunTask { task, .. }) = step else {
            return;
        };
        let mut tasks = lock(&self.tasks);
        if tasks.iter().any(|t| t.name == *task) {
            return;
        }
        let log = self.dir.join(format!("{task}.log"));
        let text = std::fs::read(&log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let agent = matches!(step, Step::AgentTask { .. });
        let transcript = self.dir.join(format!("{task}.jsonl"));
        if agent && transcript.is_file() {
            interrupted(&transcript);
        }
        tasks.push(TaskReport {
            answer: None,
            check: None,
            duration: ran,
            exit_code: None,
            kind: if agent { "agent" } else { "run" },
            log,
            name: task.clone(),
            output_tail: lines[lines.len().saturating_sub(TAIL)..]
                .iter()
                .map(|l| (*l).to_owned())
                .collect(),
            status: TaskStatus::Cancelled,
            transcript: (agent && transcript.is_file()).then_some(transcript),
        });
    }

    /// Reports the tasks that did not start.
    fn not_run(&self) {
        let mut tasks = lock(&self.tasks);
        for step in &self.plan.steps {
            let (Step::AgentTask { task, .. } | Step::RunTask { task, .. }) = step else {
                continue;
            };
            if tasks.iter().any(|t| t.name == *task) {
                continue;
            }
            tasks.push(TaskReport {
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
    async fn step(&self, step: &Step, bar: &StepProgress<'_>) -> Result<String, String> {
        match step {
            Step::CreateNetwork { egress, name } => self.create_network(name, *egress).await,
            Step::CreateVolume { keep, name } => self.create_volume(name, *keep).await,
            Step::BuildImage {
                args,
                context,
                dockerfile,
                reference,
            } => {
                self.build_image(reference, context, dockerfile, args, bar)
                    .await
            }
            Step::StartModel { .. } => self.start_model(step).await,
            Step::StartReplay { .. } => self.start_replay(step).await,
            Step::StartContainer { .. } => self.start_container(step).await.map(|_| String::new()),
            Step::WaitModel {
                from,
                model,
                timeout,
                url,
            } => {
                let timeout = timeout.unwrap_or(self.options.model_timeout);
                self.wait_model(from, model, url, timeout, bar).await
            }
            Step::AgentTask { .. } => self.agent_task(step, bar).await,
            Step::RunTask {
                command,
                container,
                settings,
                task,
            } => self.run_task(task, container, command, settings, bar).await,
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
            (BINARY_LABEL.to_owned(), self.self_hash.clone()),
            (gc::OWNER_PID.to_owned(), std::process::id().to_string()),
            (gc::OWNER_START.to_owned(), self.owner_start.clone()),
            (gc::OWNER_HOST.to_owned(), self.host.clone()),
            (gc::STARTED.to_owned(), self.started.to_string()),
        ])
    }
}

/// The progress lines for what `apply` removed of dead runs before its own.
fn say_reaped(progress: &Progress, reaped: &[gc::DeadRun]) {
    for line in gc::reaped_lines(reaped) {
        progress.line(&line);
    }
}

/// Ends the transcript of an agent stopped from outside, which had no say: its last line
/// is a `final` event with the reason `interrupted`, the steps it took and its last text.
fn interrupted(transcript: &std::path::Path) {
    use std::io::Write;
    let text = std::fs::read_to_string(transcript).unwrap_or_default();
    let mut steps = 0;
    let mut answer = String::new();
    for event in text.lines().filter_map(AgentEvent::parse_line) {
        match event {
            AgentEvent::Final { .. } => return,
            AgentEvent::ModelTurn { step, content, .. } => {
                steps = step;
                if let Some(content) = content.filter(|c| !c.trim().is_empty()) {
                    content.trim().clone_into(&mut answer);
                }
            }
            _ => {}
        }
    }
    let end = AgentEvent::Final {
        answer,
        steps,
        reason: crate::agent::EndReason::Interrupted,
    };
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(transcript) {
        let _ = writeln!(file, "{}", end.to_line());
    }
}

/// The engine a run uses: the one chosen, or on a swarm, the engine of the node the run
/// is placed on. Host files are refused first when that engine is elsewhere.
async fn run_engine(plan: &Plan, options: &ApplyOptions) -> Result<Engine, EngineError> {
    let node_engine = options.node.as_ref().and_then(|n| n.engine.as_ref());
    let endpoint = node_engine.unwrap_or(&options.endpoint);
    if endpoint.is_remote() {
        host_files_elsewhere(plan, endpoint)?;
    }
    let engine = Engine::connect(&options.endpoint).await?;
    match &options.node {
        Some(node) => engine.on_node(node).await,
        None => Ok(engine),
    }
}

/// Refuses a plan whose steps need this machine's folders on an engine elsewhere, which
/// cannot see them: `mount`s. (The workspace, model files and replay scripts travel.)
pub fn host_files_elsewhere(plan: &Plan, endpoint: &super::Endpoint) -> Result<(), EngineError> {
    let what: Vec<String> = plan
        .steps
        .iter()
        .flat_map(|step| match step {
            Step::StartContainer { mounts, name, .. } => mounts
                .iter()
                .map(|m| format!("the mount {} of `{name}`", m.source.display()))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    if what.is_empty() {
        return Ok(());
    }
    Err(EngineError::HostFiles {
        engine: endpoint.host.clone(),
        what: what.join(", "),
    })
}

fn create_file(path: &Path) -> Result<File, String> {
    File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// An error and its causes on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
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

/// Handlers for Ctrl-C, SIGTERM, SIGHUP and SIGQUIT: from now on they do not kill
/// openmono, and [`listen`] hears those that came before it started.
fn signal_streams() -> Vec<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ]
    .into_iter()
    .filter_map(|kind| signal(kind).ok())
    .collect()
}

/// The runs under way in this process (a matrix runs several), with what each created:
/// a third signal says what every one of them leaves.
static LIVE: Mutex<Vec<(String, CreatedList)>> = Mutex::new(Vec::new());

/// How many signals this process has said something about: every run hears each signal,
/// and one line says it.
static SAID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A run's place in [`LIVE`], given up when its listener ends.
struct Live(String);

impl Drop for Live {
    fn drop(&mut self) {
        lock(&LIVE).retain(|(run, _)| *run != self.0);
    }
}

/// Counts Ctrl-C, SIGTERM, SIGHUP (the terminal went away) and SIGQUIT into `signals`:
/// the first stops the run and tears down gracefully, the second skips grace periods,
/// the third ends openmono at once and says what is left on the engine, of every run
/// under way in this process.
async fn listen(
    signals: tokio::sync::watch::Sender<u32>,
    mut streams: Vec<tokio::signal::unix::Signal>,
    created: CreatedList,
    run_id: String,
) {
    lock(&LIVE).push((run_id.clone(), created));
    let _live = Live(run_id);
    if streams.is_empty() {
        // No handler could be installed: never resolve rather than resolve at once.
        std::future::pending::<()>().await;
    }
    let mut count = 0;
    loop {
        let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
        futures_util::future::select_all(waits).await;
        count += 1;
        let _ = signals.send(count);
        if SAID.fetch_max(count, std::sync::atomic::Ordering::SeqCst) >= count {
            continue;
        }
        match count {
            1 => eprintln!(
                "openmono: stopping; tearing down (again to skip grace periods, a third time to quit at once)"
            ),
            2 => eprintln!("openmono: skipping grace periods; still removing everything"),
            _ => {
                eprintln!("{}", quit_note(&lock(&LIVE)));
                std::process::exit(130);
            }
        }
    }
}

/// What openmono says when it quits at once: what each run under way leaves.
fn quit_note(live: &[(String, CreatedList)]) -> String {
    use std::fmt::Write as _;
    let mut text = String::from("openmono: quit at once;");
    let mut ids = Vec::new();
    for (i, (run_id, created)) in live.iter().enumerate() {
        let left: Vec<String> = lock(created)
            .iter()
            .rev()
            .map(|object| format!("\n  {object}"))
            .collect();
        let none = if left.is_empty() {
            " nothing it knows of"
        } else {
            ""
        };
        let sep = if i == 0 { " " } else { "\n" };
        let _ = write!(text, "{sep}run {run_id} left{none}{}", left.concat());
        ids.push(format!("{RUN_LABEL}={run_id}"));
    }
    // Removals under way may finish after this line: "not yet removed".
    let carries = if ids.len() == 1 {
        "it carries the label"
    } else {
        "they carry the labels"
    };
    let _ = write!(
        text,
        "\n(as far as it knows: what teardown was removing at this moment may be gone already)\nremove what is left with `openmono gc` ({carries} {})",
        ids.join(", ")
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quitting_at_once_names_what_every_run_under_way_leaves() {
        let created = |objects: Vec<Created>| Arc::new(Mutex::new(objects));
        let one = created(vec![
            Created::Network {
                id: "n1".into(),
                name: "openmono-aaa-n".into(),
            },
            Created::Container {
                id: "c1".into(),
                log: None,
                name: "openmono-aaa-box".into(),
            },
        ]);
        let live = vec![
            ("aaa".to_owned(), one),
            ("bbb".to_owned(), created(Vec::new())),
        ];
        assert_eq!(
            quit_note(&live),
            "openmono: quit at once; run aaa left\n  container openmono-aaa-box\n  network openmono-aaa-n\nrun bbb left nothing it knows of\n(as far as it knows: what teardown was removing at this moment may be gone already)\nremove what is left with `openmono gc` (they carry the labels dev.openmono.run=aaa, dev.openmono.run=bbb)"
        );
    }
}
