//! `openmono graph`: the resource graph as Graphviz dot or as a Mermaid flowchart. Edges
//! point from what is needed to what needs it, as in the graph itself.

use std::fmt::Write;

use petgraph::visit::EdgeRef;

use crate::{
    graph::{Resource, ResourceGraph},
    playbook::Playbook,
};

/// An output format for `openmono graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// Renders `graph` in `format`; nodes are numbered in step order.
pub fn render(graph: &ResourceGraph, playbook: &Playbook, format: GraphFormat) -> String {
    let id = |r: Resource| {
        graph
            .order
            .iter()
            .position(|o| *o == r)
            .map_or_else(|| "n".to_owned(), |i| format!("n{i}"))
    };
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            let _ = writeln!(out, "digraph {:?} {{\n    rankdir=LR;", playbook.name);
            for r in &graph.order {
                let _ = writeln!(out, "    {} [label={:?}];", id(*r), label(*r, playbook));
            }
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for r in &graph.order {
                let _ = writeln!(
                    out,
                    "    {}[\"{}\"]",
                    id(*r),
                    label(*r, playbook).replace('"', "#quot;")
                );
            }
        }
    }
    let mut edges: Vec<(String, String)> = graph
        .graph
        .edge_references()
        .map(|e| (id(graph.graph[e.source()]), id(graph.graph[e.target()])))
        .collect();
    edges.sort_by_key(|(a, b)| (a[1..].parse::<usize>().ok(), b[1..].parse::<usize>().ok()));
    for (from, to) in edges {
        let _ = match format {
            GraphFormat::Dot => writeln!(out, "    {from} -> {to};"),
            GraphFormat::Mermaid => writeln!(out, "    {from} --> {to}"),
        };
    }
    if format == GraphFormat::Dot {
        out.push_str("}\n");
    }
    out
}

fn label(r: Resource, p: &Playbook) -> String {
    match r {
        Resource::Network(i) => format!("network {}", p.networks[i].name.value),
        Resource::Volume(i) => format!("volume {}", p.volumes[i].name.value),
        Resource::Image(i) => format!("image {}", p.images[i].reference.value),
        Resource::Model(i) => format!("model {}", p.models[i].name.value),
        Resource::Container(i) => format!("container {}", p.containers[i].name.value),
        Resource::ModelReady(i, _) => format!("model {} ready", p.models[i].name.value),
        Resource::Task(i) => format!("task {}", p.tasks[i].name.value),
    }
}
