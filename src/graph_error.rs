//! Problems in how a playbook's resources refer to each other.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

#[derive(Debug, Clone, Error, Diagnostic)]
pub enum GraphError {
    #[error("tasks wait for each other in a cycle: {path}")]
    #[diagnostic(
        code(openmono::graph::cycle),
        help("remove one of these `after` references")
    )]
    Cycle {
        path: String,
        #[label("this `after` closes the cycle")]
        span: SourceSpan,
    },

    #[error("`{name}` names two hosts on network `{network}`")]
    #[diagnostic(
        code(openmono::graph::host_clash),
        help("give the `alias` a name no other container or model has on this network")
    )]
    HostClash {
        #[label("first here")]
        first: SourceSpan,
        name: String,
        network: String,
        #[label("again here")]
        span: SourceSpan,
    },

    #[error("{owner} cannot reach model `{model}`: they share no network")]
    #[diagnostic(code(openmono::graph::unreachable_model))]
    UnreachableModel {
        #[help]
        help: String,
        model: String,
        owner: String,
        #[label("used here")]
        span: SourceSpan,
    },

    #[error("unknown {kind} `{name}`")]
    #[diagnostic(code(openmono::graph::unknown_reference))]
    UnknownReference {
        #[help]
        help: String,
        kind: &'static str,
        name: String,
        #[label("no {kind} has this name")]
        span: SourceSpan,
    },
}
