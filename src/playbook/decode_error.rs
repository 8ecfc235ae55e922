//! Everything that can be wrong in one playbook file before its references are checked.
//! Each variant points at the exact span and says what to do about it.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

#[derive(Debug, Clone, Error, Diagnostic)]
pub enum DecodeError {
    #[error("{kind} `{name}` is defined twice")]
    #[diagnostic(
        code(openmono::decode::duplicate),
        help("give each {kind} its own name")
    )]
    Duplicate {
        kind: &'static str,
        name: String,
        #[label("defined again here")]
        span: SourceSpan,
        #[label("first defined here")]
        first: SourceSpan,
    },

    #[error("`{node}` takes {expected}")]
    #[diagnostic(code(openmono::decode::extra_argument))]
    ExtraArgument {
        expected: String,
        #[help]
        help: Option<String>,
        node: String,
        #[label("not expected")]
        span: SourceSpan,
    },

    #[error("files include each other in a loop: {chain}")]
    #[diagnostic(
        code(openmono::decode::include_loop),
        help("remove one of these `include`s")
    )]
    IncludeLoop {
        chain: String,
        #[label("this `include` closes the loop")]
        span: SourceSpan,
    },

    #[error("cannot include `{path}`: {reason}")]
    #[diagnostic(
        code(openmono::decode::include_missing),
        help("an `include` path is relative to the file that includes it")
    )]
    IncludeMissing {
        path: String,
        reason: String,
        #[label("included here")]
        span: SourceSpan,
    },

    #[error("{message}")]
    #[diagnostic(code(openmono::decode::invalid_value))]
    InvalidValue {
        #[help]
        help: Option<String>,
        message: String,
        #[label("this value")]
        span: SourceSpan,
    },

    #[error("`{node}` needs {expected}")]
    #[diagnostic(code(openmono::decode::missing_argument))]
    MissingArgument {
        expected: String,
        #[help]
        help: Option<String>,
        node: String,
        #[label("here")]
        span: SourceSpan,
    },

    #[error("{owner} has no `{child}`")]
    #[diagnostic(code(openmono::decode::missing_child))]
    MissingChild {
        child: &'static str,
        #[help]
        help: Option<String>,
        owner: String,
        #[label("needs `{child}`")]
        span: SourceSpan,
    },

    #[error("the playbook is empty: it declares nothing to run")]
    #[diagnostic(
        code(openmono::decode::empty),
        help(
            "a playbook declares networks, containers, models and tasks; `openmono init` writes one to start from"
        )
    )]
    Empty {
        #[label("no nodes in this file, only blanks and comments")]
        span: SourceSpan,
    },

    #[error("{what} is given twice; the last one wins")]
    #[diagnostic(code(openmono::decode::overridden), severity(Warning))]
    Overridden {
        #[label("first given here")]
        first: SourceSpan,
        #[help]
        help: String,
        #[label("this one wins")]
        span: SourceSpan,
        what: String,
    },

    #[error("{message}")]
    #[diagnostic(code(openmono::decode::syntax))]
    Syntax {
        #[help]
        help: Option<String>,
        label: String,
        message: String,
        #[label("{label}")]
        span: SourceSpan,
    },

    #[error("{owner} says both `{kinds}`")]
    #[diagnostic(code(openmono::decode::kind_conflict))]
    KindConflict {
        #[label("first kind")]
        first: SourceSpan,
        #[help]
        help: &'static str,
        /// The two, as "agent` and `run".
        kinds: String,
        /// What says both, as "task `t`".
        owner: String,
        #[label("second kind")]
        span: SourceSpan,
    },

    #[error("unknown node `{name}` {place}")]
    #[diagnostic(code(openmono::decode::unknown_node))]
    UnknownNode {
        #[help]
        help: Option<String>,
        name: String,
        place: String,
        #[label("unknown")]
        span: SourceSpan,
    },

    #[error("unknown property `{name}` on `{node}`")]
    #[diagnostic(code(openmono::decode::unknown_property))]
    UnknownProperty {
        #[help]
        help: Option<String>,
        name: String,
        node: String,
        #[label("unknown")]
        span: SourceSpan,
    },

    #[error("expected {expected}, found {found}")]
    #[diagnostic(code(openmono::decode::wrong_type))]
    WrongType {
        expected: &'static str,
        found: &'static str,
        #[help]
        help: Option<String>,
        #[label("expected {expected}")]
        span: SourceSpan,
    },
}

impl DecodeError {
    /// A warning tells of something the playbook probably did not mean, but it decodes.
    pub fn is_warning(&self) -> bool {
        matches!(self, Self::Overridden { .. })
    }
}
