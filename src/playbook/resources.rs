//! The typed playbook: what the decoder makes of the KDL document. Values the user wrote
//! keep their spans; defaults are filled in here, so later stages never guess.

use std::path::PathBuf;

use super::{Source, Spanned};
use crate::sandbox::Permission;

/// The llama.cpp server image a model runs in unless it names another.
pub const DEFAULT_MODEL_IMAGE: &str = "openmono/llama-server:latest";
/// The image a replayed model runs in unless it names another: any image will do, as
/// the server is the openmono binary the run copies in; this one is there anyway.
pub const DEFAULT_REPLAY_IMAGE: &str = "openmono/agent:latest";
/// The context size of a model that does not set one.
pub const DEFAULT_CONTEXT: u32 = 4096;
/// Most model turns of an agent task that does not set `max-steps`.
pub const DEFAULT_MAX_STEPS: u32 = 20;
/// Most tokens in one model reply of an agent task that does not set `max-tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// A whole playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub containers: Vec<Container>,
    pub description: Option<String>,
    pub models: Vec<Model>,
    /// The `playbook` node's name, or the file's stem.
    pub name: String,
    /// The `playbook` node's `version`.
    pub version: Option<String>,
    pub networks: Vec<Network>,
    pub source: Source,
    pub images: Vec<Image>,
    pub tasks: Vec<Task>,
    pub vars: Vec<Var>,
    /// Vars that `apply` runs the playbook over, each with its values, as written.
    pub matrix: Vec<(Spanned<String>, Vec<Spanned<String>>)>,
    pub volumes: Vec<Volume>,
}

/// How to build an image that the engine does not have.
#[derive(Debug, Clone)]
pub struct Image {
    pub args: Vec<EnvVar>,
    /// The build context, a folder, as written.
    pub context: Spanned<String>,
    /// The Dockerfile, relative to the context.
    pub dockerfile: Option<Spanned<String>>,
    /// The reference containers and models use.
    pub reference: Spanned<String>,
}

/// A Docker volume.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Kept after the run, for the next runs of the playbook.
    pub keep: bool,
    pub name: Spanned<String>,
}

/// A playbook volume mounted into a container.
#[derive(Debug, Clone)]
pub struct VolumeMount {
    pub read_only: bool,
    /// An absolute path inside the container.
    pub target: Spanned<String>,
    pub volume: Spanned<String>,
}

/// A host file or folder mounted into a container.
#[derive(Debug, Clone)]
pub struct HostMount {
    /// The dangers the playbook lets through for this source (`allow=`).
    pub allow: Vec<Permission>,
    /// Read-only unless the playbook says `read-only=#false`.
    pub read_only: bool,
    /// A host path as written, relative to the folder of the file it is written in.
    pub source: Spanned<String>,
    /// An absolute path inside the container.
    pub target: Spanned<String>,
}

/// An empty folder in memory, gone with its container.
#[derive(Debug, Clone)]
pub struct Tmpfs {
    /// Most bytes it holds.
    pub size: u64,
    /// An absolute path inside the container.
    pub target: Spanned<String>,
}

/// The size of a `tmpfs` that does not set one: 64 MiB.
pub const DEFAULT_TMPFS_SIZE: u64 = 64 << 20;

/// An input of the playbook, for templates.
#[derive(Debug, Clone)]
pub struct Var {
    pub default: Option<Spanned<VarValue>>,
    pub name: Spanned<String>,
    /// A value must be given, even if there is a default.
    pub required: bool,
    pub ty: VarType,
}

/// What a `var` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarType {
    Bool,
    Int,
    /// A host path, made absolute.
    Path,
    String,
}

impl VarType {
    /// As `type=` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Int => "int",
            Self::Path => "path",
            Self::String => "string",
        }
    }
}

/// A `var`'s value as written in the playbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarValue {
    Bool(bool),
    Int(i64),
    String(String),
}

/// A private network: internal unless it allows egress.
#[derive(Debug, Clone)]
pub struct Network {
    /// Traffic may leave the network (`egress=#true`).
    pub egress: Option<Spanned<bool>>,
    pub name: Spanned<String>,
}

/// How to tell that a container is ready for its tasks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub interval: std::time::Duration,
    pub probe: HealthProbe,
    pub retries: u32,
    pub timeout: std::time::Duration,
}

/// What a health check runs inside the container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthProbe {
    /// A shell command that exits 0 when healthy.
    Command(Spanned<String>),
    /// A URL that answers 200 when healthy.
    Http(Spanned<String>),
}

/// An environment variable: a name and a value.
pub type EnvVar = (Spanned<String>, Spanned<String>);

/// A container's resource limits; unset means the engine's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    pub cpus: Option<u32>,
    /// Bytes.
    pub memory: Option<u64>,
    pub pids: Option<u32>,
}

/// A local model served by llama.cpp's `llama-server` in its own container.
#[derive(Debug, Clone)]
pub struct Model {
    /// The name the server gives the model in its API (`--alias`), if not its own.
    pub alias: Option<Spanned<String>>,
    /// Extra arguments for `llama-server`, after the ones openmono sets.
    pub args: Vec<Spanned<String>>,
    pub context: u32,
    /// What it serves: a GGUF file or a replay script.
    pub source: ModelSource,
    /// The file's SHA-256, as the playbook pins it.
    pub sha256: Option<Spanned<String>>,
    /// How long loading may take, if not `apply --model-timeout`.
    pub load_timeout: Option<std::time::Duration>,
    pub gpu_layers: Option<u32>,
    pub image: Spanned<String>,
    pub name: Spanned<String>,
    pub parallel: Option<u32>,
    /// Node labels and values that the node it runs on must have.
    pub placement: Vec<EnvVar>,
    pub threads: Option<u32>,
    pub network: Spanned<String>,
}

/// What a model serves; the path as written, relative to the playbook's folder.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A GGUF file, served by `llama-server`.
    Gguf(Spanned<String>),
    /// A replay script, served by `openmono replay`.
    Replay(Spanned<String>),
}

impl ModelSource {
    pub fn path(&self) -> &Spanned<String> {
        match self {
            Self::Gguf(path) | Self::Replay(path) => path,
        }
    }

    pub fn path_mut(&mut self) -> &mut Spanned<String> {
        match self {
            Self::Gguf(path) | Self::Replay(path) => path,
        }
    }
}

impl Model {
    /// The model's name in the API: its `alias`, else its own name.
    pub fn served_name(&self) -> &str {
        self.alias.as_ref().map_or(&self.name.value, |a| &a.value)
    }
}

/// A long-lived container that tasks run in.
#[derive(Debug, Clone)]
pub struct Container {
    pub env: Vec<EnvVar>,
    pub health: Option<Health>,
    pub image: Spanned<String>,
    pub limits: Limits,
    /// Host files and folders mounted into it.
    pub mounts: Vec<HostMount>,
    pub name: Spanned<String>,
    /// The networks it joins, each with an optional extra host name.
    pub networks: Vec<(Spanned<String>, Option<Spanned<String>>)>,
    /// The image's files are read-only.
    pub read_only_root: bool,
    /// Node labels and values that the node it runs on must have.
    pub placement: Vec<EnvVar>,
    pub tmpfs: Vec<Tmpfs>,
    /// `UID:GID`; none: the user who runs openmono.
    pub user: Option<Spanned<String>>,
    pub volumes: Vec<VolumeMount>,
    pub workdir: Option<Spanned<String>>,
    /// The project folder mounted at `/workspace`, as written.
    pub workspace: Option<Spanned<String>>,
    /// The dangers of the workspace's source the playbook lets through (`allow=`).
    pub workspace_allow: Vec<Permission>,
    /// The workspace is mounted read-only.
    pub workspace_read_only: bool,
}

/// One unit of work.
#[derive(Debug, Clone)]
pub struct Task {
    /// Tasks that must have completed before this one starts.
    pub after: Vec<Spanned<String>>,
    /// A failure does not stop the run.
    pub continue_on_error: bool,
    pub env: Vec<EnvVar>,
    pub kind: TaskKind,
    pub name: Spanned<String>,
    pub timeout: Option<std::time::Duration>,
}

/// An MCP server of an agent task.
#[derive(Debug, Clone)]
pub struct McpServer {
    /// A shell command that runs it.
    pub command: Spanned<String>,
    pub name: Spanned<String>,
}

/// What a task does.
#[derive(Debug, Clone)]
pub enum TaskKind {
    /// An agent loop inside `container`, talking to `model`.
    Agent {
        /// Decides the task's success by its exit status, after the agent ends.
        check: Option<Spanned<String>>,
        container: Spanned<String>,
        max_steps: u32,
        max_tokens: u32,
        /// MCP servers the agent starts, in order.
        mcp: Vec<McpServer>,
        model: Spanned<String>,
        prompt: Spanned<String>,
        /// Probe the box for a way out before the agent starts (`self-test`, on unless
        /// `#false`).
        self_test: bool,
        /// More rounds the agent gets while the check fails.
        retries: u32,
    },
    /// One shell command inside `container`.
    Run {
        command: Spanned<String>,
        container: Spanned<String>,
    },
}

impl TaskKind {
    pub fn container(&self) -> &Spanned<String> {
        match self {
            Self::Agent { container, .. } | Self::Run { container, .. } => container,
        }
    }
}

impl Playbook {
    /// A path written in the playbook, resolved against the folder of the file it is
    /// written in (a playbook or a file it includes).
    pub fn resolve(&self, path: &Spanned<String>) -> PathBuf {
        self.source.resolve_at(path.span, &path.value)
    }
}
