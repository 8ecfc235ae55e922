//! KDL document → typed [`Playbook`]. The checker first validates the document against
//! the language's table and reports every problem; the decoder then reads the values,
//! checks what the table cannot say (names defined twice, a task's kind and the children
//! that go with it) and fills in defaults. Problems never stop it early, so a user sees
//! all mistakes of a file at once.
//!
//! `decode_*` methods turn one node kind into its struct; the free functions below read
//! values whose shape the checker has already vouched for, and return `None` otherwise.

use std::{collections::HashMap, path::PathBuf};

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use super::{
    Container, DEFAULT_CONTEXT, DEFAULT_MAX_STEPS, DEFAULT_MAX_TOKENS, DEFAULT_MODEL_IMAGE,
    DEFAULT_REPLAY_IMAGE, DEFAULT_TMPFS_SIZE, DecodeError, Health, HealthProbe, HostMount, Image,
    Limits, McpServer, Model, ModelSource, Network, Playbook, Source, Spanned, Task, TaskKind,
    Tmpfs, Var, VarType, VarValue, Volume, VolumeMount, checker::Checker, schema, units,
};

/// A decoded playbook and the warnings it gave.
#[derive(Debug)]
pub struct Decoded {
    pub playbook: Playbook,
    pub warnings: Vec<DecodeError>,
}

impl Decoded {
    /// The warnings as one report with the source, if there are any.
    pub fn warnings(&self) -> Option<super::Problems> {
        (!self.warnings.is_empty())
            .then(|| super::Problems::new(self.playbook.source.named(), self.warnings.clone()))
    }
}

/// A playbook that did not decode: its problems, and its files (an included file's
/// problems point into it).
#[derive(Debug)]
pub struct DecodeFailure {
    pub errors: Vec<DecodeError>,
    pub source: Source,
}

/// Decodes one playbook and the files it includes, collecting problems in `problems`.
pub struct Decoder {
    problems: Vec<DecodeError>,
    /// First definition of each name, per namespace, for duplicate reports.
    seen: HashMap<(&'static str, String), SourceSpan>,
    /// The playbook's files; `include` adds to them.
    source: Source,
    /// Every file read so far, canonical, so that a file is included once.
    read: Vec<PathBuf>,
}

impl Decoder {
    pub fn new(source: &Source) -> Self {
        Self {
            problems: Vec::new(),
            seen: HashMap::new(),
            source: source.clone(),
            read: Vec::new(),
        }
    }

    /// Parses and decodes the playbook and what it includes. On failure, every problem
    /// (warnings included) comes back at once.
    pub fn decode(mut self) -> Result<Decoded, DecodeFailure> {
        let mut playbook = Playbook {
            containers: Vec::new(),
            description: None,
            models: Vec::new(),
            name: self.source.path.file_stem().map_or_else(
                || "playbook".to_owned(),
                |s| s.to_string_lossy().into_owned(),
            ),
            networks: Vec::new(),
            source: self.source.clone(),
            images: Vec::new(),
            tasks: Vec::new(),
            vars: Vec::new(),
            matrix: Vec::new(),
            version: None,
            volumes: Vec::new(),
        };
        let root =
            std::fs::canonicalize(&self.source.path).unwrap_or_else(|_| self.source.path.clone());
        self.read.push(root.clone());
        let text = std::sync::Arc::clone(&self.source.text);
        let mut chain = vec![(root, self.source.path.clone())];
        self.decode_text(&text, 0, &mut playbook, &mut chain);
        self.check_matrix(&playbook);
        playbook.source = self.source.clone();
        if self.problems.iter().all(DecodeError::is_warning) {
            Ok(Decoded {
                playbook,
                warnings: self.problems,
            })
        } else {
            Err(DecodeFailure {
                errors: self.problems,
                source: self.source,
            })
        }
    }

    /// Parses one file's text, whose offsets start at `base`, and decodes its nodes
    /// into `playbook`. `chain` holds the files being included, outermost first.
    fn decode_text(
        &mut self,
        text: &str,
        base: usize,
        playbook: &mut Playbook,
        chain: &mut Vec<(PathBuf, PathBuf)>,
    ) {
        let Some(mut doc) = self.parse(text, base) else {
            return;
        };
        if base > 0 {
            shift_document(&mut doc, base);
        } else if doc.nodes().is_empty() {
            // An empty file is a mistake (a file cut short, the wrong one), not a
            // playbook with nothing to do: that one says so with `playbook "NAME"`.
            self.problems.push(DecodeError::Empty {
                span: (0, text.find('\n').unwrap_or(text.len())).into(),
            });
        }
        Checker {
            problems: &mut self.problems,
        }
        .check_nodes(doc.nodes(), schema::TOP_LEVEL, None);
        for node in doc.nodes() {
            match node.name().value() {
                "playbook" => {
                    if let Some(name) = str_arg(node, 0) {
                        playbook.name = name.value;
                    }
                    playbook.description = child_str(node, "description").map(|d| d.value);
                    playbook.version = child_str(node, "version").map(|v| v.value);
                }
                "include" => self.include(node, playbook, chain),
                "network" => playbook.networks.extend(self.decode_network(node)),
                "var" => playbook.vars.extend(self.decode_var(node)),
                "matrix" => playbook.matrix.extend(matrix_axis(node)),
                "volume" => playbook.volumes.extend(self.decode_volume(node)),
                "image" => playbook.images.extend(self.decode_image(node)),
                "model" => playbook.models.extend(self.decode_model(node)),
                "container" => playbook.containers.extend(self.decode_container(node)),
                "task" => playbook.tasks.extend(self.decode_task(node)),
                // The checker reported it.
                _ => {}
            }
        }
    }

    /// Each `matrix` is over a var of the playbook, once, with values of the var's type
    /// (checked when every file is read: a var may be declared after its matrix).
    fn check_matrix(&mut self, playbook: &Playbook) {
        for (i, (var, values)) in playbook.matrix.iter().enumerate() {
            let Some(declared) = playbook.vars.iter().find(|v| v.name.value == var.value) else {
                self.problems.push(DecodeError::InvalidValue {
                    help: Some(format!("declare it: `var \"{}\"`", var.value)),
                    message: format!("`{}` is not a var of this playbook", var.value),
                    span: var.span,
                });
                continue;
            };
            if playbook.matrix[..i]
                .iter()
                .any(|(v, _)| v.value == var.value)
            {
                self.problems.push(DecodeError::InvalidValue {
                    help: Some(format!(
                        "give all its values in one `matrix \"{}\" …`",
                        var.value
                    )),
                    message: format!("var `{}` has a matrix already", var.value),
                    span: var.span,
                });
            }
            for (j, value) in values.iter().enumerate() {
                if values[..j].iter().any(|v| v.value == value.value) {
                    self.problems.push(DecodeError::InvalidValue {
                        help: Some(
                            "each value once: two runs of one input could not be told apart".into(),
                        ),
                        message: format!(
                            "`{}` is in the matrix of `{}` twice",
                            value.value, var.value
                        ),
                        span: value.span,
                    });
                }
                let fits = match declared.ty {
                    VarType::Bool => matches!(value.value.as_str(), "true" | "false"),
                    VarType::Int => value.value.parse::<i64>().is_ok(),
                    VarType::Path | VarType::String => true,
                };
                if !fits {
                    self.problems.push(DecodeError::InvalidValue {
                        help: Some(format!(
                            "var `{}` is of type `{}`",
                            var.value,
                            declared.ty.name()
                        )),
                        message: format!("`{}` is not a value of var `{}`", value.value, var.value),
                        span: value.span,
                    });
                }
            }
        }
    }

    /// One file's text as a KDL document, or its syntax errors recorded.
    fn parse(&mut self, text: &str, base: usize) -> Option<KdlDocument> {
        super::parser::parse(text, base)
            .map_err(|errors| self.problems.extend(errors))
            .ok()
    }

    /// `include "other.kdl"`: the file, relative to the including one, decoded as if
    /// its nodes stood here. A file is read once; a file that includes itself, through
    /// any number of others, is an error that shows the whole loop.
    fn include(
        &mut self,
        node: &KdlNode,
        playbook: &mut Playbook,
        chain: &mut Vec<(PathBuf, PathBuf)>,
    ) {
        let Some(relative) = str_arg(node, 0).filter(|r| !r.value.trim().is_empty()) else {
            return;
        };
        let path = self.source.resolve_at(relative.span, &relative.value);
        let shown = chain
            .last()
            .and_then(|(_, shown)| shown.parent())
            .map_or_else(
                || PathBuf::from(&relative.value),
                |dir| dir.join(&relative.value),
            );
        let missing = |reason: String| DecodeError::IncludeMissing {
            path: shown.display().to_string(),
            reason,
            span: relative.span,
        };
        let canonical = match std::fs::canonicalize(&path) {
            Ok(canonical) => canonical,
            Err(e) => {
                self.problems.push(missing(e.to_string()));
                return;
            }
        };
        if let Some(at) = chain.iter().position(|(file, _)| *file == canonical) {
            let mut names: Vec<String> = chain[at..]
                .iter()
                .map(|(_, shown)| shown.display().to_string())
                .collect();
            names.push(shown.display().to_string());
            self.problems.push(DecodeError::IncludeLoop {
                chain: names.join(" → "),
                span: relative.span,
            });
            return;
        }
        if self.read.contains(&canonical) {
            return;
        }
        // Only playbook files: reading a FIFO would block, and any other file's text
        // would show up in the diagnostics.
        if !canonical.is_file() {
            self.problems.push(missing(
                "it is not a regular file (a folder, a device or a pipe): include a `.kdl` file"
                    .into(),
            ));
            return;
        }
        if canonical.extension().is_none_or(|e| e != "kdl") {
            self.problems
                .push(missing("only `.kdl` files can be included".into()));
            return;
        }
        let (dir, text) = match super::source::read_file(&path) {
            Ok(read) => read,
            Err(e) => {
                self.problems.push(missing(e.to_string()));
                return;
            }
        };
        self.read.push(canonical.clone());
        let file = self.source.include(&shown, dir, text);
        let (base, text) = (file.base, std::sync::Arc::clone(&file.text));
        chain.push((canonical, shown));
        self.decode_text(&text, base, playbook, chain);
        chain.pop();
    }

    /// The resource's name, recorded in `namespace` so that a second one is reported.
    fn name(&mut self, node: &KdlNode, namespace: &'static str) -> Option<Spanned<String>> {
        let name = str_arg(node, 0).filter(|n| super::checker::is_name(&n.value))?;
        self.define(namespace, &name);
        Some(name)
    }

    /// Records `name` in `namespace`; a second definition is reported with both places.
    fn define(&mut self, namespace: &'static str, name: &Spanned<String>) {
        let key = (namespace, name.value.clone());
        if let Some(first) = self.seen.get(&key) {
            self.problems.push(DecodeError::Duplicate {
                kind: match namespace {
                    "host" => "model or container",
                    other => other,
                },
                name: name.value.clone(),
                span: name.span,
                first: *first,
            });
        } else {
            self.seen.insert(key, name.span);
        }
    }

    fn decode_network(&mut self, node: &KdlNode) -> Option<Network> {
        Some(Network {
            egress: prop(node, "egress").and_then(|e| match e.value() {
                KdlValue::Bool(b) => Some(Spanned::new(*b, e.span())),
                _ => None,
            }),
            name: self.name(node, "network")?,
        })
    }

    /// `health { http "…" }` or `health { command "…" }`, with its timing.
    fn health(&mut self, node: &KdlNode) -> Option<Health> {
        let health = last_child(node, "health")?;
        let probe = match (child_str(health, "http"), child_str(health, "command")) {
            (Some(url), None) => HealthProbe::Http(url),
            (None, Some(command)) => HealthProbe::Command(command),
            (http, command) => {
                self.problems.push(DecodeError::InvalidValue {
                    help: Some("give exactly one of `http \"URL\"` and `command \"…\"`".into()),
                    message: if http.is_some() && command.is_some() {
                        "a health check has both `http` and `command`".into()
                    } else {
                        "a health check needs `http` or `command`".into()
                    },
                    span: health.name().span(),
                });
                return None;
            }
        };
        let duration = |name: &str, default: u64| {
            child_str(health, name)
                .and_then(|d| units::parse_duration(&d.value))
                .unwrap_or(std::time::Duration::from_secs(default))
        };
        Some(Health {
            interval: duration("interval", 1),
            probe,
            retries: child_int(health, "retries").map_or(30, |r| r.value),
            timeout: duration("timeout", 5),
        })
    }

    fn decode_image(&mut self, node: &KdlNode) -> Option<Image> {
        let reference = str_arg(node, 0)?;
        self.define("image", &reference);
        Some(Image {
            args: children(node, "arg")
                .filter_map(|a| Some((str_arg(a, 0)?, str_arg(a, 1)?)))
                .collect(),
            context: child_str(node, "context")?,
            dockerfile: child_str(node, "dockerfile"),
            reference,
        })
    }

    fn decode_volume(&mut self, node: &KdlNode) -> Option<Volume> {
        Some(Volume {
            keep: prop_bool(node, "keep"),
            name: self.name(node, "volume")?,
        })
    }

    /// `volume "name" "/target"` children of a container. Targets are checked with the
    /// container's other mounts once templates are rendered (see `plan.rs`).
    fn volume_mounts(node: &KdlNode) -> Vec<VolumeMount> {
        children(node, "volume")
            .filter_map(|child| {
                Some(VolumeMount {
                    read_only: prop_bool(child, "read-only"),
                    target: str_arg(child, 1)?,
                    volume: str_arg(child, 0)?,
                })
            })
            .collect()
    }

    /// `mount "source" "/target"` children of a container: read-only unless they say
    /// `read-only=#false`, with the dangers their `allow=` lets through.
    fn host_mounts(node: &KdlNode) -> Vec<HostMount> {
        children(node, "mount")
            .filter_map(|child| {
                Some(HostMount {
                    allow: prop_str(child, "allow")
                        .map(|a| crate::sandbox::parse_permissions(&a.value).0)
                        .unwrap_or_default(),
                    read_only: !matches!(
                        prop(child, "read-only").map(KdlEntry::value),
                        Some(KdlValue::Bool(false))
                    ),
                    source: str_arg(child, 0)?,
                    target: str_arg(child, 1)?,
                })
            })
            .collect()
    }

    /// `tmpfs "/target" size="…"` children of a container; a size of zero is an error
    /// (the engine would take it as "half the host's memory").
    fn tmpfs(&mut self, node: &KdlNode) -> Vec<Tmpfs> {
        let mut mounts = Vec::new();
        for child in children(node, "tmpfs") {
            let size = match prop(child, "size") {
                Some(entry) => match entry.value() {
                    KdlValue::String(s) => match units::parse_size(s) {
                        Some(0) => {
                            self.problems.push(DecodeError::InvalidValue {
                                help: Some("give a size such as `64MiB`".into()),
                                message: "a tmpfs cannot hold zero bytes".into(),
                                span: entry.span(),
                            });
                            continue;
                        }
                        Some(size) => size,
                        None => continue,
                    },
                    _ => continue,
                },
                None => DEFAULT_TMPFS_SIZE,
            };
            if let Some(target) = str_arg(child, 0) {
                mounts.push(Tmpfs { size, target });
            }
        }
        mounts
    }

    /// `env "NAME" "VALUE"` children; a name the shell could not use is an error.
    fn env(&mut self, node: &KdlNode) -> Vec<super::EnvVar> {
        let mut vars = Vec::new();
        for child in children(node, "env") {
            let (Some(name), Some(value)) = (str_arg(child, 0), str_arg(child, 1)) else {
                continue;
            };
            let mut chars = name.value.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid {
                vars.push((name, value));
            } else {
                self.problems.push(DecodeError::InvalidValue {
                    help: Some("use letters, digits and `_`, not starting with a digit".into()),
                    message: format!("`{}` is not a valid environment variable name", name.value),
                    span: name.span,
                });
            }
        }
        vars
    }

    /// `placement "LABEL" "VALUE"` children: a node label as the swarm writes one, and
    /// a value that a constraint can hold (no spaces, no `=` or `!`).
    fn placement(&mut self, node: &KdlNode) -> Vec<super::EnvVar> {
        let mut pairs = Vec::new();
        for child in children(node, "placement") {
            let (Some(label), Some(value)) = (str_arg(child, 0), str_arg(child, 1)) else {
                continue;
            };
            let label_ok = label
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            let value_ok = !value
                .value
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '=' | '!'));
            if !label_ok {
                self.problems.push(DecodeError::InvalidValue {
                    help: Some(
                        "use letters, digits, `.`, `-` and `_`, as in `gpu` or `com.example.zone`"
                            .into(),
                    ),
                    message: format!("`{}` is not a valid node label", label.value),
                    span: label.span,
                });
            } else if !value_ok {
                self.problems.push(DecodeError::InvalidValue {
                    help: Some("a label's value has no spaces, `=` or `!`".into()),
                    message: format!("`{}` cannot be a node label's value", value.value),
                    span: value.span,
                });
            } else {
                pairs.push((label, value));
            }
        }
        pairs
    }

    /// A task's `mcp` servers; a name given twice is an error.
    fn mcp_servers(&mut self, node: &KdlNode) -> Vec<McpServer> {
        let mut servers: Vec<McpServer> = Vec::new();
        for child in children(node, "mcp") {
            let (Some(name), Some(command)) = (str_arg(child, 0), str_arg(child, 1)) else {
                continue;
            };
            if let Some(first) = servers.iter().find(|s| s.name.value == name.value) {
                self.problems.push(DecodeError::Duplicate {
                    kind: "mcp server",
                    name: name.value.clone(),
                    span: name.span,
                    first: first.name.span,
                });
                continue;
            }
            servers.push(McpServer { command, name });
        }
        servers
    }

    fn decode_var(&mut self, node: &KdlNode) -> Option<Var> {
        let name = self.name(node, "var")?;
        let ty = match prop_str(node, "type").as_deref().map(String::as_str) {
            Some("bool") => VarType::Bool,
            Some("int") => VarType::Int,
            Some("path") => VarType::Path,
            _ => VarType::String,
        };
        let default = prop(node, "default").and_then(|entry| {
            let value = match (ty, entry.value()) {
                (VarType::Bool, KdlValue::Bool(b)) => VarValue::Bool(*b),
                (VarType::Int, KdlValue::Integer(n)) => VarValue::Int(i64::try_from(*n).ok()?),
                (VarType::Path | VarType::String, KdlValue::String(s)) => {
                    VarValue::String(s.clone())
                }
                _ => {
                    self.problems.push(DecodeError::InvalidValue {
                        help: Some("give a default of the var's `type=`".into()),
                        message: format!("the default of var `{}` is not of its type", name.value),
                        span: entry.span(),
                    });
                    return None;
                }
            };
            Some(Spanned::new(value, entry.span()))
        });
        let required = matches!(
            prop(node, "required").map(KdlEntry::value),
            Some(KdlValue::Bool(true))
        );
        Some(Var {
            default,
            name,
            required,
            ty,
        })
    }

    fn decode_model(&mut self, node: &KdlNode) -> Option<Model> {
        let name = self.name(node, "host")?;
        let owner = format!("model `{}`", name.value);
        let (gguf, replay) = (last_child(node, "gguf"), last_child(node, "replay"));
        let (source, default_image) = match (gguf, replay) {
            (Some(gguf), Some(replay)) => {
                self.conflict(
                    &owner,
                    [gguf, replay],
                    "a model either serves a GGUF file or replays a script: keep one",
                );
                return None;
            }
            (Some(gguf), None) => (ModelSource::Gguf(str_arg(gguf, 0)?), DEFAULT_MODEL_IMAGE),
            (None, Some(replay)) => {
                self.only_for_llama(node);
                (
                    ModelSource::Replay(str_arg(replay, 0)?),
                    DEFAULT_REPLAY_IMAGE,
                )
            }
            (None, None) => {
                self.problems.push(DecodeError::MissingChild {
                    child: "gguf` or `replay",
                    help: Some(
                        "say what it serves: `gguf \"models/model.gguf\"` or `replay \"session.jsonl\"`"
                            .into(),
                    ),
                    owner,
                    span: node.name().span(),
                });
                return None;
            }
        };
        Some(Model {
            alias: child_str(node, "alias"),
            args: children(node, "args").flat_map(strs).collect(),
            load_timeout: child_str(node, "load-timeout")
                .and_then(|t| units::parse_duration(&t.value)),
            sha256: gguf.or(replay).and_then(|g| prop_str(g, "sha256")),
            context: child_int(node, "context").map_or(DEFAULT_CONTEXT, |c| c.value),
            source,
            gpu_layers: child_int(node, "gpu-layers").map(|n| n.value),
            image: child_str(node, "image")
                .unwrap_or_else(|| Spanned::new(default_image.to_owned(), node.name().span())),
            name,
            network: child_str(node, "network")?,
            parallel: child_int(node, "parallel").map(|n| n.value),
            placement: self.placement(node),
            threads: child_int(node, "threads").map(|n| n.value),
        })
    }

    /// Two children of `owner` that exclude each other: both are labelled, in the
    /// order they are written.
    fn conflict(&mut self, owner: &str, [a, b]: [&KdlNode; 2], help: &'static str) {
        let (first, second) = if a.span().offset() < b.span().offset() {
            (a, b)
        } else {
            (b, a)
        };
        self.problems.push(DecodeError::KindConflict {
            first: first.name().span(),
            help,
            kinds: format!("{}` and `{}", first.name().value(), second.name().value()),
            owner: owner.to_owned(),
            span: second.name().span(),
        });
    }

    /// A replayed model's children that only `llama-server` understands are mistakes.
    fn only_for_llama(&mut self, node: &KdlNode) {
        for what in ["context", "threads", "parallel", "gpu-layers", "args"] {
            for child in children(node, what) {
                self.problems.push(DecodeError::InvalidValue {
                    help: Some(format!(
                        "`{what}` sets up `llama-server`, which a replayed model does not run; remove it"
                    )),
                    message: format!("`{what}` has no meaning for a model that replays a script"),
                    span: child.name().span(),
                });
            }
        }
    }

    fn decode_container(&mut self, node: &KdlNode) -> Option<Container> {
        let name = self.name(node, "host")?;
        let limits = last_child(node, "limits").map_or_else(Limits::default, |l| Limits {
            cpus: prop_int(l, "cpus"),
            memory: prop_str(l, "memory").and_then(|m| units::parse_size(&m.value)),
            pids: prop_int(l, "pids"),
        });
        let health = self.health(node);
        let env = self.env(node);
        let tmpfs = self.tmpfs(node);
        Some(Container {
            env,
            health,
            image: child_str(node, "image")?,
            limits,
            mounts: Self::host_mounts(node),
            name,
            networks: children(node, "network")
                .filter_map(|n| Some((str_arg(n, 0)?, prop_str(n, "alias"))))
                .collect(),
            placement: self.placement(node),
            read_only_root: child_bool(node, "read-only-root"),
            tmpfs,
            user: child_str(node, "user"),
            volumes: Self::volume_mounts(node),
            workdir: child_str(node, "workdir"),
            workspace: child_str(node, "workspace"),
            workspace_allow: last_child(node, "workspace")
                .and_then(|w| prop_str(w, "allow"))
                .map(|a| crate::sandbox::parse_permissions(&a.value).0)
                .unwrap_or_default(),
            workspace_read_only: last_child(node, "workspace")
                .is_some_and(|w| prop_bool(w, "read-only")),
        })
    }

    /// `what`, written at `span` on a `run` task, belongs to agent tasks.
    fn agent_only(&mut self, span: Option<SourceSpan>, what: &str) {
        if let Some(span) = span {
            self.problems.push(DecodeError::InvalidValue {
                help: Some(format!("`{what}` belongs to agent tasks; remove it")),
                message: format!("`{what}` has no meaning for a `run` task"),
                span,
            });
        }
    }

    fn decode_task(&mut self, node: &KdlNode) -> Option<Task> {
        let name = self.name(node, "task");
        let mut after: Vec<Spanned<String>> = prop_str(node, "after").into_iter().collect();
        after.extend(children(node, "after").flat_map(strs));
        let agent = last_child(node, "agent");
        let run = last_child(node, "run");
        let prompt = child_str(node, "prompt");
        let check = child_str(node, "check");
        let retries = last_child(node, "check").and_then(|c| prop_int(c, "retries"));
        let max_steps = child_int(node, "max-steps");
        let max_tokens = child_int(node, "max-tokens");
        let self_test = last_child(node, "self-test");
        let mcp = self.mcp_servers(node);
        let owner = format!("task `{}`", name.as_ref().map_or("?", |n| n.value.as_str()));
        let kind = match (agent, run) {
            (Some(agent), Some(run)) => {
                self.conflict(
                    &owner,
                    [agent, run],
                    "a task either runs an agent or runs a command: split it into two tasks",
                );
                None
            }
            (Some(agent), None) => {
                let model = prop_str(agent, "model");
                if prop(agent, "model").is_none() {
                    self.problems.push(DecodeError::MissingArgument {
                        expected: "a `model=` property".into(),
                        help: Some(
                            "name the model the agent talks to: `agent \"box\" model=\"coder\"`"
                                .into(),
                        ),
                        node: "agent".into(),
                        span: agent.span(),
                    });
                }
                if prompt.is_none() {
                    self.problems.push(DecodeError::MissingChild {
                        child: "prompt",
                        help: Some(
                            "tell the agent what to do: `prompt \"Make the tests pass\"`".into(),
                        ),
                        owner,
                        span: node.name().span(),
                    });
                }
                Some(TaskKind::Agent {
                    check,
                    container: str_arg(agent, 0)?,
                    max_steps: max_steps.map_or(DEFAULT_MAX_STEPS, |m| m.value),
                    max_tokens: max_tokens.map_or(DEFAULT_MAX_TOKENS, |m| m.value),
                    mcp,
                    model: model?,
                    prompt: prompt?,
                    self_test: !child_is_false(node, "self-test"),
                    retries: retries.unwrap_or(0),
                })
            }
            (None, Some(run)) => {
                for (span, what) in [
                    (prompt.map(|p| p.span), "prompt"),
                    (check.map(|c| c.span), "check"),
                    (max_steps.map(|m| m.span), "max-steps"),
                    (max_tokens.map(|m| m.span), "max-tokens"),
                    (self_test.map(KdlNode::span), "self-test"),
                    (children(node, "mcp").next().map(KdlNode::span), "mcp"),
                ] {
                    self.agent_only(span, what);
                }
                Some(TaskKind::Run {
                    command: str_arg(run, 1)?,
                    container: str_arg(run, 0)?,
                })
            }
            (None, None) => {
                self.problems.push(DecodeError::MissingChild {
                    child: "agent` or `run",
                    help: Some(
                        "say what the task does: `agent \"box\" model=\"coder\"` or `run \"box\" \"make test\"`"
                            .into(),
                    ),
                    owner,
                    span: node.name().span(),
                });
                None
            }
        };
        let env = self.env(node);
        Some(Task {
            after,
            continue_on_error: child_bool(node, "continue-on-error"),
            env,
            kind: kind?,
            name: name?,
            timeout: child_str(node, "timeout").and_then(|t| units::parse_duration(&t.value)),
        })
    }
}

fn positional(node: &KdlNode) -> impl Iterator<Item = &KdlEntry> {
    node.entries().iter().filter(|e| e.name().is_none())
}

fn as_str(entry: &KdlEntry) -> Option<Spanned<String>> {
    match entry.value() {
        KdlValue::String(s) => Some(Spanned::new(s.clone(), entry.span())),
        _ => None,
    }
}

/// The `i`th positional argument, if it is a string.
fn str_arg(node: &KdlNode, i: usize) -> Option<Spanned<String>> {
    positional(node).nth(i).and_then(as_str)
}

/// A `matrix` node: its var and its values, each as the text a `--var` would give.
fn matrix_axis(node: &KdlNode) -> Option<(Spanned<String>, Vec<Spanned<String>>)> {
    let var = str_arg(node, 0)?;
    let values = positional(node)
        .skip(1)
        .filter_map(|entry| {
            let text = match entry.value() {
                KdlValue::String(s) => s.clone(),
                KdlValue::Integer(n) => n.to_string(),
                KdlValue::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some(Spanned::new(text, entry.span()))
        })
        .collect();
    Some((var, values))
}

/// Every positional string argument.
fn strs(node: &KdlNode) -> Vec<Spanned<String>> {
    positional(node).filter_map(as_str).collect()
}

/// Property `name`; given twice, the last one (as the KDL spec says).
fn prop<'n>(node: &'n KdlNode, name: &str) -> Option<&'n KdlEntry> {
    node.entries()
        .iter()
        .rev()
        .find(|e| e.name().is_some_and(|n| n.value() == name))
}

fn prop_str(node: &KdlNode, name: &str) -> Option<Spanned<String>> {
    prop(node, name).and_then(as_str)
}

fn prop_bool(node: &KdlNode, name: &str) -> bool {
    prop(node, name).is_some_and(|e| matches!(e.value(), KdlValue::Bool(true)))
}

fn prop_int(node: &KdlNode, name: &str) -> Option<u32> {
    match prop(node, name)?.value() {
        KdlValue::Integer(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}

fn children<'n>(node: &'n KdlNode, name: &'n str) -> impl Iterator<Item = &'n KdlNode> {
    node.children()
        .into_iter()
        .flat_map(KdlDocument::nodes)
        .filter(move |c| c.name().value() == name)
}

/// The last child called `name`: a repeated child overrides the earlier ones.
fn last_child<'n>(node: &'n KdlNode, name: &'n str) -> Option<&'n KdlNode> {
    children(node, name).last()
}

fn child_str(node: &KdlNode, name: &str) -> Option<Spanned<String>> {
    last_child(node, name).and_then(|c| str_arg(c, 0))
}

/// A leaf child such as `read-only-root #true`; absent means `#false`.
fn child_bool(node: &KdlNode, name: &str) -> bool {
    last_child(node, name)
        .and_then(|c| positional(c).next())
        .is_some_and(|e| matches!(e.value(), KdlValue::Bool(true)))
}

/// Whether child `name` is there and says `#false`.
fn child_is_false(node: &KdlNode, name: &str) -> bool {
    last_child(node, name)
        .and_then(|c| positional(c).next())
        .is_some_and(|e| matches!(e.value(), KdlValue::Bool(false)))
}

fn child_int(node: &KdlNode, name: &str) -> Option<Spanned<u32>> {
    let entry = positional(last_child(node, name)?).next()?;
    match entry.value() {
        KdlValue::Integer(n) => Some(Spanned::new(u32::try_from(*n).ok()?, entry.span())),
        _ => None,
    }
}

/// The known name closest to `name`, if it is close enough to be a typo: at most two
/// edits, and fewer for short names, so that `zz` does not suggest `s`.
pub fn closest<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let limit = (name.chars().count() / 3).clamp(1, 2);
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

/// Moves every span of a document parsed on its own to where its file starts in the
/// playbook's shared offset space.
fn shift_document(doc: &mut KdlDocument, base: usize) {
    let moved = |span: SourceSpan| SourceSpan::new((span.offset() + base).into(), span.len());
    doc.set_span(moved(doc.span()));
    for node in doc.nodes_mut() {
        node.set_span(moved(node.span()));
        let name = node.name_mut();
        name.set_span(moved(name.span()));
        if let Some(ty) = node.ty_mut() {
            ty.set_span(moved(ty.span()));
        }
        for entry in node.entries_mut() {
            entry.set_span(moved(entry.span()));
            if let Some(name) = entry.name_mut() {
                name.set_span(moved(name.span()));
            }
        }
        if let Some(children) = node.children_mut() {
            shift_document(children, base);
        }
    }
}

/// The problems of a text that is not valid KDL v2.
pub(super) fn syntax_error(text: &str, base: usize, diag: kdl::KdlDiagnostic) -> DecodeError {
    let start = diag.span.offset();
    let word: String = text
        .get(start..)
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    // KDL v1 wrote keywords bare and raw strings as `r"…"`; v2 needs the `#`.
    let v1_habit = if matches!(word.as_str(), "true" | "false" | "null") {
        Some(format!("KDL v2 writes this keyword with a `#`: `#{word}`"))
    } else if word == "r"
        && text
            .get(start + 1..start + 2)
            .is_some_and(|c| c == "\"" || c == "#")
    {
        Some("KDL v2 writes raw strings as `#\"…\"#`, without the `r`".to_owned())
    } else {
        None
    };
    DecodeError::Syntax {
        help: v1_habit.or(diag.help),
        label: diag.label.unwrap_or_else(|| "here".into()),
        message: diag
            .message
            .unwrap_or_else(|| "this is not valid KDL v2".into()),
        span: SourceSpan::new((diag.span.offset() + base).into(), diag.span.len()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::sandbox::Permission;

    fn decode(text: &str) -> Result<Playbook, Vec<DecodeError>> {
        let source = Source::from_text(Path::new("t.kdl"), PathBuf::from("/p"), text.to_owned());
        Decoder::new(&source)
            .decode()
            .map(|d| d.playbook)
            .map_err(|f| f.errors)
    }

    /// The span of the `nth` occurrence of `needle` in `text`.
    fn span_of(text: &str, needle: &str, nth: usize) -> SourceSpan {
        let offset = text.match_indices(needle).nth(nth).expect("needle").0;
        (offset, needle.len()).into()
    }

    /// Decodes `text` and expects exactly one error; returns it.
    #[track_caller]
    fn one_error(text: &str) -> DecodeError {
        let mut errors = decode(text).expect_err("should fail");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.remove(0)
    }

    /// One error of this kind, with a label on the `nth` occurrence of `needle`.
    macro_rules! error {
        ($name:ident, $text:expr, $pattern:pat, $needle:expr) => {
            error!($name, $text, $pattern, $needle, 0);
        };
        ($name:ident, $text:expr, $pattern:pat, $needle:expr, $nth:expr) => {
            #[test]
            fn $name() {
                let text = $text;
                let error = one_error(text);
                assert!(matches!(error, $pattern), "{error:#?}");
                let labels: Vec<SourceSpan> = miette::Diagnostic::labels(&error)
                    .expect("labels")
                    .map(|l| *l.inner())
                    .collect();
                assert!(labels.contains(&span_of(text, $needle, $nth)), "{error:#?}");
            }
        };
    }

    #[test]
    fn a_whole_playbook_with_defaults_filled_in() {
        let playbook = decode(
            r#"playbook "demo" {
    description "d"
}
network "n"
model "m" {
    gguf "m.gguf"
    network "n"
    args "--flag" "x"
}
container "c" {
    image "img"
    network "n"
    workspace "."
}
task "a" {
    agent "c" model="m"
    prompt "go"
}
task "b" after="a" {
    run "c" "make"
    after "a"
}
"#,
        )
        .expect("decodes");
        assert_eq!(playbook.name, "demo");
        assert_eq!(playbook.description.as_deref(), Some("d"));
        let model = &playbook.models[0];
        assert_eq!(model.context, DEFAULT_CONTEXT);
        assert_eq!(model.image.value, DEFAULT_MODEL_IMAGE);
        let args: Vec<&str> = model.args.iter().map(|a| a.value.as_str()).collect();
        assert_eq!(args, ["--flag", "x"]);
        assert_eq!(
            playbook.containers[0]
                .workspace
                .as_ref()
                .map(|w| w.value.as_str()),
            Some(".")
        );
        match &playbook.tasks[0].kind {
            TaskKind::Agent {
                max_steps,
                model,
                prompt,
                self_test,
                ..
            } => {
                assert_eq!(*max_steps, DEFAULT_MAX_STEPS);
                assert_eq!(model.value, "m");
                assert_eq!(prompt.value, "go");
                assert!(
                    *self_test,
                    "the self-test is on unless the task says `#false`"
                );
            }
            TaskKind::Run { .. } => panic!("an agent task"),
        }
        let after: Vec<&str> = playbook.tasks[1]
            .after
            .iter()
            .map(|a| a.value.as_str())
            .collect();
        assert_eq!(after, ["a", "a"]);
    }

    #[test]
    fn self_test_false_turns_the_self_test_off() {
        let self_test = |line: &str| {
            let playbook = decode(&format!(
                "task \"t\" {{\n    agent \"c\" model=\"m\"\n    prompt \"go\"\n    {line}\n}}"
            ))
            .expect("decodes");
            match &playbook.tasks[0].kind {
                TaskKind::Agent { self_test, .. } => *self_test,
                TaskKind::Run { .. } => panic!("an agent task"),
            }
        };
        assert!(!self_test("self-test #false"));
        assert!(self_test("self-test #true"));
    }

    error!(
        a_model_needs_a_network,
        "model \"m\" {\n    gguf \"x\"\n}",
        DecodeError::MissingChild {
            child: "network",
            ..
        },
        "model"
    );

    error!(
        an_env_name_the_shell_cannot_use,
        "container \"c\" {\n    image \"i\"\n    env \"1BAD\" \"x\"\n}",
        DecodeError::InvalidValue { .. },
        "\"1BAD\""
    );
    error!(
        a_timeout_that_is_not_a_duration,
        "task \"t\" {\n    run \"c\" \"x\"\n    timeout \"soon\"\n}",
        DecodeError::InvalidValue { .. },
        "\"soon\""
    );
    error!(
        a_memory_limit_that_is_not_a_size,
        "container \"c\" {\n    image \"i\"\n    limits memory=\"lots\"\n}",
        DecodeError::InvalidValue { .. },
        "memory=\"lots\""
    );
    error!(
        a_var_type_that_does_not_exist,
        "var \"v\" type=\"float\"",
        DecodeError::InvalidValue { .. },
        "type=\"float\""
    );

    #[test]
    fn a_property_given_twice_warns_and_the_last_wins() {
        let text = "network \"n\" egress=#true egress=#false";
        let source = Source::from_text(Path::new("t.kdl"), PathBuf::from("/p"), text.to_owned());
        let decoded = Decoder::new(&source).decode().expect("decodes");
        assert_eq!(
            decoded.playbook.networks[0]
                .egress
                .as_ref()
                .map(|e| e.value),
            Some(false)
        );
        let [DecodeError::Overridden { first, span, .. }] = &decoded.warnings[..] else {
            panic!("{:#?}", decoded.warnings)
        };
        assert_eq!(*first, span_of(text, "egress=#true", 0));
        assert_eq!(*span, span_of(text, "egress=#false", 0));
    }

    #[test]
    fn mounts_are_read_only_unless_they_say_so_and_tmpfs_has_a_size() {
        let playbook = decode(
            r#"container "c" {
    image "i"
    mount "a" "/a"
    mount "b" "/b" read-only=#false allow="outside-project home, home"
    tmpfs "/t"
    tmpfs "/u" size="1MiB"
    read-only-root #true
}
container "d" {
    image "i"
}"#,
        )
        .expect("decodes");
        let c = &playbook.containers[0];
        let mounts: Vec<(&str, &str, bool, &[Permission])> = c
            .mounts
            .iter()
            .map(|m| {
                (
                    m.source.value.as_str(),
                    m.target.value.as_str(),
                    m.read_only,
                    m.allow.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            mounts,
            [
                ("a", "/a", true, &[][..]),
                (
                    "b",
                    "/b",
                    false,
                    &[Permission::Home, Permission::OutsideProject][..]
                )
            ]
        );
        let tmpfs: Vec<(&str, u64)> = c
            .tmpfs
            .iter()
            .map(|t| (t.target.value.as_str(), t.size))
            .collect();
        assert_eq!(tmpfs, [("/t", DEFAULT_TMPFS_SIZE), ("/u", 1 << 20)]);
        assert!(c.read_only_root);
        assert!(!playbook.containers[1].read_only_root);
    }

    error!(
        an_unknown_permission,
        "container \"c\" {\n    image \"i\"\n    mount \"a\" \"/a\" allow=\"home sytem\"\n}",
        DecodeError::InvalidValue { .. },
        "allow=\"home sytem\""
    );
    error!(
        an_empty_allow,
        "container \"c\" {\n    image \"i\"\n    mount \"a\" \"/a\" allow=\" \"\n}",
        DecodeError::InvalidValue { .. },
        "allow=\" \""
    );
    error!(
        a_tmpfs_of_zero_bytes,
        "container \"c\" {\n    image \"i\"\n    tmpfs \"/t\" size=\"0\"\n}",
        DecodeError::InvalidValue { .. },
        "size=\"0\""
    );

    #[test]
    fn the_name_defaults_to_the_file_stem() {
        assert_eq!(decode("network \"n\"").expect("decodes").name, "t");
    }

    #[test]
    fn crlf_line_endings_never_reach_a_value() {
        let text = "container \"c\" {\r\n    image \"i\"\r\n}\r\ntask \"t\" {\r\n    run \"c\" \"\"\"\r\n        echo a\r\n        echo b\r\n        \"\"\"\r\n}\r\n";
        let playbook = decode(text).expect("decodes");
        let TaskKind::Run { command, .. } = &playbook.tasks[0].kind else {
            panic!("a run task")
        };
        assert_eq!(command.value, "echo a\necho b");
    }

    error!(
        unknown_top_level_node,
        "netwrk \"n\"",
        DecodeError::UnknownNode { .. },
        "netwrk"
    );
    error!(
        unknown_property_on_a_network,
        "network \"n\" egres=#true",
        DecodeError::UnknownProperty { .. },
        "egres=#true"
    );
    error!(
        context_must_be_an_integer,
        "model \"m\" {\n    gguf \"x\"\n    network \"n\"\n    context \"big\"\n}",
        DecodeError::WrongType {
            expected: "an integer",
            ..
        },
        "\"big\""
    );
    error!(
        context_out_of_range,
        "model \"m\" {\n    gguf \"x\"\n    network \"n\"\n    context 0\n}",
        DecodeError::InvalidValue { .. },
        "0"
    );
    error!(
        a_second_image_argument,
        "container \"c\" {\n    image \"a\" \"b\"\n}",
        DecodeError::ExtraArgument { .. },
        "\"b\""
    );
    error!(
        a_duplicate_labels_the_second_definition,
        "network \"n\"\nnetwork \"n\"",
        DecodeError::Duplicate { .. },
        "\"n\"",
        1
    );
    error!(
        a_run_task_needs_a_command,
        "task \"t\" {\n    run \"c\"\n}",
        DecodeError::MissingArgument { .. },
        "run"
    );
    error!(
        a_task_cannot_be_both_kinds,
        "task \"t\" {\n    run \"c\" \"x\"\n    agent \"c\" model=\"m\"\n}",
        DecodeError::KindConflict { .. },
        "agent"
    );
    error!(
        a_model_cannot_both_serve_a_file_and_replay,
        "model \"m\" {\n    gguf \"a.gguf\"\n    network \"n\"\n    replay \"s.jsonl\"\n}",
        DecodeError::KindConflict { .. },
        "replay"
    );
    error!(
        a_model_needs_something_to_serve,
        "model \"m\" {\n    network \"n\"\n}",
        DecodeError::MissingChild {
            child: "gguf` or `replay",
            ..
        },
        "model"
    );
    error!(
        a_replayed_model_has_no_llama_settings,
        "model \"m\" {\n    replay \"s.jsonl\"\n    network \"n\"\n    context 512\n}",
        DecodeError::InvalidValue { .. },
        "context"
    );

    #[test]
    fn a_replayed_model_runs_in_the_agent_image_unless_it_names_one() {
        let playbook = decode(
            "model \"a\" {\n    replay \"s.jsonl\" sha256=\"x\"\n    network \"n\"\n}\nmodel \"b\" {\n    replay \"t.jsonl\"\n    network \"n\"\n    image \"mine\"\n}",
        )
        .expect("decodes");
        let [a, b] = &playbook.models[..] else {
            panic!("two models")
        };
        assert!(matches!(&a.source, ModelSource::Replay(path) if path.value == "s.jsonl"));
        assert_eq!(a.sha256.as_ref().map(|s| s.value.as_str()), Some("x"));
        assert_eq!(
            (a.image.value.as_str(), b.image.value.as_str()),
            (DEFAULT_REPLAY_IMAGE, "mine")
        );
    }

    error!(
        a_task_needs_a_kind,
        "task \"t\" {\n    prompt \"p\"\n}",
        DecodeError::MissingChild { .. },
        "task"
    );
    error!(
        names_are_restricted,
        "network \"a b\"",
        DecodeError::InvalidValue { .. },
        "\"a b\""
    );
    error!(
        prompt_means_nothing_for_a_run_task,
        "task \"t\" {\n    run \"c\" \"x\"\n    prompt \"p\"\n}",
        DecodeError::InvalidValue { .. },
        "\"p\""
    );
    error!(
        a_bare_keyword_is_a_kdl_v1_habit,
        "network \"n\" egress=true",
        DecodeError::Syntax { help: Some(_), .. },
        "true"
    );

    #[test]
    fn duplicate_points_at_both_places() {
        let text = "container \"x\" {\n    image \"i\"\n}\nmodel \"x\" {\n    gguf \"g\"\n    network \"n\"\n}";
        let DecodeError::Duplicate { span, first, .. } = one_error(text) else {
            panic!("a duplicate")
        };
        assert_eq!(first, span_of(text, "\"x\"", 0));
        assert_eq!(span, span_of(text, "\"x\"", 1));
    }
}
