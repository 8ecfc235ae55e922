//! Runtime failures: no spans, but always the resource or step and the engine's cause.

use miette::Diagnostic;
use thiserror::Error;

#[derive(Debug, Error, Diagnostic)]
pub enum EngineError {
    #[error("cannot reach the Docker engine")]
    #[diagnostic(
        code(openmono::engine::unreachable),
        help(
            "start it (as root: `dockerd &`, or `sudo systemctl start docker`), or run `images/setup`, which installs and starts it; DOCKER_HOST selects another engine"
        )
    )]
    Connect {
        #[source]
        source: bollard::errors::Error,
    },

    #[error("the Docker engine failed to {action}")]
    #[diagnostic(code(openmono::engine::call))]
    Call {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("image `{image}` is not on this engine")]
    #[diagnostic(
        code(openmono::engine::image_missing),
        help(
            "`images/setup` builds openmono's images without a registry; `docker pull {image}` fetches it where there is one"
        )
    )]
    ImageMissing { image: String },

    #[error("cannot create the run's folder `{path}`")]
    #[diagnostic(
        code(openmono::engine::run_dir),
        help("OPENMONO_STATE_DIR or XDG_STATE_HOME choose another place")
    )]
    RunDir {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read the openmono binary to copy into the container")]
    #[diagnostic(code(openmono::engine::self_binary))]
    SelfBinary {
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub fn call(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.into();
        move |source| Self::Call { action, source }
    }
}
