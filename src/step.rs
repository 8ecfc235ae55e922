//! One step of a plan, and one step of its teardown. `label` and `Display` are what
//! `openmono plan` prints; the executor runs the very same values.

use std::{fmt, path::PathBuf, time::Duration};

use crate::{
    playbook::{Health, HealthProbe, Limits},
    sandbox::Permission,
};

/// The port every model server listens on inside its network.
pub const MODEL_PORT: u16 = 8080;
/// Where the GGUF file appears inside the model's container.
pub const MODEL_MOUNT: &str = "/models/model.gguf";
/// Where a replay script appears inside its model's container.
pub const REPLAY_MOUNT: &str = "/models/replay.jsonl";
/// Where the project folder appears inside a container.
pub const WORKSPACE: &str = "/workspace";
/// Where openmono's own binary goes in a task container; nothing may be mounted there.
pub const SELF_DIR: &str = "/.openmono";

/// Something `apply` does, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    /// An agent loop, run inside `container` by the openmono binary copied there.
    AgentTask {
        /// Run after the agent; its exit status is the task's.
        check: Option<String>,
        container: String,
        max_steps: u32,
        max_tokens: u32,
        /// MCP servers the agent starts: name, shell command.
        mcp: Vec<(String, String)>,
        model: String,
        model_url: String,
        prompt: String,
        /// Probe the box for a way out first; the agent starts only if nothing answers.
        self_test: bool,
        /// More rounds for the agent while the check fails, its output sent back.
        retries: u32,
        /// The model's name in the server's API.
        served_model: String,
        settings: TaskSettings,
        task: String,
    },
    /// An image the playbook knows how to build, built only when the engine lacks it.
    BuildImage {
        args: Vec<(String, String)>,
        context: PathBuf,
        dockerfile: String,
        reference: String,
    },
    /// A volume: the run's own, or one kept across runs of the playbook.
    CreateVolume { keep: bool, name: String },
    /// A network private to the run; internal unless `egress`.
    CreateNetwork { egress: bool, name: String },
    /// A container that tasks run in; it idles until the run ends.
    StartContainer {
        env: Vec<(String, String)>,
        /// Tasks wait until this says the container is healthy.
        health: Option<Health>,
        image: String,
        limits: Limits,
        /// Host files and folders, checked against the sandbox's policy.
        mounts: Vec<Bind>,
        /// Paths in a writable workspace mounted read-only over themselves.
        protected: Vec<String>,
        name: String,
        /// The networks it joins, with an extra host name on each, if any.
        networks: Vec<(String, Option<String>)>,
        /// Node labels and values that the node it runs on must have (on a swarm).
        placement: Vec<(String, String)>,
        /// The image's files are read-only.
        read_only_root: bool,
        /// In-memory folders, the one a read-only root gets at `/tmp` included.
        tmpfs: Vec<TmpfsMount>,
        /// `UID:GID`; none: the user who runs openmono.
        user: Option<String>,
        /// Playbook volumes: name, target, read-only.
        volumes: Vec<(String, String, bool)>,
        workdir: Option<String>,
        /// The project folder, and whether it is mounted read-only.
        workspace: Option<(PathBuf, bool)>,
        /// The dangers of the workspace's source that the playbook let through (`allow=`).
        workspace_allowed: Vec<Permission>,
    },
    /// A llama.cpp server for one model.
    StartModel {
        /// The model's name in the API (`--alias`).
        alias: String,
        /// Extra `llama-server` arguments from the playbook.
        args: Vec<String>,
        context: u32,
        gguf: PathBuf,
        gguf_bytes: u64,
        /// GPU devices are requested from the engine (the playbook offloads layers).
        gpu: bool,
        /// What the file's header says.
        info: crate::gguf::GgufInfo,
        /// Requests served at once; they share the context.
        parallel: u32,
        /// The file matched the playbook's `sha256` pin.
        pinned: bool,
        image: String,
        /// `--jinja`, which tool calls need.
        jinja: bool,
        name: String,
        network: String,
        /// Node labels and values that the node it runs on must have (on a swarm).
        placement: Vec<(String, String)>,
    },
    /// A scripted model: `openmono replay`, from the binary the run copies in.
    StartReplay {
        /// The model's name in the API.
        alias: String,
        image: String,
        name: String,
        network: String,
        /// The file matched the playbook's `sha256` pin.
        pinned: bool,
        /// Node labels and values that the node it runs on must have (on a swarm).
        placement: Vec<(String, String)>,
        /// How many replies the script has.
        replies: usize,
        /// The script, canonical.
        script: PathBuf,
        /// The script is a run's transcript.
        transcript: bool,
    },
    /// One shell command inside `container`.
    RunTask {
        command: String,
        container: String,
        settings: TaskSettings,
        task: String,
    },
    /// Wait until the model answers `GET /health` with 200, asked from `from`.
    WaitModel {
        from: String,
        model: String,
        /// How long loading may take, if not `apply --model-timeout`.
        timeout: Option<Duration>,
        url: String,
    },
}

/// A host file or folder that a container mounts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bind {
    /// The dangers of this source that the playbook let through (`allow=`).
    pub allowed: Vec<Permission>,
    pub read_only: bool,
    /// Canonical: where the path written in the playbook really leads.
    pub source: PathBuf,
    pub target: String,
    /// Permissions `allow=` gave that this source does not need.
    pub unneeded: Vec<Permission>,
}

/// An in-memory folder in a container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TmpfsMount {
    /// Added by openmono for a read-only root, not written in the playbook.
    pub automatic: bool,
    /// Most bytes it holds.
    pub size: u64,
    pub target: String,
}

/// What every task may set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TaskSettings {
    /// A failure does not stop the run.
    pub continue_on_error: bool,
    pub env: Vec<(String, String)>,
    /// Then the task's processes are killed and it fails.
    pub timeout: Option<Duration>,
}

/// The process limit of a container whose playbook sets none.
pub const DEFAULT_PIDS: u32 = 1024;

/// How long a task may run when its playbook sets no `timeout`: every step ends.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_hours(1);

/// Something teardown removes; it runs after the steps, whatever happened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Teardown {
    RemoveContainer { name: String },
    RemoveNetwork { name: String },
    RemoveVolume { name: String },
}

impl Step {
    /// Whether the run goes on when this step fails (`continue-on-error`).
    pub fn continues_on_error(&self) -> bool {
        match self {
            Self::AgentTask { settings, .. } | Self::RunTask { settings, .. } => {
                settings.continue_on_error
            }
            _ => false,
        }
    }

    /// The node labels and values that the node this step's container runs on must
    /// have (on a swarm); none for a step that runs no container of its own.
    pub fn placement(&self) -> &[(String, String)] {
        match self {
            Self::StartContainer { placement, .. }
            | Self::StartModel { placement, .. }
            | Self::StartReplay { placement, .. } => placement,
            _ => &[],
        }
    }

    /// Bytes a model server needs: its weights (the file) and its KV cache, when the
    /// file's header says how big that is.
    pub fn memory_estimate(&self) -> Option<u64> {
        match self {
            Self::StartModel {
                context,
                gguf_bytes,
                info,
                ..
            } => Some(gguf_bytes.saturating_add(info.kv_cache_bytes(*context).unwrap_or(0))),
            _ => None,
        }
    }

    /// The task this step runs, if it runs one.
    pub fn task(&self) -> Option<&str> {
        match self {
            Self::AgentTask { task, .. } | Self::RunTask { task, .. } => Some(task),
            _ => None,
        }
    }

    /// A short name for progress lines and reports.
    pub fn label(&self) -> String {
        match self {
            Self::AgentTask { task, .. } => format!("agent task `{task}`"),
            Self::CreateNetwork { name, .. } => format!("network `{name}`"),
            Self::CreateVolume { name, .. } => format!("volume `{name}`"),
            Self::BuildImage { reference, .. } => format!("image `{reference}`"),
            Self::StartContainer { name, .. } => format!("container `{name}`"),
            Self::StartModel { name, .. } | Self::StartReplay { name, .. } => {
                format!("model `{name}`")
            }
            Self::RunTask { task, .. } => format!("run task `{task}`"),
            Self::WaitModel { model, .. } => format!("model `{model}` ready"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AgentTask { .. } => self.fmt_agent(f),
            Self::BuildImage { .. } => self.fmt_image(f),
            Self::CreateVolume { keep, name } => {
                if *keep {
                    write!(
                        f,
                        "+ create volume `{name}` if absent: kept across runs of this playbook"
                    )
                } else {
                    write!(f, "+ create volume `{name}`: removed with the run")
                }
            }
            Self::CreateNetwork { egress, name } => {
                if *egress {
                    write!(
                        f,
                        "+ create network `{name}`: EGRESS ALLOWED: containers on it can reach the internet, the LAN and the host"
                    )
                } else {
                    write!(
                        f,
                        "+ create network `{name}`: internal, no route out, no host address, no outside names"
                    )
                }
            }
            Self::StartContainer { .. } => self.fmt_container(f),
            Self::StartModel { .. } => self.fmt_model(f),
            Self::StartReplay { .. } => self.fmt_replay(f),
            Self::RunTask {
                command,
                container,
                settings,
                task,
            } => {
                write!(f, "+ run task `{task}` in `{container}`")?;
                lines(f, "      $ ", command)?;
                write!(f, "{settings}")
            }
            Self::WaitModel {
                from,
                model,
                timeout,
                url,
            } => {
                write!(
                    f,
                    "~ wait for model `{model}`: GET {url}/health answers 200, asked from `{from}`"
                )?;
                if let Some(timeout) = timeout {
                    write!(f, "\n      at most {}", human_duration(*timeout))?;
                }
                Ok(())
            }
        }
    }
}

impl Step {
    /// An agent task, for the plan.
    fn fmt_agent(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self::AgentTask {
            check,
            container,
            max_steps,
            max_tokens,
            mcp,
            model,
            prompt,
            self_test,
            retries,
            settings,
            task,
            ..
        } = self
        else {
            unreachable!("called for AgentTask only")
        };
        write!(
            f,
            "+ run agent task `{task}` in `{container}` with model `{model}` (at most {max_steps} {} of {max_tokens} tokens)",
            if *max_steps == 1 { "step" } else { "steps" }
        )?;
        lines(f, "      prompt: ", prompt)?;
        if let Some(check) = check {
            lines(f, "      check: $ ", check)?;
            if *retries > 0 {
                write!(
                    f,
                    "\n      retries: {retries}: while the check fails, its output goes back to the agent for another round"
                )?;
            }
        }
        for (name, command) in mcp {
            lines(
                f,
                &format!("      mcp server `{name}` (its tools as `{name}__…`): $ "),
                command,
            )?;
        }
        if *self_test {
            write!(
                f,
                "\n      self-test first: the agent starts only if the box has no route out and nothing outside answers"
            )?;
        } else {
            write!(
                f,
                "\n      NO SELF-TEST (`self-test #false`): the agent starts without probing the box for a way out"
            )?;
        }
        write!(f, "{settings}")
    }

    fn fmt_image(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self::BuildImage {
            args,
            context,
            dockerfile,
            reference,
        } = self
        else {
            return Ok(());
        };
        write!(
            f,
            "+ build image `{reference}` from {}/{dockerfile}, unless the engine has it",
            context.display()
        )?;
        for (key, value) in args {
            write!(f, "\n      build argument {key}={value}")?;
        }
        Ok(())
    }

    fn fmt_model(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self::StartModel {
            alias,
            args,
            context,
            gguf,
            gguf_bytes,
            gpu,
            info,
            parallel,
            pinned,
            image,
            jinja,
            name,
            network,
            placement,
        } = self
        else {
            return Ok(());
        };
        write!(
            f,
            "+ start model `{name}`: llama-server from `{image}` on `{network}`"
        )?;
        write!(
            f,
            "\n      mount {} ({}) at {MODEL_MOUNT} (read-only){}",
            gguf.display(),
            human_bytes(*gguf_bytes),
            if *pinned { ", SHA-256 as pinned" } else { "" }
        )?;
        write!(f, "\n      {info}")?;
        if let Some(trained) = info.trained_context {
            write!(f, ", trained for {trained} tokens of context")?;
        }
        write!(
            f,
            "\n      memory: about {}",
            human_bytes(self.memory_estimate().unwrap_or(*gguf_bytes))
        )?;
        match info.kv_cache_bytes(*context) {
            Some(kv) => write!(
                f,
                " (weights {} + KV cache {} for {context} tokens",
                human_bytes(*gguf_bytes),
                human_bytes(kv)
            )?,
            None => write!(f, " (weights; the header does not say the KV cache's size")?,
        }
        if *parallel > 1 {
            write!(f, ", shared by {parallel} requests at once")?;
        }
        write!(f, ")")?;
        write!(f, "\n      context {context}")?;
        if *jinja {
            write!(f, ", --jinja (tool calls)")?;
        }
        if !args.is_empty() {
            write!(f, ", {}", args.join(" "))?;
        }
        write!(f, ", served as `{alias}` at http://{name}:{MODEL_PORT}")?;
        if *gpu {
            write!(f, "\n      GPU devices requested from the engine")?;
        }
        fmt_placement(f, placement)
    }

    fn fmt_replay(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self::StartReplay {
            alias,
            image,
            name,
            network,
            pinned,
            placement,
            replies,
            script,
            transcript,
        } = self
        else {
            return Ok(());
        };
        write!(
            f,
            "+ start model `{name}`: openmono replay from `{image}` on `{network}`"
        )?;
        write!(
            f,
            "\n      mount {} ({replies} {}{}) at {REPLAY_MOUNT} (read-only){}",
            script.display(),
            if *replies == 1 { "reply" } else { "replies" },
            if *transcript {
                ", from a transcript"
            } else {
                ""
            },
            if *pinned { ", SHA-256 as pinned" } else { "" }
        )?;
        write!(
            f,
            "\n      answers request n with reply n, served as `{alias}` at http://{name}:{MODEL_PORT}"
        )?;
        fmt_placement(f, placement)
    }

    fn fmt_container(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self::StartContainer {
            env,
            health,
            image,
            limits,
            name,
            networks,
            placement,
            user,
            workdir,
            ..
        } = self
        else {
            return Ok(());
        };
        write!(f, "+ start container `{name}` from `{image}`")?;
        if networks.is_empty() {
            write!(f, " with no network")?;
        }
        for (i, (net, alias)) in networks.iter().enumerate() {
            write!(f, "{} `{net}`", if i == 0 { " on" } else { "," })?;
            if let Some(alias) = alias {
                write!(f, " (also as `{alias}`)")?;
            }
        }
        self.fmt_filesystem(f)?;
        match user {
            Some(user) => write!(f, "\n      runs as {user}")?,
            None => write!(f, "\n      runs as the user who runs openmono")?,
        }
        if let Some(dir) = workdir {
            write!(f, ", in {dir}")?;
        }
        write!(f, "; no capabilities, no new privileges")?;
        write!(f, "\n      limits: {}", LimitsDisplay(limits))?;
        for (key, value) in env {
            write!(f, "\n      env {key}={value}")?;
        }
        if let Some(health) = health {
            match &health.probe {
                HealthProbe::Http(url) => {
                    write!(f, "\n      healthy when GET {} answers 200", url.value)?;
                }
                HealthProbe::Command(command) => {
                    write!(f, "\n      healthy when `{}` exits 0", command.value)?;
                }
            }
            write!(
                f,
                " (every {}s, {}s each, unhealthy after {} failures); tasks wait for it",
                health.interval.as_secs_f64(),
                health.timeout.as_secs_f64(),
                health.retries
            )?;
        }
        fmt_placement(f, placement)?;
        write!(f, "\n      openmono copied in to run tasks")
    }
}

/// The node labels a model or container asks for, if any.
fn fmt_placement(f: &mut fmt::Formatter<'_>, placement: &[(String, String)]) -> fmt::Result {
    if placement.is_empty() {
        return Ok(());
    }
    let labels: Vec<String> = placement.iter().map(|(l, v)| format!("{l}={v}")).collect();
    write!(
        f,
        "\n      placement: a node with {} (on a swarm; one engine is one node)",
        labels.join(", ")
    )
}

impl Step {
    /// A container's files in a plan, one line each: the workspace, host mounts,
    /// volumes, a read-only root and tmpfs.
    fn fmt_filesystem(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self::StartContainer {
            mounts,
            protected,
            read_only_root,
            tmpfs,
            volumes,
            workspace,
            workspace_allowed,
            ..
        } = self
        else {
            return Ok(());
        };
        match workspace {
            Some((w, read_only)) => {
                write!(
                    f,
                    "\n      mount {} at {WORKSPACE} ({})",
                    w.display(),
                    if *read_only {
                        "read-only"
                    } else {
                        "read-write"
                    }
                )?;
                if mounts.is_empty() {
                    write!(f, ", its only host mount")?;
                }
                for permission in workspace_allowed {
                    write!(
                        f,
                        "\n        ALLOWED {}: {}",
                        permission.name(),
                        permission.exposes()
                    )?;
                }
                if !protected.is_empty() {
                    write!(f, "\n        read-only in it: {}", protected.join(", "))?;
                }
            }
            None if mounts.is_empty() => write!(f, "\n      no host mounts")?,
            None => {}
        }
        for bind in mounts {
            write!(f, "{bind}")?;
        }
        for (volume, target, read_only) in volumes {
            let mode = if *read_only {
                "read-only"
            } else {
                "read-write"
            };
            write!(f, "\n      volume `{volume}` at {target} ({mode})")?;
        }
        if *read_only_root {
            write!(f, "\n      read-only root filesystem")?;
        }
        for t in tmpfs {
            write!(
                f,
                "\n      tmpfs at {} ({} in memory, nothing in it runs){}",
                t.target,
                human_bytes(t.size),
                if t.automatic {
                    ", for the read-only root"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

/// A host mount's line in a plan: a writable mount and every permission it uses say
/// so plainly.
impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\n      mount {} at {} ({})",
            self.source.display(),
            self.target,
            if self.read_only {
                "read-only"
            } else {
                "READ-WRITE: the container can change these host files"
            }
        )?;
        for permission in &self.allowed {
            write!(
                f,
                "\n        ALLOWED {}: {}",
                permission.name(),
                permission.exposes()
            )?;
        }
        if !self.unneeded.is_empty() {
            let names: Vec<&str> = self.unneeded.iter().map(|p| p.name()).collect();
            write!(
                f,
                "\n        allow `{}` is not needed for this source",
                names.join(" ")
            )?;
        }
        Ok(())
    }
}

/// A task's settings, each on its own line, nothing when all are defaults.
impl fmt::Display for TaskSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(timeout) = self.timeout {
            write!(
                f,
                "\n      timeout {}: then its processes are killed",
                human_duration(timeout)
            )?;
        }
        if self.continue_on_error {
            write!(f, "\n      a failure does not stop the run")?;
        }
        for (key, value) in &self.env {
            write!(f, "\n      env {key}={value}")?;
        }
        Ok(())
    }
}

struct LimitsDisplay<'a>(&'a Limits);

impl fmt::Display for LimitsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Limits { cpus, memory, pids } = self.0;
        match memory {
            Some(bytes) => write!(f, "memory {}", human_bytes(*bytes))?,
            None => write!(f, "memory half the engine's")?,
        }
        match cpus {
            Some(n) => write!(f, ", {n} CPUs")?,
            None => write!(f, ", all the engine's CPUs but one")?,
        }
        write!(f, ", {} processes", pids.unwrap_or(DEFAULT_PIDS))
    }
}

impl fmt::Display for Teardown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RemoveContainer { name } => write!(f, "- remove container `{name}`"),
            Self::RemoveNetwork { name } => write!(f, "- remove network `{name}`"),
            Self::RemoveVolume { name } => write!(f, "- remove volume `{name}`"),
        }
    }
}

/// Writes `text` whole, each line on its own, the first after `lead` and the others
/// aligned under it: a plan shows exactly what will run.
fn lines(f: &mut fmt::Formatter<'_>, lead: &str, text: &str) -> fmt::Result {
    let pad = " ".repeat(lead.chars().count());
    for (i, line) in text.lines().enumerate() {
        let prefix = if i == 0 { lead } else { &pad };
        write!(f, "\n{prefix}{line}")?;
    }
    Ok(())
}

/// `253113024` → `241.4 MiB`.
/// `1h30m`, `45s`: how a playbook writes a duration.
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let text = [(h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(value, _)| *value > 0)
        .fold(String::new(), |mut text, (value, unit)| {
            use std::fmt::Write;
            let _ = write!(text, "{value}{unit}");
            text
        });
    if text.is_empty() {
        format!("{}ms", duration.as_millis())
    } else {
        text
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)] // display only
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
