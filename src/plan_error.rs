//! Problems found when a playbook's paths are resolved on this machine.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

#[derive(Debug, Clone, Error, Diagnostic)]
pub enum PlanError {
    #[error("`{target}` cannot be {kind} target: it {why}")]
    #[diagnostic(
        code(openmono::plan::bad_target),
        help(
            "give an absolute path; `/`, `/workspace` and `/.openmono` with what is in it are taken"
        )
    )]
    BadTarget {
        kind: &'static str,
        #[label("this target")]
        span: SourceSpan,
        target: String,
        why: &'static str,
    },

    #[error("build context `{path}` is not a folder")]
    #[diagnostic(
        code(openmono::plan::context_missing),
        help("paths are relative to the playbook's folder")
    )]
    ContextMissing {
        path: String,
        #[label("no such folder")]
        span: SourceSpan,
    },

    #[error("the build context has no `{path}`")]
    #[diagnostic(
        code(openmono::plan::dockerfile_missing),
        help("`dockerfile` is relative to the context; without it, `Dockerfile` is used")
    )]
    DockerfileMissing {
        path: String,
        #[label("looked for it here")]
        span: SourceSpan,
    },

    #[error("replay script `{path}` cannot be used")]
    #[diagnostic(
        code(openmono::plan::bad_script),
        help(
            "a replay script is JSON Lines, one reply per line such as {{\"content\": \"Done.\"}}, or a run's transcript; paths are relative to the playbook's folder (see the book's chapter on replay)"
        )
    )]
    BadScript {
        path: String,
        #[label("{reason}")]
        span: SourceSpan,
        reason: String,
    },

    #[error("model file `{path}` does not exist")]
    #[diagnostic(
        code(openmono::plan::model_missing),
        help(
            "a relative path starts at the playbook's folder; any GGUF file llama.cpp loads will do (in openmono's own repository, `images/fetch-model` puts the example one in `models/`)"
        )
    )]
    ModelMissing {
        path: String,
        #[label("no such file")]
        span: SourceSpan,
    },

    #[error("mount source `{path}` {reason}")]
    #[diagnostic(
        code(openmono::plan::mount_missing),
        help(
            "a mount's source must exist, openmono never creates it; a relative path is relative to the playbook's folder"
        )
    )]
    MountMissing {
        path: String,
        reason: String,
        #[label("{reason}")]
        span: SourceSpan,
    },

    #[error("mount source `{path}` is refused: it {why}")]
    #[diagnostic(code(openmono::plan::mount_refused))]
    MountRefused {
        #[help]
        help: String,
        path: String,
        #[label("refused")]
        span: SourceSpan,
        why: String,
    },

    #[error("`{path}` is not a GGUF model file")]
    #[diagnostic(
        code(openmono::plan::not_gguf),
        help("llama-server loads GGUF files, which start with the bytes `GGUF`")
    )]
    NotGguf {
        path: String,
        #[label("{reason}")]
        span: SourceSpan,
        reason: String,
    },

    #[error("model file `{path}` is not the one the playbook pins")]
    #[diagnostic(
        code(openmono::plan::pin_mismatch),
        help(
            "its SHA-256 is {found}; if the new file is the one you want, pin that (`sha256sum FILE` prints it)"
        )
    )]
    PinMismatch {
        path: String,
        found: String,
        #[label("expected this SHA-256")]
        span: SourceSpan,
    },

    #[error("`sha256` must be 64 hexadecimal digits")]
    #[diagnostic(
        code(openmono::plan::bad_pin),
        help("`sha256sum FILE` prints a file's SHA-256")
    )]
    BadPin {
        #[label("{length} characters, not a SHA-256")]
        span: SourceSpan,
        length: usize,
    },

    #[error("container `{container}` mounts two things at `{target}`")]
    #[diagnostic(
        code(openmono::plan::target_clash),
        help("give each mount, volume and tmpfs of a container its own target")
    )]
    TargetClash {
        container: String,
        #[label("first here")]
        first: SourceSpan,
        #[label("again here")]
        span: SourceSpan,
        target: String,
    },

    #[error("workspace `{path}` is refused: it {why}")]
    #[diagnostic(code(openmono::plan::workspace_refused))]
    WorkspaceRefused {
        #[help]
        help: String,
        path: String,
        #[label("refused")]
        span: SourceSpan,
        why: String,
    },

    #[error("workspace `{path}` {reason}")]
    #[diagnostic(
        code(openmono::plan::workspace_missing),
        help("paths are relative to the playbook's folder; `.` is the folder the playbook is in")
    )]
    WorkspaceMissing {
        path: String,
        reason: &'static str,
        #[label("{reason}")]
        span: SourceSpan,
    },
}
