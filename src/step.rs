//! One step of a plan, and one step of its teardown. `label` and `Display` are what
//! `openmono plan` prints; the executor runs the very same values.

use std::{fmt, path::PathBuf};

/// The port every model server listens on inside its network.
pub const MODEL_PORT: u16 = 8080;
/// Where the GGUF file appears inside the model's container.
pub const MODEL_MOUNT: &str = "/models/model.gguf";
/// Where the project folder appears inside a container.
pub const WORKSPACE: &str = "/workspace";

/// Something `apply` does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An agent loop, run inside `container` by the openmono binary copied there.
    AgentTask {
        container: String,
        max_steps: u32,
        max_tokens: u32,
        model: String,
        model_url: String,
        prompt: String,
        task: String,
    },
    /// An internal network, private to the run.
    CreateNetwork { name: String },
    /// A container that tasks run in; it idles until the run ends.
    StartContainer {
        image: String,
        name: String,
        network: Option<String>,
        workspace: Option<PathBuf>,
    },
    /// A llama.cpp server for one model.
    StartModel {
        /// Extra `llama-server` arguments from the playbook.
        args: Vec<String>,
        context: u32,
        gguf: PathBuf,
        gguf_bytes: u64,
        image: String,
        /// `--jinja`, which tool calls need.
        jinja: bool,
        name: String,
        network: String,
    },
    /// One shell command inside `container`.
    RunTask {
        command: String,
        container: String,
        task: String,
    },
    /// Wait until the model answers `GET /health` with 200, asked from `from`.
    WaitModel {
        from: String,
        model: String,
        url: String,
    },
}

/// Something teardown removes; it runs after the steps, whatever happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    RemoveContainer { name: String },
    RemoveNetwork { name: String },
}

impl Step {
    /// A short name for progress lines and reports.
    pub fn label(&self) -> String {
        match self {
            Self::AgentTask { task, .. } => format!("agent task `{task}`"),
            Self::CreateNetwork { name } => format!("network `{name}`"),
            Self::StartContainer { name, .. } => format!("container `{name}`"),
            Self::StartModel { name, .. } => format!("model `{name}`"),
            Self::RunTask { task, .. } => format!("run task `{task}`"),
            Self::WaitModel { model, .. } => format!("model `{model}` ready"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AgentTask {
                container,
                max_steps,
                max_tokens,
                model,
                prompt,
                task,
                ..
            } => {
                write!(
                    f,
                    "+ run agent task `{task}` in `{container}` with model `{model}` (at most {max_steps} steps of {max_tokens} tokens)"
                )?;
                lines(f, "      prompt: ", prompt)
            }
            Self::CreateNetwork { name } => {
                write!(
                    f,
                    "+ create network `{name}`: internal, no route out, no host address"
                )
            }
            Self::StartContainer {
                image,
                name,
                network,
                workspace,
            } => {
                write!(f, "+ start container `{name}` from `{image}`")?;
                match network {
                    Some(net) => write!(f, " on `{net}`")?,
                    None => write!(f, " with no network")?,
                }
                match workspace {
                    Some(w) => write!(
                        f,
                        "\n      mount {} at {WORKSPACE} (read-write), its only host mount",
                        w.display()
                    )?,
                    None => write!(f, "\n      no host mounts")?,
                }
                write!(f, "\n      openmono copied in to run tasks")
            }
            Self::StartModel {
                args,
                context,
                gguf,
                gguf_bytes,
                image,
                jinja,
                name,
                network,
            } => {
                write!(
                    f,
                    "+ start model `{name}`: llama-server from `{image}` on `{network}`"
                )?;
                write!(
                    f,
                    "\n      mount {} ({}) at {MODEL_MOUNT} (read-only)",
                    gguf.display(),
                    human_bytes(*gguf_bytes)
                )?;
                write!(f, "\n      context {context}")?;
                if *jinja {
                    write!(f, ", --jinja (tool calls)")?;
                }
                if !args.is_empty() {
                    write!(f, ", {}", args.join(" "))?;
                }
                write!(f, ", served as http://{name}:{MODEL_PORT}")
            }
            Self::RunTask {
                command,
                container,
                task,
            } => {
                write!(f, "+ run task `{task}` in `{container}`")?;
                lines(f, "      $ ", command)
            }
            Self::WaitModel { from, model, url } => {
                write!(
                    f,
                    "~ wait for model `{model}`: GET {url}/health answers 200, asked from `{from}`"
                )
            }
        }
    }
}

impl fmt::Display for Teardown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RemoveContainer { name } => write!(f, "- remove container `{name}`"),
            Self::RemoveNetwork { name } => write!(f, "- remove network `{name}`"),
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
