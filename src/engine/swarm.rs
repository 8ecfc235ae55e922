//! The same calls on a Docker Swarm manager: a playbook's containers, models and replay
//! servers become services of one task that never restarts, on overlay networks that
//! are internal and attachable (a model on GPUs is a container of its node's engine
//! instead: see `Engine::create_container`). Everything else (volumes, helpers, execs, logs) goes
//! through the node's own engine, so a run's services are placed on the node openmono
//! is connected to, plus whatever placement the playbook asks for. With docker.rs, the
//! only file that imports bollard.

use std::{collections::HashMap, time::Duration};

use bollard::{
    models::{
        EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, LocalNodeState,
        NetworkAttachmentConfig, NodeSpecAvailabilityEnum, NodeState, ServiceSpec, ServiceSpecMode,
        ServiceSpecModeReplicated, SystemInfo, TaskSpec, TaskSpecContainerSpec,
        TaskSpecContainerSpecDnsConfig, TaskSpecContainerSpecPrivileges, TaskSpecPlacement,
        TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
    },
    query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder},
};

use super::{
    Endpoint, EngineError,
    docker::{ContainerSpec, Engine, EngineObject, ObjectKind, is_not_found, mounts},
};
use crate::step::DEFAULT_PIDS;

/// The label the engine puts on a service's task containers.
pub(super) const SERVICE_ID: &str = "com.docker.swarm.service.id";

/// How often a service's task is looked at while it is scheduled and started.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// How long a removed service's containers are looked for, at most.
pub(super) const LATE_TASKS: Duration = Duration::from_secs(15);

/// The label of a swarm node that names the node's own engine, as a URL
/// (`tcp://…`, `ssh://…`, `unix://…`). A run's volumes, execs and logs need the engine
/// of the node it runs on, which a manager does not relay: the runs of a matrix are
/// spread over the node openmono is connected to and the nodes that carry this label.
pub const NODE_ENGINE_LABEL: &str = "dev.openmono.engine";

/// A node of the swarm that can take runs, and how to reach its own engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmNode {
    pub id: String,
    pub hostname: String,
    /// Its own engine, from its [`NODE_ENGINE_LABEL`]; `None` for the node openmono
    /// is connected to.
    pub engine: Option<Endpoint>,
    pub labels: HashMap<String, String>,
}

impl SwarmNode {
    /// Whether the node has every label `placement` asks for.
    pub fn fits(&self, placement: &[(String, String)]) -> bool {
        placement
            .iter()
            .all(|(label, value)| self.labels.get(label) == Some(value))
    }
}

impl std::fmt::Display for SwarmNode {
    /// `worker-1 (q5lkwqq0nf75)`: hostnames need not differ.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short: String = self.id.chars().take(12).collect();
        write!(f, "{} ({short})", self.hostname)
    }
}

impl Engine {
    /// The id of the node this engine runs on when it is an active swarm manager (where
    /// a run's containers become services); `None` on a plain engine or a worker,
    /// which runs containers. Asked once per connection.
    pub async fn swarm_node(&self) -> Result<Option<String>, EngineError> {
        self.swarm
            .get_or_try_init(|| async {
                let info = self
                    .docker
                    .info()
                    .await
                    .map_err(EngineError::call("ask the engine about itself"))?;
                Ok(manager_node(&info))
            })
            .await
            .cloned()
    }

    /// The nodes of this manager's swarm that can take runs: its own, first, and those
    /// that carry [`NODE_ENGINE_LABEL`] and can take work (ready and active), in the
    /// swarm's order. A node whose label names no engine openmono can use is an `Err`
    /// that says why. None on an engine that is not a swarm manager.
    pub async fn run_nodes(&self) -> Result<Vec<Result<SwarmNode, String>>, EngineError> {
        let Some(own) = self.swarm_node().await? else {
            return Ok(Vec::new());
        };
        let mut nodes = self
            .swarm_api()
            .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
            .await
            .map_err(EngineError::call("list the swarm's nodes"))?;
        // Its own node first: the one that takes a run when all are as busy.
        nodes.sort_by_key(|node| node.id.as_deref() != Some(own.as_str()));
        Ok(nodes
            .into_iter()
            .filter_map(|node| {
                let id = node.id?;
                let spec = node.spec?;
                let ready = node.status.and_then(|s| s.state) == Some(NodeState::READY);
                let active = spec.availability == Some(NodeSpecAvailabilityEnum::ACTIVE);
                let hostname = node
                    .description
                    .and_then(|d| d.hostname)
                    .unwrap_or_else(|| id.clone());
                let mut labels = spec.labels.unwrap_or_default();
                let url = labels.remove(NODE_ENGINE_LABEL);
                let engine = match url {
                    _ if id == own => None,
                    Some(url) if ready && active => {
                        match Endpoint::for_node(&url, &hostname, &self.endpoint) {
                            Ok(engine) => Some(engine),
                            Err(e) => {
                                let short: String = id.chars().take(12).collect();
                                return Some(Err(format!(
                                    "swarm node {hostname} ({short}): its label {NODE_ENGINE_LABEL}: {e}"
                                )));
                            }
                        }
                    }
                    _ => return None,
                };
                Some(Ok(SwarmNode {
                    id,
                    hostname,
                    engine,
                    labels,
                }))
            })
            .collect())
    }

    /// The engine of `node`, for a run placed there: its own engine for containers,
    /// volumes and execs, and this manager for services and networks. Fails when that
    /// engine cannot be reached or is not that node's.
    pub async fn on_node(&self, node: &SwarmNode) -> Result<Self, EngineError> {
        let Some(endpoint) = &node.engine else {
            return Ok(self.clone());
        };
        let mut engine = Self::connect(endpoint).await?;
        let info = engine
            .docker
            .info()
            .await
            .map_err(EngineError::call("ask the engine about itself"))?;
        let found = info.swarm.and_then(|s| s.node_id).unwrap_or_default();
        if found != node.id {
            let is = if found.is_empty() {
                "an engine that is in no swarm".to_owned()
            } else {
                format!("the engine of node {found}")
            };
            return Err(EngineError::Swarm(format!(
                "its label {NODE_ENGINE_LABEL} names the engine {}, but that is {is}: correct the label (`docker node update --label-add {NODE_ENGINE_LABEL}=URL {}`)",
                endpoint.address(),
                node.id
            )));
        }
        engine.swarm =
            std::sync::Arc::new(tokio::sync::OnceCell::new_with(Some(Some(node.id.clone()))));
        engine.manager = Some(std::sync::Arc::new(self.clone()));
        Ok(engine)
    }

    /// Fails unless swarm node `node` has every label `placement` asks for: what the
    /// swarm checks for a service, for a container of the node's own engine.
    pub(super) async fn check_placement(
        &self,
        node: &str,
        placement: &[(String, String)],
    ) -> Result<(), EngineError> {
        if placement.is_empty() {
            return Ok(());
        }
        let found = self
            .swarm_api()
            .inspect_node(node)
            .await
            .map_err(EngineError::call(format!("inspect swarm node `{node}`")))?;
        let labels = found.spec.and_then(|s| s.labels).unwrap_or_default();
        let missing: Vec<String> = placement
            .iter()
            .filter(|(label, value)| labels.get(label) != Some(value))
            .map(|(label, value)| format!("{label}={value}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(EngineError::Swarm(format!(
            "its run's node {node} has not {}: one run goes to the node openmono is connected to, and a matrix's runs to the nodes labelled {NODE_ENGINE_LABEL} that have every label its `placement`s ask for",
            missing.join(", ")
        )))
    }

    /// Waits until this node no longer sees network `id`, which its manager removed;
    /// at most [`LATE_TASKS`].
    pub(super) async fn wait_network_gone(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + LATE_TASKS;
        while tokio::time::Instant::now() < deadline {
            match self.docker.inspect_network(id, None).await {
                Err(e) if is_not_found(&e) => return,
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// A service of one task for `spec`, placed on `node` (and wherever `spec`'s
    /// placement says); returns the engine id of its task's container once the swarm
    /// has started it. A task the swarm cannot place or start removes the service
    /// again and fails with the swarm's reason.
    pub(super) async fn create_service(
        &self,
        spec: ContainerSpec,
        node: &str,
    ) -> Result<String, EngineError> {
        let name = spec.name.clone();
        let service = self
            .swarm_api()
            .create_service(service_spec(spec, node), None)
            .await
            .map_err(EngineError::call(format!("create service `{name}`")))?
            .id
            .unwrap_or_default();
        match self.task_container(&service, &name).await {
            Ok(container) => {
                super::lock(&self.services).insert(container.clone(), service);
                Ok(container)
            }
            Err(e) => {
                let _ = self.remove_service(&service, false).await;
                Err(e)
            }
        }
    }

    /// Waits until the one task of `service` has a container that the swarm started
    /// (or that already ended: the caller finds out how).
    async fn task_container(&self, service: &str, name: &str) -> Result<String, EngineError> {
        let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
        loop {
            let tasks = self
                .swarm_api()
                .list_tasks(Some(
                    ListTasksOptionsBuilder::default().filters(&filters).build(),
                ))
                .await
                .map_err(EngineError::call(format!("list the tasks of `{name}`")))?;
            if let Some(status) = tasks.into_iter().find_map(|t| t.status) {
                let container = status
                    .container_status
                    .as_ref()
                    .and_then(|c| c.container_id.clone())
                    .filter(|id| !id.is_empty());
                let why = status.err.or(status.message).unwrap_or_default();
                match (status.state, container) {
                    (
                        Some(
                            TaskState::STARTING
                            | TaskState::RUNNING
                            | TaskState::COMPLETE
                            | TaskState::FAILED,
                        ),
                        Some(container),
                    ) => return Ok(container),
                    (Some(TaskState::REJECTED | TaskState::FAILED | TaskState::ORPHANED), _) => {
                        return Err(EngineError::Swarm(format!(
                            "the swarm could not start it: {why}"
                        )));
                    }
                    // The scheduler says why it waits: no node meets the constraints.
                    (Some(TaskState::PENDING), _) if why.contains("no suitable node") => {
                        return Err(EngineError::Swarm(format!(
                            "no node of the swarm can run it: {why}; its run's node (the node openmono is connected to, or for a matrix one labelled {NODE_ENGINE_LABEL}) must have the labels its `placement` asks for"
                        )));
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Removes the service of a task container (`container`) that this connection made:
    /// its container first, at once (the swarm would stop it with a grace period), then
    /// the service. `false` when `container` is not such a task container.
    pub(super) async fn remove_task_container(&self, container: &str) -> Result<bool, EngineError> {
        let Some(service) = super::lock(&self.services).remove(container) else {
            return Ok(false);
        };
        self.remove_plain_container(container).await?;
        self.remove_service(&service, true).await?;
        Ok(true)
    }

    /// Whether `container` is the task container of a service this connection made.
    pub(super) fn is_task_container(&self, container: &str) -> bool {
        super::lock(&self.services).contains_key(container)
    }

    /// Removes a service and its task containers; one that is gone counts as removed.
    /// The service goes first, so that the swarm starts no new task. Unless its task's
    /// container is known to be gone already (`settled`), a container the node was
    /// still making for it (openmono was killed while the swarm started it) may appear
    /// a moment later: its containers are looked for until none has come for a while.
    pub(super) async fn remove_service(
        &self,
        service: &str,
        settled: bool,
    ) -> Result<(), EngineError> {
        match self.swarm_api().delete_service(service).await {
            Err(e) if !is_not_found(&e) => {
                return Err(EngineError::call(format!("remove service `{service}`"))(e));
            }
            _ => {}
        }
        let label = format!("{SERVICE_ID}={service}");
        let quiet_enough = if settled { 1 } else { 3 };
        let deadline = tokio::time::Instant::now() + LATE_TASKS;
        let mut quiet = 0;
        while quiet < quiet_enough && tokio::time::Instant::now() < deadline {
            let containers = self.containers_labelled(&label).await?;
            quiet = if containers.is_empty() { quiet + 1 } else { 0 };
            for container in containers {
                self.remove_plain_container(&container).await?;
            }
            if quiet < quiet_enough {
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// The services that carry `label`, on a swarm manager; none elsewhere.
    pub(super) async fn services(&self, label: &str) -> Result<Vec<EngineObject>, EngineError> {
        if self.swarm_node().await?.is_none() {
            return Ok(Vec::new());
        }
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        Ok(self
            .swarm_api()
            .list_services(Some(
                ListServicesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(EngineError::call("list services"))?
            .into_iter()
            .filter_map(|s| {
                let spec = s.spec?;
                Some(EngineObject {
                    id: s.id?,
                    kind: ObjectKind::Service,
                    labels: spec.labels.unwrap_or_default(),
                    name: spec.name?,
                })
            })
            .collect())
    }
}

/// The node's id, if the engine that says `info` is an active swarm manager.
pub(super) fn manager_node(info: &SystemInfo) -> Option<String> {
    let swarm = info.swarm.as_ref()?;
    (swarm.local_node_state == Some(LocalNodeState::ACTIVE)
        && swarm.control_available == Some(true))
    .then(|| swarm.node_id.clone())
    .flatten()
}

/// What the swarm is told for `spec`: one replica, never restarted, on `node`, with the
/// hardening of a plain container (see `create_container`). Names on its networks
/// resolve to its container itself (`dnsrr`), not to a virtual address.
fn service_spec(spec: ContainerSpec, node: &str) -> ServiceSpec {
    let mounts = mounts(&spec);
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let health_check = spec
        .health
        .map(|(test, interval, timeout, retries)| HealthConfig {
            test: Some(test),
            interval: Some(nanos(interval)),
            timeout: Some(nanos(timeout)),
            retries: Some(i64::from(retries)),
            ..Default::default()
        });
    let (command, args) = match spec.entrypoint {
        Some(entrypoint) => (Some(entrypoint), Some(spec.cmd)),
        None => (None, Some(spec.cmd)),
    };
    let mut constraints = vec![format!("node.id=={node}")];
    constraints.extend(
        spec.placement
            .iter()
            .map(|(label, value)| format!("node.labels.{label}=={value}")),
    );
    let container = TaskSpecContainerSpec {
        image: Some(spec.image),
        labels: Some(spec.labels.clone()),
        command,
        args,
        env: Some(spec.env),
        dir: spec.working_dir,
        user: spec.user,
        // Engines before API 1.46 ignore it; the box's own processes set it too.
        privileges: Some(TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(true),
            ..Default::default()
        }),
        read_only: Some(spec.read_only_rootfs),
        mounts: Some(mounts),
        health_check,
        dns_config: (!spec.dns.is_empty() || !spec.dns_options.is_empty()).then(|| {
            TaskSpecContainerSpecDnsConfig {
                nameservers: Some(spec.dns),
                options: Some(spec.dns_options),
                ..Default::default()
            }
        }),
        init: spec.init.then_some(true),
        capability_drop: Some(vec!["ALL".into()]),
        ..Default::default()
    };
    let networks = spec
        .networks
        .into_iter()
        .map(|(target, aliases)| NetworkAttachmentConfig {
            target: Some(target),
            aliases: Some(aliases),
            ..Default::default()
        })
        .collect();
    ServiceSpec {
        name: Some(spec.name),
        labels: Some(spec.labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: spec.limits.cpus.map(|c| i64::from(c) * 1_000_000_000),
                    memory_bytes: spec.limits.memory.and_then(|m| i64::try_from(m).ok()),
                    pids: Some(i64::from(spec.limits.pids.unwrap_or(DEFAULT_PIDS))),
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(constraints),
                ..Default::default()
            }),
            networks: Some(networks),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ..Default::default()
        }),
        ..Default::default()
    }
}
