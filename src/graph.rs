//! The playbook's resources as a petgraph DAG: an edge goes from what is needed to what
//! needs it. References (`network "x"`, `model="coder"`, `after="fix"`) become edges and
//! are checked here; the step order of a plan is this graph's topological order.

use std::collections::{BTreeSet, HashMap};

use miette::SourceSpan;

use petgraph::{
    Direction,
    algo::tarjan_scc,
    graph::{DiGraph, NodeIndex},
};

use crate::{
    GraphError,
    playbook::{Playbook, Spanned, TaskKind},
};

/// One node of the graph; the index is into the playbook's list of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Image(usize),
    Network(usize),
    Volume(usize),
    Model(usize),
    Container(usize),
    /// A model's server answers `/health`, probed from container `.1`.
    ModelReady(usize, usize),
    Task(usize),
}

/// The checked graph and its order.
#[derive(Debug)]
pub struct ResourceGraph {
    pub graph: DiGraph<Resource, ()>,
    /// Every resource, dependencies first; ties keep the playbook's order.
    pub order: Vec<Resource>,
    index: HashMap<Resource, NodeIndex>,
}

impl ResourceGraph {
    /// What `resource` needs directly: the resources with an edge to it.
    pub fn needs(&self, resource: Resource) -> impl Iterator<Item = Resource> + '_ {
        self.index.get(&resource).into_iter().flat_map(move |n| {
            self.graph
                .neighbors_directed(*n, Direction::Incoming)
                .map(|m| self.graph[m])
        })
    }
}

/// Builds the graph of a decoded playbook, reporting every bad reference and cycle.
pub fn build(playbook: &Playbook) -> Result<ResourceGraph, Vec<GraphError>> {
    GraphBuilder::new(playbook).build()
}

struct GraphBuilder<'a> {
    errors: Vec<GraphError>,
    graph: DiGraph<Resource, ()>,
    index: HashMap<Resource, NodeIndex>,
    /// Where each name is defined, so that a reference is not a search of the list.
    names: Names<'a>,
    playbook: &'a Playbook,
}

/// The index of the first resource of each name, per kind (a later one is a duplicate
/// the decoder reported), and who is on each network.
struct Names<'a> {
    containers: HashMap<&'a str, usize>,
    /// The containers on each network, in playbook order.
    containers_on: HashMap<&'a str, Vec<usize>>,
    images: HashMap<&'a str, usize>,
    models: HashMap<&'a str, usize>,
    /// The models on each network, in playbook order.
    models_on: HashMap<&'a str, Vec<usize>>,
    networks: HashMap<&'a str, usize>,
    tasks: HashMap<&'a str, usize>,
    volumes: HashMap<&'a str, usize>,
}

impl<'a> Names<'a> {
    fn new(p: &'a Playbook) -> Self {
        fn first<'a>(names: impl ExactSizeIterator<Item = &'a String>) -> HashMap<&'a str, usize> {
            let mut map = HashMap::with_capacity(names.len());
            for (i, name) in names.enumerate() {
                map.entry(name.as_str()).or_insert(i);
            }
            map
        }
        let mut containers_on: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, c) in p.containers.iter().enumerate() {
            for (net, _) in &c.networks {
                containers_on.entry(net.value.as_str()).or_default().push(i);
            }
        }
        let mut models_on: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, m) in p.models.iter().enumerate() {
            models_on
                .entry(m.network.value.as_str())
                .or_default()
                .push(i);
        }
        Self {
            containers: first(p.containers.iter().map(|c| &c.name.value)),
            containers_on,
            images: first(p.images.iter().map(|i| &i.reference.value)),
            models: first(p.models.iter().map(|m| &m.name.value)),
            models_on,
            networks: first(p.networks.iter().map(|n| &n.name.value)),
            tasks: first(p.tasks.iter().map(|t| &t.name.value)),
            volumes: first(p.volumes.iter().map(|v| &v.name.value)),
        }
    }
}

impl<'a> GraphBuilder<'a> {
    fn new(playbook: &'a Playbook) -> Self {
        let p = playbook;
        // Every resource, and a readiness node per model: room for all from the start.
        let nodes = p.networks.len()
            + p.volumes.len()
            + p.images.len()
            + 2 * p.models.len()
            + p.containers.len()
            + p.tasks.len();
        Self {
            errors: Vec::new(),
            graph: DiGraph::with_capacity(nodes, 0),
            index: HashMap::with_capacity(nodes),
            names: Names::new(playbook),
            playbook,
        }
    }

    fn build(mut self) -> Result<ResourceGraph, Vec<GraphError>> {
        let p = self.playbook;
        for i in 0..p.networks.len() {
            self.node(Resource::Network(i));
        }
        for i in 0..p.volumes.len() {
            self.node(Resource::Volume(i));
        }
        for i in 0..p.images.len() {
            self.node(Resource::Image(i));
        }
        for (i, model) in p.models.iter().enumerate() {
            let me = Resource::Model(i);
            self.node(me);
            self.edge_from_image(&model.image.value, me);
            self.edge_to_network(&model.network, me);
        }
        for (i, container) in p.containers.iter().enumerate() {
            let me = Resource::Container(i);
            self.node(me);
            self.edge_from_image(&container.image.value, me);
            for (net, _) in &container.networks {
                self.edge_to_network(net, me);
            }
            for mount in &container.volumes {
                match self.names.volumes.get(mount.volume.value.as_str()) {
                    Some(&v) => self.edge(Resource::Volume(v), me),
                    None => self.unknown(
                        "volume",
                        &mount.volume,
                        p.volumes.iter().map(|v| &v.name.value),
                    ),
                }
            }
        }
        for (i, task) in p.tasks.iter().enumerate() {
            let me = Resource::Task(i);
            self.node(me);
            let container = self.lookup_container(task.kind.container());
            if let Some(c) = container {
                self.edge(Resource::Container(c), me);
                self.edges_from_neighbours(c, me);
            }
            if let TaskKind::Agent { model, .. } = &task.kind
                && let (Some(m), Some(c)) = (self.lookup_model(model), container)
            {
                self.model_for(m, c, model, me);
            }
            for after in &task.after {
                match self.names.tasks.get(after.value.as_str()) {
                    Some(&j) => self.edge(Resource::Task(j), me),
                    None => self.unknown("task", after, p.tasks.iter().map(|t| &t.name.value)),
                }
            }
        }
        self.check_cycles();
        self.check_host_names();
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let order = self.order();
        Ok(ResourceGraph {
            graph: self.graph,
            index: self.index,
            order,
        })
    }

    /// Task `me` uses model `m` from container `c`: both must share a network, and the
    /// model must be ready (probed from `c`) before the task starts.
    fn model_for(&mut self, m: usize, c: usize, reference: &Spanned<String>, me: Resource) {
        let p = self.playbook;
        let model_net = &p.models[m].network.value;
        if !p.containers[c]
            .networks
            .iter()
            .any(|(n, _)| n.value == *model_net)
        {
            let container = &p.containers[c].name.value;
            self.errors.push(GraphError::UnreachableModel {
                help: format!("add `network \"{model_net}\"` to container `{container}`"),
                model: reference.value.clone(),
                owner: format!("container `{container}`"),
                span: reference.span,
            });
            return;
        }
        // One readiness node per model: the first task that uses it picks the prober.
        let ready = self
            .index
            .keys()
            .find(|r| matches!(r, Resource::ModelReady(mm, _) if *mm == m))
            .copied()
            .unwrap_or(Resource::ModelReady(m, c));
        let Resource::ModelReady(_, prober) = ready else {
            unreachable!("filtered to ModelReady above")
        };
        self.edge(Resource::Model(m), ready);
        self.edge(Resource::Container(prober), ready);
        self.edge(ready, me);
    }

    /// A playbook that says how to build an image builds it before what runs it.
    fn edge_from_image(&mut self, reference: &str, to: Resource) {
        if let Some(&i) = self.names.images.get(reference) {
            self.edge(Resource::Image(i), to);
        }
    }

    fn edge_to_network(&mut self, net: &Spanned<String>, to: Resource) {
        let p = self.playbook;
        match self.names.networks.get(net.value.as_str()) {
            Some(&i) => self.edge(Resource::Network(i), to),
            None => self.unknown("network", net, p.networks.iter().map(|n| &n.name.value)),
        }
    }

    fn lookup_container(&mut self, name: &Spanned<String>) -> Option<usize> {
        let p = self.playbook;
        let found = self.names.containers.get(name.value.as_str()).copied();
        if found.is_some() {
            return found;
        }
        if self.names.models.contains_key(name.value.as_str()) {
            self.errors.push(GraphError::UnknownReference {
                help: format!("`{}` is a model; tasks run in a `container`", name.value),
                kind: "container",
                name: name.value.clone(),
                span: name.span,
            });
        } else {
            self.unknown(
                "container",
                name,
                p.containers.iter().map(|c| &c.name.value),
            );
        }
        None
    }

    fn lookup_model(&mut self, name: &Spanned<String>) -> Option<usize> {
        let p = self.playbook;
        let found = self.names.models.get(name.value.as_str()).copied();
        if found.is_none() {
            self.unknown("model", name, p.models.iter().map(|m| &m.name.value));
        }
        found
    }

    fn unknown<'n>(
        &mut self,
        kind: &'static str,
        name: &Spanned<String>,
        known: impl Iterator<Item = &'n String>,
    ) {
        let known: Vec<&String> = known.collect();
        let close = crate::playbook::closest(&name.value, known.iter().map(|k| k.as_str()));
        let help = match (close, known.is_empty()) {
            (Some(k), _) => format!("did you mean `{k}`?"),
            (None, true) => format!(
                "the playbook defines no {kind}: add `{kind} \"{}\"`",
                name.value
            ),
            (None, false) => format!(
                "defined: {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.errors.push(GraphError::UnknownReference {
            help,
            kind,
            name: name.value.clone(),
            span: name.span,
        });
    }

    fn node(&mut self, r: Resource) -> NodeIndex {
        *self
            .index
            .entry(r)
            .or_insert_with(|| self.graph.add_node(r))
    }

    /// A task starts once everything its container can reach is up: the other
    /// containers (healthy, if they have a check) and the model servers on its networks,
    /// as a user of the box would expect.
    fn edges_from_neighbours(&mut self, c: usize, task: Resource) {
        let p = self.playbook;
        let (mut containers, mut models) = (Vec::new(), Vec::new());
        for (net, _) in &p.containers[c].networks {
            let net = net.value.as_str();
            containers.extend(self.names.containers_on.get(net).into_iter().flatten());
            models.extend(self.names.models_on.get(net).into_iter().flatten());
        }
        // In playbook order, each once: the order the edges were always added in.
        containers.sort_unstable();
        containers.dedup();
        models.sort_unstable();
        models.dedup();
        for j in containers.into_iter().filter(|j| *j != c) {
            self.edge(Resource::Container(j), task);
        }
        for m in models {
            self.edge(Resource::Model(m), task);
        }
    }

    fn edge(&mut self, from: Resource, to: Resource) {
        let (a, b) = (self.node(from), self.node(to));
        self.graph.update_edge(a, b, ());
    }

    /// Every host name on a network names one container: an `alias` may not repeat a
    /// name or another alias there, or a lookup would answer with either.
    fn check_host_names(&mut self) {
        let p = self.playbook;
        let mut seen: HashMap<(&str, &str), SourceSpan> = HashMap::new();
        let models = p.models.iter().map(|m| (&m.network, &m.name, None));
        let containers = p.containers.iter().flat_map(|c| {
            c.networks
                .iter()
                .map(move |(net, alias)| (net, &c.name, alias.as_ref()))
        });
        for (net, name, alias) in models.chain(containers) {
            for host in std::iter::once(name).chain(alias) {
                let key = (net.value.as_str(), host.value.as_str());
                if let Some(first) = seen.get(&key) {
                    self.errors.push(GraphError::HostClash {
                        first: *first,
                        name: host.value.clone(),
                        network: net.value.clone(),
                        span: host.span,
                    });
                } else {
                    seen.insert(key, host.span);
                }
            }
        }
    }

    /// Only `after` can close a cycle; report each strongly connected set once, whole.
    fn check_cycles(&mut self) {
        for scc in tarjan_scc(&self.graph) {
            let self_loop = scc.len() == 1 && self.graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let mut tasks: Vec<usize> = scc
                .iter()
                .filter_map(|n| match self.graph[*n] {
                    Resource::Task(i) => Some(i),
                    _ => None,
                })
                .collect();
            tasks.sort_unstable();
            let members: BTreeSet<usize> = tasks.iter().copied().collect();
            // Walk the cycle from its first task, following `after` inside the set.
            let p = self.playbook;
            let mut path = vec![tasks[0]];
            let mut span = None;
            loop {
                let current = *path.last().expect("path starts non-empty");
                let next = p.tasks[current].after.iter().find_map(|a| {
                    let j = p.tasks.iter().position(|t| t.name.value == a.value)?;
                    members.contains(&j).then_some((j, a.span))
                });
                let Some((j, s)) = next else { break };
                span = Some(s);
                if path.contains(&j) {
                    path.push(j);
                    break;
                }
                path.push(j);
            }
            let names: Vec<&str> = path
                .iter()
                .rev()
                .map(|i| p.tasks[*i].name.value.as_str())
                .collect();
            self.errors.push(GraphError::Cycle {
                path: names.join(" → "),
                span: span.unwrap_or(p.tasks[tasks[0]].name.span),
            });
        }
    }

    /// Kahn's algorithm, always taking the ready resource that sorts first, so the order
    /// is stable: networks, models, containers, readiness, tasks; each in playbook order.
    fn order(&self) -> Vec<Resource> {
        // By node index: petgraph numbers the nodes 0, 1, 2, …
        let mut indegree: Vec<usize> = self
            .graph
            .node_indices()
            .map(|n| {
                self.graph
                    .neighbors_directed(n, Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: BTreeSet<(Resource, NodeIndex)> = self
            .graph
            .node_indices()
            .filter(|n| indegree[n.index()] == 0)
            .map(|n| (self.graph[n], n))
            .collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some((r, n)) = ready.pop_first() {
            order.push(r);
            for next in self.graph.neighbors_directed(n, Direction::Outgoing) {
                let d = &mut indegree[next.index()];
                *d -= 1;
                if *d == 0 {
                    ready.insert((self.graph[next], next));
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::playbook::{Decoder, Source};

    fn playbook(text: &str) -> Playbook {
        let source = Source::from_text(Path::new("t.kdl"), PathBuf::from("/p"), text.to_owned());
        Decoder::new(&source).decode().expect("decodes").playbook
    }

    const BOX: &str = "network \"n\"\nmodel \"m\" {\n    gguf \"g\"\n    network \"n\"\n}\ncontainer \"c\" {\n    image \"i\"\n    network \"n\"\n}\n";

    #[test]
    fn dependencies_come_first_and_readiness_before_the_agent() {
        let p = playbook(&format!(
            "{BOX}task \"late\" after=\"agent\" {{\n    run \"c\" \"x\"\n}}\ntask \"agent\" {{\n    agent \"c\" model=\"m\"\n    prompt \"p\"\n}}\n"
        ));
        let graph = build(&p).expect("builds");
        assert_eq!(
            graph.order,
            [
                Resource::Network(0),
                Resource::Model(0),
                Resource::Container(0),
                Resource::ModelReady(0, 0),
                Resource::Task(1),
                Resource::Task(0),
            ]
        );
    }

    #[test]
    fn a_task_waiting_for_itself_is_a_cycle() {
        let p = playbook(
            "container \"c\" {\n    image \"i\"\n}\ntask \"a\" after=\"a\" {\n    run \"c\" \"x\"\n}\n",
        );
        let errors = build(&p).expect_err("cycle");
        assert!(
            matches!(&errors[..], [GraphError::Cycle { path, .. }] if path == "a → a"),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_cycle_is_shown_whole_and_once() {
        let p = playbook(
            "container \"c\" {\n    image \"i\"\n}\ntask \"a\" after=\"b\" {\n    run \"c\" \"x\"\n}\ntask \"b\" after=\"a\" {\n    run \"c\" \"x\"\n}\ntask \"free\" {\n    run \"c\" \"x\"\n}\n",
        );
        let errors = build(&p).expect_err("cycle");
        assert!(
            matches!(&errors[..], [GraphError::Cycle { path, .. }] if path == "a → b → a"),
            "{errors:#?}"
        );
    }

    #[test]
    fn an_unknown_network_suggests_the_close_name() {
        let p = playbook(
            "network \"sandbox\"\ncontainer \"c\" {\n    image \"i\"\n    network \"sandbx\"\n}\n",
        );
        let errors = build(&p).expect_err("unknown");
        assert!(
            matches!(&errors[..], [GraphError::UnknownReference { kind: "network", help, .. }] if help == "did you mean `sandbox`?"),
            "{errors:#?}"
        );
    }
}
