//! Playbook + graph → [`Plan`]: the steps `apply` takes, in order, and the teardown after
//! them. Paths are resolved and checked here (on the host, touching nothing), so a plan
//! that prints is a plan that can run. `Display` is the output of `openmono plan`.

use std::{
    collections::HashMap,
    fmt,
    io::Read,
    path::{Component, Path, PathBuf},
};

use miette::SourceSpan;

use crate::{
    GraphError, PlanError,
    graph::{self, Resource},
    playbook::{
        Container, DEFAULT_TMPFS_SIZE, EnvVar, HostMount, Model, ModelSource, Playbook, Problems,
        Spanned, TaskKind,
    },
    sandbox::{self, Permission},
    step::{
        Bind, DEFAULT_TASK_TIMEOUT, MODEL_PORT, SELF_DIR, Step, TaskSettings, Teardown, TmpfsMount,
        WORKSPACE, human_bytes,
    },
};

/// What `apply` will do; serialized into plan files (`plan --out`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The playbook's `description`, if it has one.
    pub description: Option<String>,
    /// The playbook's `version`, if it has one.
    pub version: Option<String>,
    /// The playbook's name, for labels and reports.
    pub playbook: String,
    /// The playbook file as the user named it (a plan file records it apart).
    #[serde(skip)]
    pub source: PathBuf,
    pub steps: Vec<Step>,
    /// For each step, the earlier steps it waits for (indices into `steps`); the others
    /// may run at the same time.
    pub needs: Vec<Vec<usize>>,
    /// The memory models will have, and where that number comes from, when known: a
    /// model that needs more gets a warning.
    #[serde(skip)]
    pub memory: Option<(u64, &'static str)>,
    /// The engine `apply` will use and why, when `plan` was asked for it.
    #[serde(skip)]
    pub engine: Option<String>,
    /// The playbook's matrix vars that nothing gave, with their values: the plan is for
    /// their first values.
    #[serde(skip)]
    pub matrix: Vec<(String, Vec<String>)>,
    pub teardown: Vec<Teardown>,
}

/// Why a plan could not be made; each carries all problems of its stage.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanningError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Problems(Problems),
}

impl Plan {
    /// The images the run builds itself (absent from the engine until their step).
    pub fn built_images(&self) -> Vec<&String> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::BuildImage { reference, .. } => Some(reference),
                _ => None,
            })
            .collect()
    }

    /// The node labels that a run's node must have on a swarm: every step's `placement`
    /// (a run stays on one node).
    pub fn placement(&self) -> Vec<(String, String)> {
        self.steps
            .iter()
            .flat_map(|step| step.placement().iter().cloned())
            .collect()
    }

    /// The images the engine must have before the run: those of its containers, models
    /// and replay servers that it does not build itself; each once, in order.
    pub fn engine_images(&self) -> Vec<&String> {
        let built = self.built_images();
        let mut images: Vec<&String> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::StartContainer { image, .. }
                | Step::StartModel { image, .. }
                | Step::StartReplay { image, .. } => Some(image),
                _ => None,
            })
            .filter(|image| !built.contains(image))
            .collect();
        images.sort();
        images.dedup();
        images
    }

    /// Orders and resolves a decoded playbook.
    pub fn new(playbook: &Playbook) -> Result<Self, PlanningError> {
        let src = || playbook.source.named();
        let graph = graph::build(playbook)
            .map_err(|e: Vec<GraphError>| PlanningError::Problems(Problems::new(src(), e)))?;
        let mut errors = Vec::new();
        let mut steps = Vec::new();
        let mut step_of: HashMap<Resource, usize> = HashMap::new();
        for resource in &graph.order {
            if let Some(step) = step_for(playbook, *resource, &mut errors) {
                step_of.insert(*resource, steps.len());
                steps.push(step);
            }
        }
        let needs = graph
            .order
            .iter()
            .filter(|r| step_of.contains_key(r))
            .map(|r| {
                let mut needs: Vec<usize> = graph
                    .needs(*r)
                    .filter_map(|n| step_of.get(&n).copied())
                    .collect();
                needs.sort_unstable();
                needs.dedup();
                needs
            })
            .collect();
        if !errors.is_empty() {
            return Err(PlanningError::Problems(Problems::new(src(), errors)));
        }
        let mut teardown: Vec<Teardown> = steps
            .iter()
            .rev()
            .filter_map(|s| match s {
                Step::StartContainer { name, .. }
                | Step::StartModel { name, .. }
                | Step::StartReplay { name, .. } => {
                    Some(Teardown::RemoveContainer { name: name.clone() })
                }
                _ => None,
            })
            .collect();
        teardown.extend(steps.iter().rev().filter_map(|s| match s {
            Step::CreateVolume { keep: false, name } => {
                Some(Teardown::RemoveVolume { name: name.clone() })
            }
            _ => None,
        }));
        teardown.extend(steps.iter().rev().filter_map(|s| match s {
            Step::CreateNetwork { name, .. } => {
                Some(Teardown::RemoveNetwork { name: name.clone() })
            }
            _ => None,
        }));
        Ok(Self {
            description: playbook.description.clone(),
            playbook: playbook.name.clone(),
            source: playbook.source.path.clone(),
            memory: None,
            engine: None,
            matrix: Vec::new(),
            steps,
            needs,
            teardown,
            version: playbook.version.clone(),
        })
    }
}

fn step_for(p: &Playbook, resource: Resource, errors: &mut Vec<PlanError>) -> Option<Step> {
    Some(match resource {
        Resource::Image(i) => image_step(p, i, errors)?,
        Resource::Volume(i) => Step::CreateVolume {
            keep: p.volumes[i].keep,
            name: p.volumes[i].name.value.clone(),
        },
        Resource::Network(i) => Step::CreateNetwork {
            egress: p.networks[i].egress.as_ref().is_some_and(|e| e.value),
            name: p.networks[i].name.value.clone(),
        },
        Resource::Model(i) => model_step(p, i, errors)?,
        Resource::Container(i) => container_step(p, i, errors)?,
        Resource::ModelReady(m, c) => {
            let model = &p.models[m].name.value;
            Step::WaitModel {
                from: p.containers[c].name.value.clone(),
                model: model.clone(),
                timeout: p.models[m].load_timeout,
                url: model_url(model),
            }
        }
        Resource::Task(i) => {
            let t = &p.tasks[i];
            let settings = TaskSettings {
                continue_on_error: t.continue_on_error,
                env: pairs(&t.env),
                timeout: Some(t.timeout.unwrap_or(DEFAULT_TASK_TIMEOUT)),
            };
            match &t.kind {
                TaskKind::Agent {
                    check,
                    container,
                    max_steps,
                    max_tokens,
                    mcp,
                    model,
                    prompt,
                    self_test,
                    retries,
                } => Step::AgentTask {
                    check: check.as_ref().map(|c| c.value.clone()),
                    container: container.value.clone(),
                    max_steps: *max_steps,
                    max_tokens: *max_tokens,
                    mcp: mcp
                        .iter()
                        .map(|s| (s.name.value.clone(), s.command.value.clone()))
                        .collect(),
                    model: model.value.clone(),
                    model_url: model_url(&model.value),
                    served_model: p
                        .models
                        .iter()
                        .find(|m| m.name.value == model.value)
                        .map_or_else(|| model.value.clone(), |m| m.served_name().to_owned()),
                    prompt: prompt.value.clone(),
                    self_test: *self_test,
                    retries: *retries,
                    settings,
                    task: t.name.value.clone(),
                },
                TaskKind::Run { command, container } => Step::RunTask {
                    command: command.value.clone(),
                    container: container.value.clone(),
                    settings,
                    task: t.name.value.clone(),
                },
            }
        }
    })
}

/// What in a writable workspace stays read-only: the playbook's own files (it is read
/// once, before the run, but the next run would read what the box wrote) and git's hooks
/// and config (which run code on the host at the next commit). Paths relative to the
/// workspace, for those that exist and lie inside it.
fn protected_paths(p: &Playbook, workspace: &Path) -> Vec<String> {
    let sources = std::iter::once(p.source.path.clone()).chain(
        p.source
            .included
            .iter()
            .filter_map(|f| Some(f.dir.join(f.path.file_name()?))),
    );
    let git = [".git/hooks", ".git/config"].map(|g| workspace.join(g));
    let mut protected: Vec<String> = sources
        .chain(git)
        .filter_map(|path| {
            let path = std::fs::canonicalize(path).ok()?;
            let relative = path.strip_prefix(workspace).ok()?;
            (!relative.as_os_str().is_empty()).then(|| relative.display().to_string())
        })
        .collect();
    protected.sort();
    protected.dedup();
    protected
}

/// A task container, with its workspace and mounts resolved and judged on the host.
fn container_step(p: &Playbook, i: usize, errors: &mut Vec<PlanError>) -> Option<Step> {
    let c = &p.containers[i];
    let before = errors.len();
    // Resolving the host's sockets, home and project takes a dozen system calls: only
    // for a container that mounts something.
    let host = (c.workspace.is_some() || !c.mounts.is_empty()).then(sandbox::Host::current);
    let project = std::fs::canonicalize(&p.source.dir).unwrap_or_else(|_| p.source.dir.clone());
    let (workspace, workspace_allowed) = match (&c.workspace, &host) {
        (Some(w), Some(host)) => workspace(p, c, w, &project, host, errors)
            .map_or((None, Vec::new()), |(w, allowed)| (Some(w), allowed)),
        _ => (None, Vec::new()),
    };
    check_targets(c, errors);
    let mounts: Vec<Bind> = host.as_ref().map_or_else(Vec::new, |host| {
        c.mounts
            .iter()
            .filter_map(|m| bind(p, m, &project, host, errors))
            .collect()
    });
    if errors.len() > before {
        return None;
    }
    let mut tmpfs: Vec<TmpfsMount> = c
        .tmpfs
        .iter()
        .map(|t| TmpfsMount {
            automatic: false,
            size: t.size,
            target: normal(&t.target),
        })
        .collect();
    let tmp_taken = c
        .volumes
        .iter()
        .map(|v| &v.target)
        .chain(c.mounts.iter().map(|m| &m.target))
        .chain(c.tmpfs.iter().map(|t| &t.target))
        .any(|t| normal(t) == "/tmp");
    if c.read_only_root && !tmp_taken {
        tmpfs.push(TmpfsMount {
            automatic: true,
            size: DEFAULT_TMPFS_SIZE,
            target: "/tmp".into(),
        });
    }
    let protected = match &workspace {
        Some((dir, false)) => protected_paths(p, dir),
        _ => Vec::new(),
    };
    Some(Step::StartContainer {
        env: pairs(&c.env),
        health: c.health.clone(),
        image: c.image.value.clone(),
        limits: c.limits,
        mounts,
        protected,
        name: c.name.value.clone(),
        networks: c
            .networks
            .iter()
            .map(|(n, alias)| (n.value.clone(), alias.as_ref().map(|a| a.value.clone())))
            .collect(),
        placement: pairs(&c.placement),
        read_only_root: c.read_only_root,
        tmpfs,
        user: c.user.as_ref().map(|u| u.value.clone()),
        volumes: c
            .volumes
            .iter()
            .map(|m| (m.volume.value.clone(), normal(&m.target), m.read_only))
            .collect(),
        workdir: c.workdir.as_ref().map(|w| w.value.clone()),
        workspace,
        workspace_allowed,
    })
}

/// A container's workspace, a folder judged by the mount policy, and the dangers its
/// `allow=` lets through.
fn workspace(
    p: &Playbook,
    c: &Container,
    w: &Spanned<String>,
    project: &Path,
    host: &sandbox::Host,
    errors: &mut Vec<PlanError>,
) -> Option<((PathBuf, bool), Vec<Permission>)> {
    let written = p.resolve(w);
    let path = match std::fs::canonicalize(&written) {
        Ok(path) if path.is_dir() => path,
        found => {
            errors.push(PlanError::WorkspaceMissing {
                path: w.value.clone(),
                reason: if found.is_ok() {
                    "not a folder"
                } else {
                    "does not exist"
                },
                span: w.span,
            });
            return None;
        }
    };
    let judged = HostSource {
        allow: &c.workspace_allow,
        source: w,
        workspace: Some(path == project),
    };
    // The workspace names the project the agent works on, so it is never outside it:
    // judged as its own project, it needs no `outside-project`.
    match judge(&judged, &written, &path, &path, host) {
        Ok((allowed, _)) => Some(((path, c.workspace_read_only), allowed)),
        Err(refused) => {
            errors.push(refused);
            None
        }
    }
}

/// Every target of a container's volumes, mounts and tmpfs, once templates are
/// rendered: absolute, not `/`, `/workspace` or in `/.openmono`, and no two at one place.
fn check_targets(c: &Container, errors: &mut Vec<PlanError>) {
    let mut seen: Vec<(String, SourceSpan)> = Vec::new();
    let targets = (c.volumes.iter().map(|v| ("a volume's", &v.target)))
        .chain(c.mounts.iter().map(|m| ("a mount's", &m.target)))
        .chain(c.tmpfs.iter().map(|t| ("a tmpfs's", &t.target)));
    for (kind, target) in targets {
        match normal_target(&target.value) {
            Err(why) => errors.push(PlanError::BadTarget {
                kind,
                span: target.span,
                target: target.value.clone(),
                why,
            }),
            Ok(path) => match seen.iter().find(|(p, _)| *p == path) {
                Some((_, first)) => errors.push(PlanError::TargetClash {
                    container: c.name.value.clone(),
                    first: *first,
                    span: target.span,
                    target: path,
                }),
                None => seen.push((path, target.span)),
            },
        }
    }
}

/// A target as the engine gets it: without `.`, doubled or trailing `/`. `Err` says
/// why it cannot be one.
fn normal_target(target: &str) -> Result<String, &'static str> {
    let path = Path::new(target);
    if !path.is_absolute() {
        return Err("is not an absolute path");
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("goes up with `..`");
    }
    let normal: PathBuf = path.components().collect();
    if normal == Path::new("/") {
        Err("would hide the container's whole filesystem")
    } else if normal == Path::new(WORKSPACE) {
        Err("is where the workspace goes")
    } else if normal.starts_with(SELF_DIR) {
        Err("is where openmono puts its own binary")
    } else {
        Ok(normal.to_string_lossy().into_owned())
    }
}

/// A target that [`check_targets`] passed, as the engine gets it.
fn normal(target: &Spanned<String>) -> String {
    normal_target(&target.value).unwrap_or_else(|_| target.value.clone())
}

/// A host mount whose source exists and whose dangers the playbook lets through.
fn bind(
    p: &Playbook,
    m: &HostMount,
    project: &Path,
    host: &sandbox::Host,
    errors: &mut Vec<PlanError>,
) -> Option<Bind> {
    let written = p.resolve(&m.source);
    // Never created: a missing source is a mistake, not a folder to make.
    let source = match std::fs::canonicalize(&written) {
        Ok(source) => source,
        Err(e) => {
            errors.push(PlanError::MountMissing {
                path: m.source.value.clone(),
                reason: if e.kind() == std::io::ErrorKind::NotFound {
                    "does not exist".to_owned()
                } else {
                    e.to_string()
                },
                span: m.source.span,
            });
            return None;
        }
    };
    let judged = HostSource {
        allow: &m.allow,
        source: &m.source,
        workspace: None,
    };
    let (allowed, unneeded) = match judge(&judged, &written, &source, project, host) {
        Ok(judged) => judged,
        Err(refused) => {
            errors.push(refused);
            return None;
        }
    };
    Some(Bind {
        allowed,
        read_only: m.read_only,
        source,
        target: normal(&m.target),
        unneeded,
    })
}

/// A host path a container gets, as the playbook wrote it: a `mount`'s source or the
/// workspace. Both are judged by the one policy of [`sandbox::dangers`].
struct HostSource<'a> {
    /// The dangers its `allow=` lets through.
    allow: &'a [Permission],
    source: &'a Spanned<String>,
    /// For the workspace, whether it is the playbook's own folder; none for a `mount`.
    workspace: Option<bool>,
}

/// The dangers of `source` (canonical: where `written` leads) that the playbook lets
/// through, and the permissions its `allow=` gave that are not needed; a refusal when
/// `allow=` does not grant them all.
fn judge(
    what: &HostSource<'_>,
    written: &Path,
    source: &Path,
    project: &Path,
    host: &sandbox::Host,
) -> Result<(Vec<Permission>, Vec<Permission>), PlanError> {
    let dangers = sandbox::dangers(source, project, host);
    if dangers.iter().any(|d| !what.allow.contains(&d.permission)) {
        return Err(refusal(what, written, source, &dangers));
    }
    let unneeded = what
        .allow
        .iter()
        .filter(|a| !dangers.iter().any(|d| d.permission == **a))
        .copied()
        .collect();
    Ok((dangers.iter().map(|d| d.permission).collect(), unneeded))
}

/// Why a mount or workspace is refused, and the `allow=` that would let it through:
/// the permissions its dangers need, no more.
fn refusal(
    what: &HostSource<'_>,
    written: &Path,
    source: &Path,
    dangers: &[sandbox::Danger],
) -> PlanError {
    let missing: Vec<&sandbox::Danger> = dangers
        .iter()
        .filter(|d| !what.allow.contains(&d.permission))
        .collect();
    let mut why = list(missing.iter().map(|d| d.why.as_str()), ", ", " and ");
    // A symlink is judged by where it leads: say where, so the refusal makes sense.
    if lexical(written) != source {
        why = format!("leads to `{}`, which {why}", source.display());
    }
    let names: Vec<&str> = dangers.iter().map(|d| d.permission.name()).collect();
    let node = if what.workspace.is_some() {
        "`workspace`"
    } else {
        "this mount"
    };
    let mut help = format!(
        "to mount it anyway, write `allow=\"{}\"` on {node}; the container then gets {}",
        names.join(" "),
        list(
            missing.iter().map(|d| d.permission.exposes()),
            "; ",
            "; and "
        )
    );
    // The playbook's own folder is dangerous: the playbook sits in the home folder or
    // in a hidden folder of it. The fix is a folder of its own, not a permission.
    if what.workspace == Some(true) {
        help = format!(
            "the workspace is the playbook's folder: better, move the playbook into a folder that holds the project alone; or {help}"
        );
    }
    let path = what.source.value.clone();
    let span = what.source.span;
    if what.workspace.is_some() {
        PlanError::WorkspaceRefused {
            help,
            path,
            span,
            why,
        }
    } else {
        PlanError::MountRefused {
            help,
            path,
            span,
            why,
        }
    }
}

impl Plan {
    /// Who can reach whom, one line a network and one for each box on none: the
    /// containers and models on a network reach each other by name, and nothing else
    /// unless the network lets traffic out.
    pub fn reachability(&self) -> Vec<String> {
        let mut on: Vec<(&str, bool, Vec<String>)> = Vec::new();
        let mut alone = Vec::new();
        for step in &self.steps {
            let (name, networks): (&str, Vec<&str>) = match step {
                Step::CreateNetwork { egress, name } => {
                    on.push((name, *egress, Vec::new()));
                    continue;
                }
                Step::StartContainer { name, networks, .. } => {
                    (name, networks.iter().map(|(n, _)| n.as_str()).collect())
                }
                Step::StartModel { name, network, .. }
                | Step::StartReplay { name, network, .. } => (name, vec![network.as_str()]),
                _ => continue,
            };
            if networks.is_empty() {
                alone.push(format!(
                    "`{name}` is on no network: it reaches nothing, and nothing reaches it"
                ));
            }
            for network in networks {
                if let Some((_, _, members)) = on.iter_mut().find(|(n, _, _)| *n == network) {
                    members.push(format!("`{name}`"));
                }
            }
        }
        let mut lines: Vec<String> = on
            .into_iter()
            .map(|(network, egress, members)| {
                let who = list(members.iter().map(String::as_str), ", ", " and ");
                match (members.len(), egress) {
                    (0, _) => format!("`{network}`: no one is on it"),
                    (1, false) => format!(
                        "`{network}`: only {who}; through it, no one: not the host, the LAN or the internet"
                    ),
                    (1, true) => format!(
                        "`{network}`: only {who}; through it (egress), the host, the LAN and the internet"
                    ),
                    (_, false) => format!(
                        "`{network}`: {who} reach each other by name, and nothing else: not the host, the LAN or the internet"
                    ),
                    (_, true) => format!(
                        "`{network}`: {who} reach each other by name and, through it (egress), the host, the LAN and the internet"
                    ),
                }
            })
            .collect();
        lines.extend(alone);
        lines
    }
}

/// The items with `between` between them, and `last` before the last one:
/// `a, b and c`.
fn list<'a>(items: impl Iterator<Item = &'a str>, between: &str, last: &str) -> String {
    let mut items: Vec<&str> = items.collect();
    match items.pop() {
        Some(final_item) if !items.is_empty() => {
            format!("{}{last}{final_item}", items.join(between))
        }
        final_item => final_item.unwrap_or_default().to_owned(),
    }
}

/// `path` with `.` and `..` taken out as written, without asking the filesystem.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// An image to build, its context and Dockerfile checked on the host.
fn image_step(p: &Playbook, i: usize, errors: &mut Vec<PlanError>) -> Option<Step> {
    let image = &p.images[i];
    let context = match std::fs::canonicalize(p.resolve(&image.context)) {
        Ok(dir) if dir.is_dir() => dir,
        _ => {
            errors.push(PlanError::ContextMissing {
                path: image.context.value.clone(),
                span: image.context.span,
            });
            return None;
        }
    };
    let dockerfile = image
        .dockerfile
        .as_ref()
        .map_or_else(|| "Dockerfile".to_owned(), |d| d.value.clone());
    if !context.join(&dockerfile).is_file() {
        errors.push(PlanError::DockerfileMissing {
            path: dockerfile,
            span: image
                .dockerfile
                .as_ref()
                .map_or(image.context.span, |d| d.span),
        });
        return None;
    }
    Some(Step::BuildImage {
        args: pairs(&image.args),
        context,
        dockerfile,
        reference: image.reference.value.clone(),
    })
}

/// A model's server, with its settings turned into `llama-server` arguments, or the
/// replay of a script.
fn model_step(p: &Playbook, i: usize, errors: &mut Vec<PlanError>) -> Option<Step> {
    let m = &p.models[i];
    let gguf = match &m.source {
        ModelSource::Gguf(gguf) => gguf,
        ModelSource::Replay(script) => return replay_step(p, m, script, errors),
    };
    let (gguf_path, gguf_bytes, info) = check_gguf(p, gguf, errors)?;
    if let Some(pin) = &m.sha256 {
        check_pin(&gguf_path, &gguf.value, pin, errors)?;
    }
    let gguf = gguf_path;
    let mut args = Vec::new();
    for (flag, value) in [
        ("--threads", m.threads),
        ("--parallel", m.parallel),
        ("--n-gpu-layers", m.gpu_layers),
    ] {
        if let Some(value) = value {
            args.extend([flag.to_owned(), value.to_string()]);
        }
    }
    args.extend(m.args.iter().map(|a| a.value.clone()));
    Some(Step::StartModel {
        alias: m.served_name().to_owned(),
        args,
        context: m.context,
        gguf,
        gguf_bytes,
        gpu: m.gpu_layers.is_some_and(|n| n > 0),
        info,
        parallel: m.parallel.unwrap_or(1),
        pinned: m.sha256.is_some(),
        image: m.image.value.clone(),
        jinja: p.tasks.iter().any(
            |t| matches!(&t.kind, TaskKind::Agent { model, .. } if model.value == m.name.value),
        ),
        name: m.name.value.clone(),
        network: m.network.value.clone(),
        placement: pairs(&m.placement),
    })
}

/// A scripted model, its script read and checked on the host.
fn replay_step(
    p: &Playbook,
    m: &Model,
    script: &Spanned<String>,
    errors: &mut Vec<PlanError>,
) -> Option<Step> {
    let bad = |reason: String| PlanError::BadScript {
        path: script.value.clone(),
        reason,
        span: script.span,
    };
    let Ok(path) = std::fs::canonicalize(p.resolve(script)) else {
        errors.push(bad("does not exist".into()));
        return None;
    };
    // Only a regular file: opening a FIFO or a device would block or read for ever.
    if !path.is_file() {
        errors.push(bad("not a regular file".into()));
        return None;
    }
    let parsed = match crate::replay::script::Script::read(&path) {
        Ok(parsed) => parsed,
        Err(why) => {
            errors.push(bad(why));
            return None;
        }
    };
    if let Some(pin) = &m.sha256 {
        check_pin(&path, &script.value, pin, errors)?;
    }
    Some(Step::StartReplay {
        alias: m.served_name().to_owned(),
        image: m.image.value.clone(),
        name: m.name.value.clone(),
        network: m.network.value.clone(),
        pinned: m.sha256.is_some(),
        placement: pairs(&m.placement),
        replies: parsed.replies.len(),
        script: path,
        transcript: parsed.transcript,
    })
}

fn pairs(env: &[EnvVar]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.value.clone(), v.value.clone()))
        .collect()
}

/// The model's URL inside its network: the engine gives its container this alias.
pub fn model_url(model: &str) -> String {
    format!("http://{model}:{MODEL_PORT}")
}

/// The file's SHA-256 is the pinned one. Read whole: the pin is there to notice any
/// change.
fn check_pin(
    path: &Path,
    written: &str,
    pin: &Spanned<String>,
    errors: &mut Vec<PlanError>,
) -> Option<()> {
    let expected = pin.value.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.chars().all(|c| c.is_ascii_hexdigit()) {
        errors.push(PlanError::BadPin {
            length: pin.value.chars().count(),
            span: pin.span,
        });
        return None;
    }
    let found = match sha256_file(path) {
        Ok(found) => found,
        Err(e) => {
            errors.push(PlanError::NotGguf {
                path: written.to_owned(),
                reason: format!("cannot read it: {e}"),
                span: pin.span,
            });
            return None;
        }
    };
    if found != expected {
        errors.push(PlanError::PinMismatch {
            found,
            path: written.to_owned(),
            span: pin.span,
        });
        return None;
    }
    Some(())
}

/// A file's SHA-256, in lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Bytes as lowercase hex, as `sha256sum` prints a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut hex, b| {
            use std::fmt::Write;
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// The GGUF file exists and its header reads; returns its path, size and what it says.
fn check_gguf(
    p: &Playbook,
    gguf: &crate::playbook::Spanned<String>,
    errors: &mut Vec<PlanError>,
) -> Option<(PathBuf, u64, crate::gguf::GgufInfo)> {
    let Ok(path) = std::fs::canonicalize(p.resolve(gguf)) else {
        errors.push(PlanError::ModelMissing {
            path: gguf.value.clone(),
            span: gguf.span,
        });
        return None;
    };
    let not_gguf = |reason: String| PlanError::NotGguf {
        path: gguf.value.clone(),
        span: gguf.span,
        reason,
    };
    // Only a regular file: opening a FIFO or a device would block or read for ever.
    if !path.is_file() {
        errors.push(not_gguf("not a regular file".into()));
        return None;
    }
    let size = match path.metadata() {
        Ok(metadata) => metadata.len(),
        Err(e) => {
            errors.push(not_gguf(format!("cannot read it: {e}")));
            return None;
        }
    };
    match crate::gguf::read(&path) {
        Ok(info) => Some((path, size, info)),
        Err(e) => {
            errors.push(not_gguf(e.to_string()));
            None
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Plan for playbook `{}`{} ({}): {} {}{}",
            self.playbook,
            self.version
                .as_ref()
                .map_or_else(String::new, |v| format!(" {v}")),
            self.source.display(),
            self.steps.len(),
            if self.steps.len() == 1 {
                "step"
            } else {
                "steps"
            },
            if self.teardown.is_empty() {
                ", nothing to do"
            } else {
                ", then teardown"
            }
        )?;
        if let Some(description) = &self.description {
            writeln!(f, "  {description}")?;
        }
        if self.steps.is_empty() && self.teardown.is_empty() {
            return Ok(());
        }
        if let Some(engine) = &self.engine {
            writeln!(f, "  Engine: {engine}")?;
        }
        if !self.matrix.is_empty() {
            writeln!(f, "  Matrix: {}", crate::matrix::plan_note(&self.matrix))?;
        }
        if self.needs.iter().any(|n| !n.is_empty()) {
            writeln!(
                f,
                "  Each step starts once the steps in its [after …] are done; the others run at the same time."
            )?;
        }
        writeln!(f)?;
        for (i, step) in self.steps.iter().enumerate() {
            let text = step.to_string();
            let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
            write!(f, "{:>3}. {first}", i + 1)?;
            if let Some(needs) = self.needs.get(i).filter(|n| !n.is_empty()) {
                let after: Vec<String> = needs.iter().map(|n| (n + 1).to_string()).collect();
                write!(f, " [after {}]", after.join(", "))?;
            }
            writeln!(f)?;
            if !rest.is_empty() {
                writeln!(f, "{rest}")?;
            }
            if let (Some(needed), Some((memory, source))) = (step.memory_estimate(), self.memory)
                && needed > memory
            {
                writeln!(
                    f,
                    "      warning: it needs about {}, more than the {} {source} has: it may fail to load",
                    human_bytes(needed),
                    human_bytes(memory)
                )?;
            }
        }
        let reach = self.reachability();
        if !reach.is_empty() {
            writeln!(f)?;
            writeln!(f, "Who can reach whom:")?;
            for line in reach {
                writeln!(f, "  {line}")?;
            }
        }
        if self.teardown.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        writeln!(
            f,
            "Teardown, always, also when a step fails or is interrupted:"
        )?;
        for (i, step) in self.teardown.iter().enumerate() {
            writeln!(f, "{:>3}. {step}", self.steps.len() + i + 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_normalized_and_taken_places_refused() {
        for (target, expected) in [
            ("/data/", Ok("/data")),
            ("//a/./b//", Ok("/a/b")),
            ("/.openmonox", Ok("/.openmonox")),
            ("/workspace/sub", Ok("/workspace/sub")),
            ("data", Err("is not an absolute path")),
            ("/a/../b", Err("goes up with `..`")),
            ("/", Err("would hide the container's whole filesystem")),
            ("//", Err("would hide the container's whole filesystem")),
            ("/workspace/", Err("is where the workspace goes")),
            ("/.openmono", Err("is where openmono puts its own binary")),
            ("/.openmono/x", Err("is where openmono puts its own binary")),
        ] {
            assert_eq!(
                normal_target(target),
                expected.map(str::to_owned),
                "{target}"
            );
        }
    }

    #[test]
    fn lists_read_as_sentences() {
        let words = |w: &[&'static str]| list(w.iter().copied(), ", ", " and ");
        assert_eq!(words(&[]), "");
        assert_eq!(words(&["a"]), "a");
        assert_eq!(words(&["a", "b"]), "a and b");
        assert_eq!(words(&["a", "b", "c"]), "a, b and c");
        assert_eq!(lexical(Path::new("/p/./a/../b")), Path::new("/p/b"));
    }
}
