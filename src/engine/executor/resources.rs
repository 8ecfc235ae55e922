//! The steps that make things: images, volumes, networks, model servers and task
//! containers, and the waits until they are ready.

use super::*;

impl Executor<'_> {
    /// Builds an image the engine lacks; one it has is left alone (no rebuild).
    pub(super) async fn build_image(
        &self,
        reference: &str,
        context: &Path,
        dockerfile: &str,
        args: &[(String, String)],
        bar: &StepProgress<'_>,
    ) -> Result<String, String> {
        if self
            .engine
            .image_exists(reference)
            .await
            .map_err(|e| error_chain(&e))?
        {
            return Ok("on the engine already".into());
        }
        let archive = crate::engine::build_context::archive(context, dockerfile)
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
        let built = self
            .engine
            .build_image(reference, dockerfile, args, labels, archive, |line| {
                let _ = writeln!(log, "{line}");
                bar.detail(line);
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

    pub(super) async fn create_volume(&self, name: &str, keep: bool) -> Result<String, String> {
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
            // The playbook's path tells two projects whose playbooks share a name apart.
            let project = {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::fs::canonicalize(&self.plan.source)
                    .unwrap_or_else(|_| self.plan.source.clone())
                    .hash(&mut hasher);
                format!("{:08x}", hasher.finish() & 0xffff_ffff)
            };
            (
                format!("openmono-{playbook}-{project}-{name}"),
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
            lock(&self.created).push(Created::Volume {
                name: engine_name.clone(),
            });
        }
        lock(&self.volumes).insert(name.to_owned(), engine_name.clone());
        Ok(engine_name)
    }

    pub(super) async fn create_network(&self, name: &str, egress: bool) -> Result<String, String> {
        let engine_name = self.engine_name(name);
        let id = self
            .engine
            .create_network(&engine_name, self.labels(name), egress)
            .await
            .map_err(|e| error_chain(&e))?;
        lock(&self.created).push(Created::Network {
            id,
            name: engine_name.clone(),
        });
        lock(&self.networks).insert(name.to_owned(), engine_name.clone());
        Ok(engine_name)
    }

    pub(super) async fn start_model(&self, step: &Step) -> Result<String, String> {
        let Step::StartModel {
            alias,
            args,
            context,
            gguf,
            gpu,
            image,
            jinja,
            name,
            network,
            placement,
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
            alias,
        ]
        .map(str::to_owned)
        .to_vec();
        if *jinja {
            cmd.push("--jinja".into());
        }
        cmd.extend(args.iter().cloned());
        let spec = ContainerSpec {
            cmd,
            gpus: *gpu,
            image: image.clone(),
            limits: self
                .capacity
                .bound_model(step.memory_estimate().unwrap_or(0)),
            mounts: vec![self.host_file(gguf, MODEL_MOUNT, image).await?],
            placement: placement.clone(),
            ..self.model_container(name, network)?
        };
        let id = self.create(name, spec).await?;
        self.engine.start_container(&id).await.map_err(|e| {
            let why = error_chain(&e);
            if *gpu && why.contains("could not select device driver") {
                format!(
                    "the model offloads layers to a GPU (`gpu-layers`), and the engine has no GPU support: install the NVIDIA Container Toolkit for the engine, or remove `gpu-layers` ({why})"
                )
            } else {
                why
            }
        })?;
        Ok(String::new())
    }

    /// What every model server's container gets: the model's labels and name, its
    /// network with the model's name as host name, a read-only root, user `nobody`.
    fn model_container(&self, name: &str, network: &str) -> Result<ContainerSpec, String> {
        let mut labels = self.labels(name);
        labels.insert("dev.openmono.kind".to_owned(), "model".to_owned());
        let (dns, dns_options) = Self::dns(self.sealed(std::iter::once(&network.to_owned())));
        Ok(ContainerSpec {
            dns,
            dns_options,
            // The server is the image's command, not openmono's `sandbox-init`.
            init: true,
            labels,
            name: self.engine_name(name),
            networks: vec![(self.network(network)?, vec![name.to_owned()])],
            read_only_rootfs: true,
            user: Some("65534:65534".into()),
            ..ContainerSpec::default()
        })
    }

    /// A scripted model: the run's copy of openmono replays the script, with the same
    /// confinement as a model server (a read-only root, no capabilities, `nobody`).
    pub(super) async fn start_replay(&self, step: &Step) -> Result<String, String> {
        let Step::StartReplay {
            alias,
            image,
            name,
            network,
            placement,
            script,
            ..
        } = step
        else {
            unreachable!("called for StartReplay only")
        };
        let cmd = [
            "replay",
            REPLAY_MOUNT,
            "--listen",
            &format!("0.0.0.0:{MODEL_PORT}"),
            "--alias",
            alias,
        ]
        .map(str::to_owned)
        .to_vec();
        let spec = ContainerSpec {
            cmd,
            entrypoint: Some(vec![SELF_PATH.into()]),
            image: image.clone(),
            mounts: vec![
                self.host_file(script, REPLAY_MOUNT, image).await?,
                BindMount {
                    read_only: true,
                    source: self.self_volume(image).await?,
                    target: crate::step::SELF_DIR.to_owned(),
                    volume: true,
                },
            ],
            placement: placement.clone(),
            ..self.model_container(name, network)?
        };
        let id = self.create(name, spec).await?;
        self.engine
            .start_container(&id)
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(String::new())
    }

    /// Creates and starts a task container; returns its id. Its health, if it has a
    /// check, is waited for by the caller.
    pub(super) async fn start_container(&self, step: &Step) -> Result<String, String> {
        let Step::StartContainer {
            env,
            health,
            image,
            limits,
            name,
            networks,
            placement,
            read_only_root,
            tmpfs,
            user,
            workdir,
            workspace,
            ..
        } = step
        else {
            unreachable!("called for StartContainer only")
        };
        // An engine elsewhere cannot see the workspace: it travels in a volume.
        let travelled = match workspace {
            Some(_) if self.engine.is_remote() => Some(self.send_workspace(step).await?),
            _ => None,
        };
        let mut mounts = self.task_mounts(step, travelled.as_deref())?;
        mounts.push(BindMount {
            read_only: true,
            source: self.self_volume(image).await?,
            target: crate::step::SELF_DIR.to_owned(),
            volume: true,
        });
        let sealed = self.sealed(networks.iter().map(|(net, _)| net));
        let (dns, dns_options) = Self::dns(sealed);
        let mut joined = Vec::new();
        for (net, alias) in networks {
            let mut aliases = vec![name.clone()];
            aliases.extend(alias.iter().cloned());
            joined.push((self.network(net)?, aliases));
        }
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let user = user.clone().unwrap_or_else(|| format!("{uid}:{gid}"));
        let mut environment = vec!["HOME=/tmp".to_owned()];
        environment.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        let spec = ContainerSpec {
            cmd: vec!["sandbox-init".into()],
            dns,
            dns_options,
            entrypoint: Some(vec![SELF_PATH.into()]),
            gpus: false,
            env: environment,
            health: health.as_ref().map(|h| {
                let test = match &h.probe {
                    HealthProbe::Http(spanned) => {
                        let url = &spanned.value;
                        vec![
                            "CMD".to_owned(),
                            SELF_PATH.to_owned(),
                            "probe".to_owned(),
                            url.clone(),
                        ]
                    }
                    HealthProbe::Command(command) => {
                        vec!["CMD-SHELL".to_owned(), command.value.clone()]
                    }
                };
                (test, h.interval, h.timeout, h.retries)
            }),
            limits: *limits,
            image: image.clone(),
            // `sandbox-init` is the first process already.
            init: false,
            labels: self.labels(name),
            mounts,
            name: self.engine_name(name),
            networks: joined,
            placement: placement.clone(),
            read_only_rootfs: *read_only_root,
            tmpfs: tmpfs.iter().map(|t| (t.target.clone(), t.size)).collect(),
            user: Some(user),
            working_dir: workdir
                .clone()
                .or_else(|| workspace.as_ref().map(|_| WORKSPACE.to_owned())),
        };
        let id = self.create(name, spec).await?;
        self.engine
            .start_container(&id)
            .await
            .map_err(|e| error_chain(&e))?;
        // Routes are taken away only where an agent runs: the helper that does it costs
        // a container start, and model servers and playbook commands are not the ones
        // the box holds in.
        if sealed && self.runs_an_agent(name) {
            self.seal_routes(&id, name, image).await?;
        }
        Ok(id)
    }

    /// A file of this machine, read-only at `target` in a model's container: bound from
    /// where it is, or on an engine elsewhere, which cannot see it, copied into a volume
    /// named by its content and mounted at `target`'s folder. That volume is filled once
    /// and kept for later runs (it carries no run's label; `docker volume ls --filter
    /// label=dev.openmono.file` lists them), so a model travels once.
    async fn host_file(&self, file: &Path, target: &str, image: &str) -> Result<BindMount, String> {
        if !self.engine.is_remote() {
            return Ok(BindMount {
                read_only: true,
                source: file.display().to_string(),
                target: target.to_owned(),
                volume: false,
            });
        }
        let (dir, inner) = target.rsplit_once('/').unwrap_or(("", target));
        let path = file.to_path_buf();
        let hash = tokio::task::spawn_blocking(move || crate::plan::sha256_file(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let volume = format!("openmono-file-{}-{inner}", &hash[..16]);
        // One filler at a time: the others then find it whole.
        let _filling = fill_lock(&volume).await;
        // The volume outlives the run; the helpers that look into it and fill it do not,
        // and carry the run's labels, for teardown and `gc`.
        let helpers = self.labels(inner);
        let held = self
            .engine
            .volume_holds(&volume, dir, COMPLETE, image, helpers.clone())
            .await
            .map_err(|e| error_chain(&e))?;
        if !held {
            let path = file.to_path_buf();
            let top = dir.trim_start_matches('/').to_owned();
            let name = inner.to_owned();
            let (archive, sent) =
                tokio::task::spawn_blocking(move || file_archive(&path, &top, &name))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot pack {}: {e}", file.display()))?;
            // The volume is named by what was read first: what is sent must be that.
            if crate::plan::hex(&sent) != hash {
                return Err(format!(
                    "{} changed while it was being sent to the engine: run again once it stays as it is",
                    file.display()
                ));
            }
            // Creating a volume that exists is no error: an earlier fill cut short is
            // filled again over what it left.
            self.engine
                .create_volume(&volume, HashMap::from([(FILE_LABEL.to_owned(), hash)]))
                .await
                .map_err(|e| error_chain(&e))?;
            self.engine
                .fill_volume(&volume, dir, image, helpers, archive)
                .await
                .map_err(|e| error_chain(&e))?;
        }
        Ok(BindMount {
            read_only: true,
            source: volume,
            target: dir.to_owned(),
            volume: true,
        })
    }

    /// The engine's volume holding this openmono binary, mounted read-only into every
    /// task container: a copy, never the host's file, that no task can change, not even
    /// as root. It is named by the binary's hash and kept for later runs, like a model's
    /// file on an engine elsewhere: filled once (through a container of `image` that
    /// never starts), then an empty marker volume says it is whole, which one look at
    /// the engine finds.
    pub(super) async fn self_volume(&self, image: &str) -> Result<String, String> {
        self.self_volume
            .get_or_init(|| async {
                let hash = &self.self_hash;
                let name = format!("openmono-file-{}{BINARY_VOLUME}", &hash[..16]);
                let whole = format!("{name}.whole");
                let _filling = fill_lock(&name).await;
                let marked = self
                    .engine
                    .volume_label(&whole, FILE_LABEL)
                    .await
                    .map_err(|e| error_chain(&e))?;
                if marked.as_ref() == Some(hash) {
                    return Ok(name);
                }
                let labels = HashMap::from([(FILE_LABEL.to_owned(), hash.clone())]);
                // A fill cut short is filled again over what it left.
                self.engine
                    .create_volume(&name, labels.clone())
                    .await
                    .map_err(|e| error_chain(&e))?;
                let archive = self_archive(&self.self_binary)
                    .map_err(|e| format!("cannot pack the openmono binary: {e}"))?;
                // The helper that fills it is the run's, for teardown and `gc`.
                self.engine
                    .fill_volume(
                        &name,
                        crate::step::SELF_DIR,
                        image,
                        self.labels("openmono"),
                        archive,
                    )
                    .await
                    .map_err(|e| error_chain(&e))?;
                self.engine
                    .create_volume(&whole, labels)
                    .await
                    .map_err(|e| error_chain(&e))?;
                Ok(name)
            })
            .await
            .clone()
    }

    /// A task container's host folders and volumes: the workspace (or the volume it
    /// travelled in, `travelled`), the playbook's mounts (their sources checked and made
    /// canonical by the plan) and its volumes.
    fn task_mounts(&self, step: &Step, travelled: Option<&str>) -> Result<Vec<BindMount>, String> {
        let Step::StartContainer {
            mounts: binds,
            protected,
            volumes,
            workspace,
            ..
        } = step
        else {
            unreachable!("called for StartContainer only")
        };
        let mut mounts: Vec<BindMount> = workspace
            .iter()
            .map(|(w, read_only)| BindMount {
                read_only: *read_only,
                source: travelled.map_or_else(|| w.display().to_string(), str::to_owned),
                target: WORKSPACE.to_owned(),
                volume: travelled.is_some(),
            })
            .collect();
        // Over the workspace, read-only: the engine mounts parents before children. (In
        // a travelled workspace they are not brought back instead.)
        if let Some((dir, _)) = workspace.as_ref().filter(|_| travelled.is_none()) {
            mounts.extend(protected.iter().map(|relative| BindMount {
                read_only: true,
                source: dir.join(relative).display().to_string(),
                target: format!("{WORKSPACE}/{relative}"),
                volume: false,
            }));
        }
        mounts.extend(binds.iter().map(|b| BindMount {
            read_only: b.read_only,
            source: b.source.display().to_string(),
            target: b.target.clone(),
            volume: false,
        }));
        for (volume, target, read_only) in volumes {
            mounts.push(BindMount {
                read_only: *read_only,
                source: lock(&self.volumes)
                    .get(volume)
                    .cloned()
                    .ok_or_else(|| format!("volume `{volume}` was not created"))?,
                target: target.clone(),
                volume: true,
            });
        }
        Ok(mounts)
    }

    /// Waits for the engine's health check to say healthy; an unhealthy verdict or an
    /// exited container fails at once, with what the check or the container said.
    pub(super) async fn wait_healthy(
        &self,
        id: &str,
        health: &Health,
        bar: &StepProgress<'_>,
    ) -> Result<String, String> {
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
                HealthVerdict::Unhealthy if last.trim().is_empty() => {
                    return Err(format!(
                        "unhealthy after {} failed checks; the last printed nothing",
                        health.retries
                    ));
                }
                HealthVerdict::Unhealthy => {
                    return Err(format!(
                        "unhealthy after {} failed checks; the last said:\n{}",
                        health.retries,
                        indent(last.trim())
                    ));
                }
                HealthVerdict::Starting => bar.detail("waiting until healthy"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(super) async fn create(
        &self,
        name: &str,
        mut spec: ContainerSpec,
    ) -> Result<String, String> {
        let cpus = self.capacity.cpus;
        if let Some(asked) = spec.limits.cpus.filter(|&n| cpus > 0 && n > cpus) {
            return Err(format!(
                "`limits cpus={asked}` asks for more CPUs than the engine's machine has ({cpus}): ask for {cpus} or fewer"
            ));
        }
        let memory = self.capacity.memory;
        if let Some(asked) = spec.limits.memory.filter(|&m| memory > 0 && m > memory) {
            return Err(format!(
                "`limits memory` asks for {} and the engine's machine has {}: ask for less",
                crate::step::human_bytes(asked),
                crate::step::human_bytes(memory)
            ));
        }
        spec.limits = self.capacity.bound(spec.limits);
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
        lock(&self.created).push(Created::Container {
            id: id.clone(),
            log,
            name: self.engine_name(name),
        });
        lock(&self.containers).insert(name.to_owned(), id.clone());
        Ok(id)
    }

    pub(super) fn network(&self, name: &str) -> Result<String, String> {
        lock(&self.networks)
            .get(name)
            .cloned()
            .ok_or_else(|| format!("network `{name}` was not created"))
    }

    pub(super) fn container(&self, name: &str) -> Result<String, String> {
        lock(&self.containers)
            .get(name)
            .cloned()
            .ok_or_else(|| format!("container `{name}` was not started"))
    }

    /// Asks the model's `/health` from inside `from` until it answers 200, with one
    /// `probe --wait` there; fails at once when the model's container exits, with its
    /// last log lines.
    pub(super) async fn wait_model(
        &self,
        from: &str,
        model: &str,
        url: &str,
        timeout: Duration,
        bar: &StepProgress<'_>,
    ) -> Result<String, String> {
        let model_id = self.container(model)?;
        let from_id = self.container(from)?;
        // The probe gives up on its own a little after the host does, so that the
        // host's clock decides and the probe never outlives the run by much.
        let patience = timeout.as_secs().saturating_add(2);
        let cmd = vec![
            SELF_PATH.to_owned(),
            "probe".to_owned(),
            "--wait".to_owned(),
            patience.to_string(),
            format!("{url}/health"),
        ];
        let probe = self
            .engine
            .exec(&from_id, cmd, &[], |_, line| bar.detail(line));
        let timed_out = || async {
            let tail = self.engine.log_tail(&model_id, 15).await;
            Err(format!(
                "not ready after {}; the server's last lines:\n{}",
                crate::step::human_duration(timeout),
                indent(&tail)
            ))
        };
        tokio::select! {
            code = probe => match code.map_err(|e| error_chain(&e))? {
                0 => Ok(format!("{url} answers")),
                _ => timed_out().await,
            },
            exited = self.engine.exited(&model_id) => {
                let code = exited.map_err(|e| error_chain(&e))?;
                let tail = self.engine.log_tail(&model_id, 15).await;
                Err(format!(
                    "the model server exited with code {code} while loading; its last lines:\n{}",
                    indent(&tail)
                ))
            }
            () = sleep_for(timeout) => timed_out().await,
        }
    }
}

/// Sleeps for `duration`, or for ever when it is too long to add to now.
async fn sleep_for(duration: Duration) {
    match tokio::time::Instant::now().checked_add(duration) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The last thing written into such a volume: a volume without it was not filled whole.
const COMPLETE: &str = ".complete";

/// The volumes of files being filled, each behind its own gate (see [`fill_lock`]).
static FILLS: std::sync::Mutex<
    std::collections::BTreeMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>,
> = std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Held while a kept volume is looked at and filled: one filler at a time, among the
/// runs of this process (a matrix) and among openmono processes on this machine. A
/// second filler would unpack the same files over the first's, and a box started in
/// between would find its file missing for a moment.
struct FillLock {
    _process: tokio::sync::OwnedMutexGuard<()>,
    /// The machine's lock: a file under the temporary folder, locked with `flock` (none
    /// when it cannot be had: the process's lock alone then).
    _machine: Option<std::fs::File>,
}

async fn fill_lock(name: &str) -> FillLock {
    let gate = std::sync::Arc::clone(lock(&FILLS).entry(name.to_owned()).or_default());
    let process = gate.lock_owned().await;
    let name = name.to_owned();
    let machine = tokio::task::spawn_blocking(move || {
        use std::os::{fd::AsRawFd, unix::fs::DirBuilderExt, unix::fs::OpenOptionsExt};
        // Shared by every user of this machine's engines (their state folders differ):
        // sticky and open to all, as /tmp itself; a lock file is never followed through
        // a link, nor emptied.
        let dir = std::env::temp_dir().join("openmono-locks");
        if std::fs::DirBuilder::new().mode(0o1777).create(&dir).is_ok() {
            let _ = std::fs::set_permissions(
                &dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o1777),
            );
        }
        let path = dir.join(&name);
        let open = |write: bool| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .create(write)
                .truncate(false)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
        };
        let file = open(true).or_else(|_| open(false)).ok()?;
        // SAFETY: flock on a descriptor this closure owns; it waits until it has it.
        (unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0).then_some(file)
    })
    .await
    .ok()
    .flatten();
    FillLock {
        _process: process,
        _machine: machine,
    }
}

/// A tar archive of folder `top` holding `file` as `name`, readable by all, and then the
/// empty [`COMPLETE`]: the engine unpacks in order, so that file says the rest is there.
/// With it, the SHA-256 of the bytes it holds.
fn file_archive(file: &Path, top: &str, name: &str) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    use sha2::Digest;
    let bytes = std::fs::read(file)?;
    let hash = sha2::Sha256::digest(&bytes).to_vec();
    let mut builder = tar::Builder::new(Vec::with_capacity(bytes.len() + 4096));
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o555);
    dir.set_size(0);
    builder.append_data(&mut dir, format!("{top}/"), std::io::empty())?;
    for (path, content) in [(name, bytes.as_slice()), (COMPLETE, &[][..])] {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o444);
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, format!("{top}/{path}"), content)?;
    }
    Ok((builder.into_inner()?, hash))
}

pub(super) fn self_archive(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let owner: u64 = 65534;
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
