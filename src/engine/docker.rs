//! The Docker engine, through bollard. This file and `swarm.rs` (the same calls on a
//! swarm manager) are the only ones that import bollard: the rest of openmono asks for
//! networks, containers and execs in its own terms.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bollard::{
    Docker,
    container::LogOutput,
    errors::Error as BollardError,
    exec::{CreateExecOptions, StartExecResults},
    models::{
        ContainerCreateBody, ContainerState, ContainerSummary, DeviceRequest, EndpointSettings,
        HealthConfig, HealthStatusEnum, HostConfig, Mount, MountTmpfsOptions, MountType,
        NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, NetworkingConfig,
        VolumeCreateRequest,
    },
    query_parameters::{
        BuildImageOptionsBuilder, CreateContainerOptionsBuilder,
        DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder,
        ListNetworksOptionsBuilder, ListVolumesOptions, LogsOptionsBuilder,
        RemoveContainerOptionsBuilder, RemoveVolumeOptions, StopContainerOptionsBuilder,
        UploadToContainerOptionsBuilder, WaitContainerOptionsBuilder,
    },
};
use futures_util::StreamExt;

use super::{EngineError, endpoint::Endpoint};
use crate::{playbook::Limits, step::DEFAULT_PIDS};

/// What an engine says of itself.
#[derive(Debug, Clone, Default)]
pub struct EngineFacts {
    pub api_version: String,
    pub memory: Option<u64>,
    /// Where it keeps images and containers, on its own machine.
    pub root_dir: Option<String>,
    /// `name=seccomp,profile=default`, `name=rootless`, `name=userns`, …
    pub security_options: Vec<String>,
    pub version: String,
}

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    pub(super) docker: Docker,
    pub(super) endpoint: Endpoint,
    /// The node's id when the engine is a swarm manager (asked once).
    pub(super) swarm: Arc<tokio::sync::OnceCell<Option<String>>>,
    /// Service ids, by the id of their task's container: the services this connection
    /// made for containers.
    pub(super) services: Arc<Mutex<HashMap<String, String>>>,
    /// The local socket that leads to an engine over ssh, while the engine is in use.
    _ssh: Option<Arc<super::ssh::SshBridge>>,
    /// When this is the engine of one node of a swarm (a worker, say), the swarm's
    /// manager: services and overlay networks are made and removed there, everything
    /// else (containers, volumes, execs, logs) here.
    pub(super) manager: Option<Arc<Engine>>,
}

/// How long an engine may take to answer its first calls (version and ping): a healthy
/// one takes milliseconds, a busy or distant one a few seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one call may wait for the engine's answer to begin, in seconds (bollard's
/// default).
const REQUEST_TIMEOUT: u64 = 120;

/// A host path bind-mounted into a container, or an engine volume mounted into it.
#[derive(Debug, Clone)]
pub struct BindMount {
    pub read_only: bool,
    /// A host path, or a volume's name when `volume`.
    pub source: String,
    pub target: String,
    pub volume: bool,
}

/// What the engine's machine has; 0 where the engine does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub cpus: u32,
    /// In bytes.
    pub memory: u64,
}

impl Capacity {
    /// A container's limits where its playbook sets none: half the memory, and all the
    /// CPUs but one, so that one box running away leaves the machine usable.
    pub fn bound(self, limits: Limits) -> Limits {
        Limits {
            cpus: limits
                .cpus
                .or_else(|| (self.cpus > 1).then(|| self.cpus - 1)),
            memory: limits
                .memory
                .or_else(|| (self.memory > 0).then_some(self.memory / 2)),
            pids: limits.pids.or(Some(DEFAULT_PIDS)),
        }
    }

    /// A model server's limits: as [`Capacity::bound`], with room for half again the
    /// memory its weights and KV cache are estimated at (`estimate`), so that a model
    /// the machine can hold is not stopped at half of it.
    pub fn bound_model(self, estimate: u64) -> Limits {
        let room = estimate.saturating_add(estimate / 2);
        let memory = (self.memory > 0).then(|| (self.memory / 2).max(room).min(self.memory));
        self.bound(Limits {
            memory,
            ..Limits::default()
        })
    }
}

/// Everything openmono sets on a container it creates.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub cmd: Vec<String>,
    /// DNS servers for the engine's embedded resolver to ask, from inside the box, for
    /// names it does not know; none: the host's.
    pub dns: Vec<String>,
    /// Resolver options in the box's `resolv.conf`.
    pub dns_options: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    /// Ask the engine for all its GPUs.
    pub gpus: bool,
    /// The engine's health check: the test (`CMD …` or `CMD-SHELL …`), interval,
    /// timeout and retries.
    pub health: Option<(Vec<String>, Duration, Duration, u32)>,
    pub env: Vec<String>,
    pub image: String,
    /// The engine's init (`docker-init`) as the first process: it reaps and forwards
    /// signals, for images whose command is not openmono's own `sandbox-init`.
    pub init: bool,
    pub labels: HashMap<String, String>,
    pub limits: Limits,
    pub mounts: Vec<BindMount>,
    pub name: String,
    /// Node labels and values that the node it runs on must have (on a swarm).
    pub placement: Vec<(String, String)>,
    /// Each network's engine name and this container's aliases on it; none: no network.
    pub networks: Vec<(String, Vec<String>)>,
    pub read_only_rootfs: bool,
    /// In-memory folders: target and most bytes; mode 1777, `noexec`, `nosuid`, `nodev`.
    pub tmpfs: Vec<(String, u64)>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
}

/// Which stream a line of exec output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stderr,
    Stdout,
}

/// A container, network or volume on the engine.
#[derive(Debug, Clone)]
pub struct EngineObject {
    pub id: String,
    pub kind: ObjectKind,
    pub labels: HashMap<String, String>,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A swarm service of openmono's; removed before everything else, with its
    /// containers.
    Service,
    Container,
    Network,
    Volume,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Service => "service",
            Self::Container => "container",
            Self::Network => "network",
            Self::Volume => "volume",
        })
    }
}

/// What the engine's health check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthVerdict {
    Healthy,
    Starting,
    Unhealthy,
}

/// A container's state as far as waiting on it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Exited(i64),
    Running,
}

impl Liveness {
    fn of(state: &ContainerState) -> Self {
        if state.running == Some(true) {
            Self::Running
        } else {
            Self::Exited(state.exit_code.unwrap_or(-1))
        }
    }
}

impl Engine {
    /// Connects to the engine `endpoint` names (see [`Endpoint::choose`]) and agrees
    /// on an API version it speaks; gives up after [`CONNECT_TIMEOUT`].
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, EngineError> {
        let failed = |source| EngineError::connect(endpoint, source);
        let ssh =
            if endpoint.is_ssh() {
                let command = std::env::var("OPENMONO_SSH").ok();
                let bridge = super::ssh::SshBridge::start(&endpoint.host, command.as_deref())
                    .map_err(|e| EngineError::Ssh {
                        engine: endpoint.host.clone(),
                        why: format!("cannot make a local socket for it: {e}"),
                    })?;
                Some(Arc::new(bridge))
            } else {
                None
            };
        let docker = match (&endpoint.tls, &ssh) {
            (_, Some(bridge)) => Docker::connect_with_unix(
                &bridge.socket,
                REQUEST_TIMEOUT,
                bollard::API_DEFAULT_VERSION,
            ),
            (tls, None) => match tls {
                Some(tls) => {
                    // bollard's TLS needs a process-wide provider: ring, the only one built in.
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    Docker::connect_with_ssl(
                        &endpoint.host,
                        &tls.key,
                        &tls.cert,
                        &tls.ca,
                        REQUEST_TIMEOUT,
                        bollard::API_DEFAULT_VERSION,
                    )
                }
                None => Docker::connect_with_unix(
                    &endpoint.host,
                    REQUEST_TIMEOUT,
                    bollard::API_DEFAULT_VERSION,
                ),
            },
        }
        .map_err(failed)?;
        // An engine that accepts connections and never answers would hold every call
        // for the long request timeout: the first contact gets a short bound of its own.
        // Later calls keep the long one (builds, pulls and waits take long).
        let first_contact = async {
            let docker = docker.negotiate_version().await?;
            docker.ping().await?;
            Ok(docker)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, first_contact).await {
            Ok(Ok(docker)) => Ok(Self {
                docker,
                endpoint: endpoint.clone(),
                swarm: Arc::default(),
                services: Arc::default(),
                _ssh: ssh,
                manager: None,
            }),
            // ssh says why better than the broken pipe it leaves behind.
            Ok(Err(e)) => Err(match ssh.as_ref().and_then(|s| s.last_error()) {
                Some(why) => EngineError::Ssh {
                    engine: endpoint.host.clone(),
                    why,
                },
                None => failed(e),
            }),
            Err(_) => Err(EngineError::no_answer(endpoint, CONNECT_TIMEOUT.as_secs())),
        }
    }

    /// Where services, overlay networks and swarm nodes are asked for: the swarm's
    /// manager when this is one node's engine, else this engine.
    pub(super) fn swarm_api(&self) -> &Docker {
        self.manager.as_ref().map_or(&self.docker, |m| &m.docker)
    }

    /// Whether the engine may be on another machine, which cannot see this one's files.
    pub fn is_remote(&self) -> bool {
        self.endpoint.is_remote()
    }

    /// What `openmono doctor` asks the engine.
    pub async fn facts(&self) -> Result<EngineFacts, EngineError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(EngineError::call("ask the engine its version"))?;
        let info = self
            .docker
            .info()
            .await
            .map_err(EngineError::call("ask the engine about itself"))?;
        Ok(EngineFacts {
            api_version: version.api_version.unwrap_or_default(),
            memory: info.mem_total.and_then(|m| u64::try_from(m).ok()),
            root_dir: info.docker_root_dir,
            security_options: info.security_options.unwrap_or_default(),
            version: version.version.unwrap_or_default(),
        })
    }

    /// The memory and CPUs the engine's machine has (0 where it does not say).
    pub async fn capacity(&self) -> Result<Capacity, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(EngineError::call("ask the engine about itself"))?;
        // The same answer says whether it is a swarm manager: not asked again.
        let _ = self.swarm.set(super::swarm::manager_node(&info));
        Ok(Capacity {
            cpus: info.ncpu.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            memory: info
                .mem_total
                .and_then(|m| u64::try_from(m).ok())
                .unwrap_or(0),
        })
    }

    pub async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(EngineError::call(format!("inspect image `{image}`"))(e)),
        }
    }

    /// Builds an image from a context archive, handing each line of the build's output
    /// to `on_line`. The inner error is the build's own message (a failed `RUN`, say).
    pub async fn build_image(
        &self,
        reference: &str,
        dockerfile: &str,
        args: &[(String, String)],
        labels: HashMap<String, String>,
        context: Vec<u8>,
        mut on_line: impl FnMut(&str),
    ) -> Result<Result<(), String>, EngineError> {
        let options = BuildImageOptionsBuilder::default()
            .t(reference)
            .dockerfile(dockerfile)
            .buildargs(&args.iter().cloned().collect())
            .labels(&labels)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                // The engine reports a failed step as an error in the stream.
                Err(BollardError::DockerStreamError { error }) => return Ok(Err(error)),
                Err(e) => return Err(EngineError::call(format!("build image `{reference}`"))(e)),
            };
            if let Some(text) = &info.stream {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    on_line(line);
                }
            }
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Ok(Err(detail));
            }
        }
        Ok(Ok(()))
    }

    /// An internal network whose bridge has no IPv4 address, so that the host itself is
    /// unreachable from it (an internal network alone still lets containers reach the
    /// host's addresses).
    pub async fn create_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        egress: bool,
    ) -> Result<String, EngineError> {
        // On a swarm: an overlay that services join and that helpers may attach to.
        // Its gateway lives in the network's own namespace, never on the host.
        let swarm = self.swarm_node().await?.is_some();
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some(if swarm { "overlay" } else { "bridge" }.into()),
            attachable: swarm.then_some(true),
            internal: Some(!egress),
            labels: Some(labels),
            // A network with egress routes through the host's bridge address; one
            // without needs none.
            options: (!egress && !swarm).then(|| {
                HashMap::from([(
                    "com.docker.network.bridge.inhibit_ipv4".to_owned(),
                    "true".to_owned(),
                )])
            }),
            ..Default::default()
        };
        let created = self
            .swarm_api()
            .create_network(request)
            .await
            .map_err(EngineError::call(format!("create network `{name}`")))?;
        Ok(created.id)
    }

    /// Removes a network; one that is already gone counts as removed. On a node of a
    /// swarm other than the manager, the node's own view of the overlay goes a moment
    /// after the manager's: that is waited for, so that nothing of the run is left to
    /// see on the node either.
    pub async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        self.remove_network_within(id, super::swarm::LATE_TASKS)
            .await
    }

    /// [`Self::remove_network`], waiting at most `patience` for the swarm to let go.
    async fn remove_network_within(&self, id: &str, patience: Duration) -> Result<(), EngineError> {
        // A container of a node's own engine on an overlay (a model on GPUs) holds a
        // network attachment task of the swarm, which goes a moment after the container.
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match self.swarm_api().remove_network(id).await {
                Err(e)
                    if e.to_string().contains(HELD_BY_SWARM)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(super::swarm::POLL).await;
                }
                Err(e) if !is_not_found(&e) => {
                    return Err(EngineError::call(format!("remove network `{id}`"))(e));
                }
                _ => break,
            }
        }
        if self.manager.is_some() {
            self.wait_network_gone(id).await;
        }
        Ok(())
    }

    /// Creates (does not start) a hardened container: no capabilities, no new
    /// privileges, a process limit, never privileged, no network unless one is given.
    /// On a swarm manager, it is a service's task container, started already, unless
    /// it needs GPUs.
    pub async fn create_container(&self, spec: ContainerSpec) -> Result<String, EngineError> {
        if let Some(node) = self.swarm_node().await? {
            if !spec.gpus {
                return self.create_service(spec, &node).await;
            }
            // A swarm gives a service devices only as generic resources, and takes them
            // back whenever their node changes (its enforcer rejects a task that holds
            // one; a run's overlay reaching the node changes it): a model on GPUs is a
            // container of the node's own engine, on the run's attachable overlay.
            self.check_placement(&node, &spec.placement).await?;
        }
        // The engine joins one network at creation; the others are connected after.
        let (network_mode, networking_config) = match spec.networks.first() {
            Some((net, aliases)) => (
                net.clone(),
                Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        net.clone(),
                        EndpointSettings {
                            aliases: Some(aliases.clone()),
                            ..Default::default()
                        },
                    )])),
                }),
            ),
            None => ("none".to_owned(), None),
        };
        let host_config = HostConfig {
            cap_drop: Some(vec!["ALL".into()]),
            dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
            dns_options: (!spec.dns_options.is_empty()).then(|| spec.dns_options.clone()),
            init: spec.init.then_some(true),
            mounts: Some(mounts(&spec)),
            memory: spec.limits.memory.and_then(|m| i64::try_from(m).ok()),
            nano_cpus: spec.limits.cpus.map(|c| i64::from(c) * 1_000_000_000),
            network_mode: Some(network_mode),
            pids_limit: Some(i64::from(spec.limits.pids.unwrap_or(DEFAULT_PIDS))),
            privileged: Some(false),
            readonly_rootfs: Some(spec.read_only_rootfs),
            security_opt: Some(vec!["no-new-privileges".into()]),
            device_requests: spec.gpus.then(|| {
                vec![DeviceRequest {
                    count: Some(-1),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let healthcheck = spec
            .health
            .map(|(test, interval, timeout, retries)| HealthConfig {
                test: Some(test),
                interval: Some(nanos(interval)),
                timeout: Some(nanos(timeout)),
                retries: Some(i64::from(retries)),
                ..Default::default()
            });
        let body = ContainerCreateBody {
            cmd: Some(spec.cmd),
            healthcheck,
            entrypoint: spec.entrypoint,
            env: Some(spec.env),
            host_config: Some(host_config),
            image: Some(spec.image),
            labels: Some(spec.labels),
            networking_config,
            user: spec.user,
            working_dir: spec.working_dir,
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(EngineError::call(format!(
                "create container `{}`",
                spec.name
            )))?;
        for (net, aliases) in spec.networks.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(aliases.clone()),
                    ..Default::default()
                }),
            };
            self.docker
                .connect_network(net, request)
                .await
                .map_err(EngineError::call(format!(
                    "connect `{}` to `{net}`",
                    spec.name
                )))?;
        }
        Ok(created.id)
    }

    /// Fills a volume with the files of a tar archive, through a container of `image`
    /// that mounts it at `target` and never starts: uploads into a volume path keep the
    /// archive's owners and modes, those of the volume's top folder included.
    pub async fn fill_volume(
        &self,
        volume: &str,
        target: &str,
        image: &str,
        labels: HashMap<String, String>,
        tar: Vec<u8>,
    ) -> Result<(), EngineError> {
        let helper = self
            .volume_helper(volume, target, image, labels, "fill")
            .await?;
        // The engine keeps the owners the archive gives (`copyUIDGID` would instead give
        // everything to the container's user).
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        let uploaded = self
            .docker
            .upload_to_container(&helper, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(EngineError::call(format!(
                "copy files into volume `{volume}`"
            )));
        let removed = self.remove_container(&helper).await;
        uploaded.and(removed)
    }

    /// Whether volume `volume` exists and holds `path` (relative to where it is mounted,
    /// `target`), looked at through a container of `image` that never starts.
    pub async fn volume_holds(
        &self,
        volume: &str,
        target: &str,
        path: &str,
        image: &str,
        labels: HashMap<String, String>,
    ) -> Result<bool, EngineError> {
        match self.docker.inspect_volume(volume).await {
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(EngineError::call(format!("look at volume `{volume}`"))(e)),
            Ok(_) => {}
        }
        let helper = self
            .volume_helper(volume, target, image, labels, "look")
            .await?;
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(&format!("{target}/{path}"))
            .build();
        let found = {
            let mut stream = self.docker.download_from_container(&helper, Some(options));
            match stream.next().await {
                Some(Err(e)) if is_not_found(&e) => Ok(false),
                Some(Err(e)) => Err(EngineError::call(format!(
                    "look for {path} in volume `{volume}`"
                ))(e)),
                Some(Ok(_)) | None => Ok(true),
            }
        };
        let removed = self.remove_container(&helper).await;
        found.and_then(|found| removed.map(|()| found))
    }

    /// The files of a volume as a tar archive whose paths start with `target`'s last
    /// part, read through a container of `image` that mounts it at `target` and never
    /// starts.
    pub async fn read_volume(
        &self,
        volume: &str,
        target: &str,
        image: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<u8>, EngineError> {
        let helper = self
            .volume_helper(volume, target, image, labels, "read")
            .await?;
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(target)
            .build();
        let mut stream = self.docker.download_from_container(&helper, Some(options));
        let mut tar = Vec::new();
        let mut read = Ok(());
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => tar.extend_from_slice(&bytes),
                Err(e) => {
                    read = Err(EngineError::call(format!(
                        "copy files out of volume `{volume}`"
                    ))(e));
                    break;
                }
            }
        }
        let removed = self.remove_container(&helper).await;
        read.and(removed).map(|()| tar)
    }

    /// A container of `image` that mounts `volume` at `target`, never started, with no
    /// network: for copying files in and out. Labelled as the run's, so that teardown
    /// and gc find it too.
    async fn volume_helper(
        &self,
        volume: &str,
        target: &str,
        image: &str,
        labels: HashMap<String, String>,
        purpose: &str,
    ) -> Result<String, EngineError> {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let body = ContainerCreateBody {
            // Never run; the engine wants a command all the same.
            entrypoint: Some(vec![format!("{target}/none")]),
            image: Some(image.to_owned()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    target: Some(target.to_owned()),
                    source: Some(volume.to_owned()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        // No playbook name holds a `.`: this name never clashes with another container;
        // the count keeps two helpers of one volume apart (volumes that runs share).
        let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{volume}.{purpose}.{}-{count}", std::process::id());
        self.create_helper(&name, body).await
    }

    /// Creates one of openmono's short-lived helper containers, exactly as `body` says.
    async fn create_helper(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, EngineError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        Ok(self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(EngineError::call(format!("create container `{name}`")))?
            .id)
    }

    /// Deletes the default routes of container `target` (running), through a helper
    /// container of `image` that joins its network namespace, mounts the engine's volume of
    /// openmono at `self_dir` and runs `openmono seal-routes` there with `CAP_NET_ADMIN`,
    /// the only capability it has, and that only in the box's network namespace. The
    /// box never holds it. The inner error is what the helper said.
    pub async fn seal_routes(
        &self,
        target: &str,
        image: &str,
        (volume, self_dir): (&str, &str),
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<Result<(), String>, EngineError> {
        let body = ContainerCreateBody {
            entrypoint: Some(vec![format!("{self_dir}/openmono"), "seal-routes".into()]),
            image: Some(image.to_owned()),
            labels: Some(labels),
            // Root, so that the capability is in effect; it owns nothing but the netns.
            user: Some("0:0".into()),
            host_config: Some(HostConfig {
                cap_add: Some(vec!["NET_ADMIN".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                mounts: Some(vec![Mount {
                    target: Some(self_dir.to_owned()),
                    source: Some(volume.to_owned()),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(true),
                    ..Default::default()
                }]),
                network_mode: Some(format!("container:{target}")),
                pids_limit: Some(16),
                privileged: Some(false),
                readonly_rootfs: Some(true),
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let helper = self.create_helper(name, body).await?;
        let ran = async {
            self.start_container(&helper).await?;
            let code = self.exited(&helper).await?;
            Ok(match code {
                0 => Ok(()),
                _ => Err(format!(
                    "exit code {code}: {}",
                    self.log_tail(&helper, 5).await.trim()
                )),
            })
        }
        .await;
        let removed = self.remove_container(&helper).await;
        let sealed = ran?;
        removed.map(|()| sealed)
    }

    /// The gateway addresses of a bridge network's subnets, which would be the host's.
    /// An overlay's gateway is on a bridge in the network's own namespace on each node,
    /// which has no route but to the network's own subnet: none is given for it.
    pub async fn network_gateways(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let network = self
            .swarm_api()
            .inspect_network(name, None)
            .await
            .map_err(EngineError::call(format!("inspect network `{name}`")))?;
        if network.driver.as_deref() == Some("overlay") {
            return Ok(Vec::new());
        }
        Ok(network
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .collect())
    }

    pub async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        // The swarm started it.
        if self.is_task_container(id) {
            return Ok(());
        }
        self.docker
            .start_container(id, None)
            .await
            .map_err(EngineError::call("start the container"))
    }

    /// Kills and removes a container (with its service, for a service's task
    /// container); one that is already gone counts as removed.
    pub async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        if self.remove_task_container(id).await? {
            return Ok(());
        }
        self.remove_plain_container(id).await
    }

    /// Kills and removes a container, never its service.
    pub(super) async fn remove_plain_container(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            // Gone, or going: another `gc` or teardown is removing it right now.
            Err(e) if !is_not_found(&e) && !is_being_removed(&e) => {
                Err(EngineError::call(format!("remove container `{id}`"))(e))
            }
            _ => Ok(()),
        }
    }

    /// The engine's verdict on a container with a health check, and the output of its
    /// last check.
    pub async fn health(&self, id: &str) -> Result<(Liveness, HealthVerdict, String), EngineError> {
        let state = self.state(id).await?;
        let liveness = Liveness::of(&state);
        let health = state.health.unwrap_or_default();
        let verdict = match health.status {
            Some(HealthStatusEnum::HEALTHY) => HealthVerdict::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => HealthVerdict::Unhealthy,
            _ => HealthVerdict::Starting,
        };
        let last = health
            .log
            .and_then(|log| log.last().and_then(|l| l.output.clone()))
            .unwrap_or_default();
        Ok((liveness, verdict, last))
    }

    pub async fn liveness(&self, id: &str) -> Result<Liveness, EngineError> {
        Ok(Liveness::of(&self.state(id).await?))
    }

    /// Waits until the container stops (at once if it has), and returns its exit code.
    pub async fn exited(&self, id: &str) -> Result<i64, EngineError> {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match self.docker.wait_container(id, Some(options)).next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error of the wait itself.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(EngineError::call("wait for a container")(e)),
            None => match self.liveness(id).await? {
                Liveness::Exited(code) => Ok(code),
                Liveness::Running => Err(EngineError::call("wait for a container")(
                    BollardError::DockerContainerWaitError {
                        error: "the engine ended the wait while the container runs".into(),
                        code: -1,
                    },
                )),
            },
        }
    }

    async fn state(&self, id: &str) -> Result<ContainerState, EngineError> {
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(EngineError::call("inspect a container"))?;
        Ok(info.state.unwrap_or_default())
    }

    /// The last `lines` lines of a container's output, for failure reports.
    pub async fn log_tail(&self, id: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut out = String::new();
        let mut logs = self.docker.logs(id, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        out
    }

    /// Hands each line a container writes to `on_line`, from its start until it stops
    /// (or the future is dropped).
    pub async fn follow_logs(&self, id: &str, mut on_line: impl FnMut(Stream, &str)) {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .build();
        let mut logs = self.docker.logs(id, Some(options));
        let mut buffers = LineBuffers::default();
        // A broken stream ends the following, never the run.
        while let Some(Ok(chunk)) = logs.next().await {
            buffers.push_output(chunk, &mut on_line);
        }
        buffers.finish(&mut on_line);
    }

    /// Runs a command in a running container, in its working directory, without a TTY
    /// and with stdin closed,
    /// handing each output line to `on_line`; returns the command's exit code.
    pub async fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        env: &[String],
        mut on_line: impl FnMut(Stream, &str),
    ) -> Result<i64, EngineError> {
        let config = CreateExecOptions {
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(cmd),
            env: Some(env.to_vec()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(id, config)
            .await
            .map_err(EngineError::call("create an exec"))?;
        let started = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(EngineError::call("start an exec"))?;
        if let StartExecResults::Attached { mut output, .. } = started {
            let mut buffers = LineBuffers::default();
            while let Some(chunk) = output.next().await {
                let chunk = chunk.map_err(EngineError::call("read an exec's output"))?;
                buffers.push_output(chunk, &mut on_line);
            }
            buffers.finish(&mut on_line);
        }
        // The stream can end a moment before the engine records the exit code. Still
        // running after that, the stream was cut (an ssh connection that died): the
        // command goes on, its output is lost from here, and its exit code still counts.
        let ended = std::time::Instant::now();
        let mut cut = false;
        loop {
            let info = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(EngineError::call("inspect an exec"))?;
            if info.running != Some(true) {
                return Ok(info.exit_code.unwrap_or(-1));
            }
            if !cut && ended.elapsed() >= Duration::from_secs(2) {
                cut = true;
                on_line(
                    Stream::Stderr,
                    "openmono: the connection that carried this command's output broke; the command goes on, and what it prints from here is lost",
                );
            }
            tokio::time::sleep(Duration::from_millis(if cut { 500 } else { 20 })).await;
        }
    }

    /// A volume (a kept one may exist already: creating it again keeps its data).
    pub async fn create_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(EngineError::call(format!("create volume `{name}`")))
    }

    /// The value of `label` on volume `name`; `None` when it lacks the label or the
    /// engine has no such volume.
    pub async fn volume_label(
        &self,
        name: &str,
        label: &str,
    ) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_volume(name).await {
            Ok(mut volume) => Ok(volume.labels.remove(label)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(EngineError::call(format!("look at volume `{name}`"))(e)),
        }
    }

    /// The engine's address, as the user chose it.
    pub fn address(&self) -> String {
        self.endpoint.address()
    }

    /// Removes a volume; one that is already gone counts as removed.
    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        match self
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Err(e) if !is_not_found(&e) => {
                Err(EngineError::call(format!("remove volume `{name}`"))(e))
            }
            _ => Ok(()),
        }
    }

    /// The containers attached to a network: id and name, for an error that says who
    /// holds it and for disconnecting one's own.
    pub async fn network_users(&self, id: &str) -> Vec<(String, String)> {
        self.docker
            .inspect_network(id, None)
            .await
            .ok()
            .and_then(|n| n.containers)
            .map(|c| {
                c.into_iter()
                    // An overlay's load balancer on this node: the engine's own.
                    .filter(|(id, _)| !id.starts_with("lb-"))
                    .map(|(id, e)| {
                        let name = e.name.unwrap_or_else(|| id.clone());
                        (id, name)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Detaches a container from a network, forcibly.
    pub async fn disconnect(&self, network: &str, container: &str) -> Result<(), EngineError> {
        let request = NetworkDisconnectRequest {
            container: container.to_owned(),
            force: Some(true),
        };
        match self.docker.disconnect_network(network, request).await {
            Err(e) if !is_not_found(&e) => Err(EngineError::call(format!(
                "disconnect `{container}` from network `{network}`"
            ))(e)),
            _ => Ok(()),
        }
    }

    /// The value of `label` on a container, if it has it.
    pub async fn container_label(&self, id: &str, label: &str) -> Option<String> {
        self.docker
            .inspect_container(id, None)
            .await
            .ok()?
            .config?
            .labels?
            .remove(label)
    }

    /// Asks a container to stop: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        match self.docker.stop_container(id, Some(options)).await {
            Err(e) if !is_not_found(&e) => {
                Err(EngineError::call(format!("stop container `{id}`"))(e))
            }
            _ => Ok(()),
        }
    }

    /// The ids of the containers, running or not, that carry `label`.
    pub(super) async fn containers_labelled(
        &self,
        label: &str,
    ) -> Result<Vec<String>, EngineError> {
        Ok(self
            .list_containers(label)
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect())
    }

    /// The containers, running or not, that carry `label`.
    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        self.docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(EngineError::call("list containers"))
    }

    /// Every service (on a swarm manager), container, network and volume that carries
    /// `label` (`key` or `key=value`), in that order: the order to remove them in.
    pub async fn objects(&self, label: &str) -> Result<Vec<EngineObject>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let mut objects = self.services(label).await?;
        // A service's task containers go with it: listed once, as the service.
        let services: Vec<String> = objects.iter().map(|o| o.id.clone()).collect();
        objects.extend(
            self.list_containers(label)
                .await?
                .into_iter()
                .filter_map(|c| {
                    Some(EngineObject {
                        name: c.names?.first()?.trim_start_matches('/').to_owned(),
                        id: c.id?,
                        kind: ObjectKind::Container,
                        labels: c.labels.unwrap_or_default(),
                    })
                })
                .filter(|c| {
                    c.labels
                        .get(super::swarm::SERVICE_ID)
                        .is_none_or(|service| !services.contains(service))
                }),
        );
        objects.extend(
            self.swarm_api()
                .list_networks(Some(
                    ListNetworksOptionsBuilder::default()
                        .filters(&filters)
                        .build(),
                ))
                .await
                .map_err(EngineError::call("list networks"))?
                .into_iter()
                .filter_map(|n| {
                    Some(EngineObject {
                        id: n.id?,
                        kind: ObjectKind::Network,
                        labels: n.labels.unwrap_or_default(),
                        name: n.name?,
                    })
                }),
        );
        objects.extend(
            self.docker
                .list_volumes(Some(ListVolumesOptions {
                    filters: Some(filters),
                }))
                .await
                .map_err(EngineError::call("list volumes"))?
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| EngineObject {
                    id: v.name.clone(),
                    kind: ObjectKind::Volume,
                    labels: v.labels,
                    name: v.name,
                }),
        );
        Ok(objects)
    }

    /// Removes one object; one that is already gone counts as removed.
    pub async fn remove(&self, object: &EngineObject) -> Result<(), EngineError> {
        self.remove_within(object, super::swarm::LATE_TASKS).await
    }

    /// [`Self::remove`], waiting at most `patience` for the swarm to let go of a network.
    pub async fn remove_within(
        &self,
        object: &EngineObject,
        patience: Duration,
    ) -> Result<(), EngineError> {
        match object.kind {
            ObjectKind::Service => self.remove_service(&object.id, false).await,
            ObjectKind::Container => self.remove_container(&object.id).await,
            ObjectKind::Network => self.remove_network_within(&object.id, patience).await,
            ObjectKind::Volume => self.remove_volume(&object.id).await,
        }
    }
}

/// Every mount of a container, as structured mounts: a path with spaces, commas or
/// colons is only ever one path.
pub(super) fn mounts(spec: &ContainerSpec) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(m.source.clone()),
            typ: Some(if m.volume {
                MountType::VOLUME
            } else {
                MountType::BIND
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    // The engine mounts a tmpfs `noexec,nosuid,nodev`; API 1.41 cannot change that.
    mounts.extend(spec.tmpfs.iter().map(|(target, size)| Mount {
        target: Some(target.clone()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: i64::try_from(*size).ok(),
            mode: Some(0o1777),
            ..Default::default()
        }),
        ..Default::default()
    }));
    mounts
}

fn is_being_removed(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } if message.contains("already in progress")
    )
}

/// What a swarm manager says of an overlay that a task still holds (a node's own
/// container on it, or the attachment task that lingers a moment after it).
pub(super) const HELD_BY_SWARM: &str = "is in use by task";

pub(super) fn is_not_found(e: &BollardError) -> bool {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => true,
        // A swarm manager says so with a 500 about an overlay it is removing already.
        BollardError::DockerResponseServerError {
            status_code: 500,
            message,
        } => message.starts_with("network ") && message.ends_with(" not found"),
        _ => false,
    }
}

/// Splits an exec's byte chunks into lines per stream; a line may span chunks.
#[derive(Default)]
struct LineBuffers {
    stderr: Vec<u8>,
    stdout: Vec<u8>,
}

impl LineBuffers {
    /// One chunk of a container's or an exec's output, by the stream it came on.
    fn push_output(&mut self, chunk: LogOutput, on_line: &mut impl FnMut(Stream, &str)) {
        let (stream, bytes) = match chunk {
            LogOutput::StdErr { message } => (Stream::Stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (Stream::Stdout, message)
            }
            LogOutput::StdIn { .. } => return,
        };
        self.push(stream, &bytes, on_line);
    }

    fn push(&mut self, stream: Stream, bytes: &[u8], on_line: &mut impl FnMut(Stream, &str)) {
        let buffer = match stream {
            Stream::Stderr => &mut self.stderr,
            Stream::Stdout => &mut self.stdout,
        };
        buffer.extend_from_slice(bytes);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            on_line(
                stream,
                String::from_utf8_lossy(&line[..end]).trim_end_matches('\r'),
            );
        }
    }

    fn finish(&mut self, on_line: &mut impl FnMut(Stream, &str)) {
        for (stream, buffer) in [
            (Stream::Stdout, &mut self.stdout),
            (Stream::Stderr, &mut self.stderr),
        ] {
            if !buffer.is_empty() {
                on_line(stream, &String::from_utf8_lossy(buffer));
                buffer.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn unset_limits_are_fractions_of_the_engine_and_set_ones_stay() {
        let engine = Capacity {
            cpus: 4,
            memory: 16 * GIB,
        };
        assert_eq!(
            engine.bound(Limits::default()),
            Limits {
                cpus: Some(3),
                memory: Some(8 * GIB),
                pids: Some(DEFAULT_PIDS),
            }
        );
        let own = Limits {
            cpus: Some(1),
            memory: Some(GIB),
            pids: Some(7),
        };
        assert_eq!(engine.bound(own), own);
        // One CPU, or an engine that says nothing: no CPU limit, no memory limit.
        let single = Capacity { cpus: 1, memory: 0 };
        assert_eq!(
            single.bound(Limits::default()),
            Limits {
                cpus: None,
                memory: None,
                pids: Some(DEFAULT_PIDS),
            }
        );
    }

    #[test]
    fn a_model_gets_half_again_its_estimate_up_to_all_the_engine_has() {
        let engine = Capacity {
            cpus: 2,
            memory: 16 * GIB,
        };
        assert_eq!(engine.bound_model(GIB).memory, Some(8 * GIB));
        assert_eq!(engine.bound_model(8 * GIB).memory, Some(12 * GIB));
        assert_eq!(engine.bound_model(20 * GIB).memory, Some(16 * GIB));
        assert_eq!(engine.bound_model(GIB).cpus, Some(1));
    }
}
