//! Runtime failures: no spans, but always the resource or step and the engine's cause.

use miette::Diagnostic;
use thiserror::Error;

#[derive(Debug, Error, Diagnostic)]
pub enum EngineError {
    #[error("cannot reach the Docker engine at `{engine}`")]
    #[diagnostic(code(openmono::engine::unreachable))]
    Connect {
        engine: String,
        #[help]
        help: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("the Docker engine at `{engine}` did not answer within {seconds} s")]
    #[diagnostic(code(openmono::engine::no_answer))]
    NoAnswer {
        engine: String,
        #[help]
        help: String,
        seconds: u64,
    },

    #[error("the Docker engine is not running: nothing answers at `{engine}`")]
    #[diagnostic(code(openmono::engine::not_running))]
    NotRunning {
        engine: String,
        #[help]
        help: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("permission denied on the Docker engine's socket `{engine}`")]
    #[diagnostic(
        code(openmono::engine::permission_denied),
        help(
            "the socket lets in root and its group (usually `docker`) only: run openmono as root, or join that group (`sudo usermod -aG docker $USER`, then log in again); whoever may use the engine is root on this machine"
        )
    )]
    PermissionDenied {
        engine: String,
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

    #[error("{what} not on this engine")]
    #[diagnostic(code(openmono::engine::image_missing))]
    ImageMissing {
        #[help]
        help: String,
        /// The missing images, each in backticks: "image `a` is" or "images `a`, `b` are".
        what: String,
    },

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

/// The help when `DOCKER_HOST` names the engine: it is that engine, not the local one,
/// that does not answer.
fn elsewhere(host: &str) -> String {
    format!(
        "DOCKER_HOST is `{host}`: check that an engine runs there and answers (`docker info` uses DOCKER_HOST too), or unset DOCKER_HOST to use the local engine"
    )
}

/// Where bollard connects when `DOCKER_HOST` is not set.
const DEFAULT_ENGINE: &str = "unix:///var/run/docker.sock";

impl EngineError {
    pub fn call(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.into();
        move |source| Self::Call { action, source }
    }

    /// A failure to connect, told apart by its cause: nothing listening, or a socket
    /// this user may not open. `host` is `DOCKER_HOST`, when set.
    pub fn connect(host: Option<&str>, source: bollard::errors::Error) -> Self {
        let engine = host.unwrap_or(DEFAULT_ENGINE).to_owned();
        let not_running = |engine: String, source| {
            Self::NotRunning {
            help: host.map_or_else(
                || "start it: as root, `images/setup` installs and starts it (or `systemctl start docker`, or `dockerd &`); DOCKER_HOST selects another engine".to_owned(),
                elsewhere,
            ),
            engine,
            source,
        }
        };
        if matches!(source, bollard::errors::Error::SocketNotFoundError(_)) {
            return not_running(engine, source);
        }
        // `IOError` is transparent: its own `source()` skips the `io::Error` it holds.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match &source {
            bollard::errors::Error::IOError { err } => Some(err),
            other => Some(other),
        };
        while let Some(error) = cause {
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::PermissionDenied => {
                        return Self::PermissionDenied { engine, source };
                    }
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                        return not_running(engine, source);
                    }
                    _ => {}
                }
            }
            cause = error.source();
        }
        Self::Connect {
            engine,
            help: host.map_or_else(
                || "check that it runs (`docker info`); as root, `images/setup` installs and starts it; DOCKER_HOST selects another engine".to_owned(),
                elsewhere,
            ),
            source,
        }
    }

    /// The engine took `seconds` to say nothing at all: it accepts connections but is
    /// stuck, or `DOCKER_HOST` names something that is not an engine.
    pub fn no_answer(host: Option<&str>, seconds: u64) -> Self {
        Self::NoAnswer {
            engine: host.unwrap_or(DEFAULT_ENGINE).to_owned(),
            help: host.map_or_else(
                || "it accepts connections but says nothing: it may be stuck or overloaded; see whether `docker info` answers, and restart it (`systemctl restart docker`, or stop and start `dockerd`)".to_owned(),
                elsewhere,
            ),
            seconds,
        }
    }

    /// Images a plan needs that the engine lacks, with how to get each kind.
    pub fn image_missing(images: &[String]) -> Self {
        let names = images
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let what = if images.len() == 1 {
            format!("image {names} is")
        } else {
            format!("images {names} are")
        };
        let (ours, theirs): (Vec<&String>, Vec<&String>) =
            images.iter().partition(|i| i.starts_with("openmono/"));
        let mut help = Vec::new();
        if !ours.is_empty() {
            help.push(
                "as root, `images/setup` builds openmono's images without a registry".to_owned(),
            );
        }
        if let Some(first) = theirs.first() {
            help.push(format!(
                "build it (`docker build -t {first} DIR`), load it (`docker load -i FILE`) or pull it, or add `image \"{first}\" {{ context \"DIR\" }}` to the playbook and `apply` builds it"
            ));
        }
        Self::ImageMissing {
            help: help.join("; "),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> bollard::errors::Error {
        bollard::errors::Error::IOError {
            err: std::io::Error::from(kind),
        }
    }

    #[test]
    fn a_failed_connect_is_told_apart_by_its_cause() {
        let not_running = [
            bollard::errors::Error::SocketNotFoundError("/run/x.sock".into()),
            io(std::io::ErrorKind::ConnectionRefused),
            io(std::io::ErrorKind::NotFound),
        ];
        for source in not_running {
            let error = EngineError::connect(None, source);
            assert_eq!(
                error.to_string(),
                "the Docker engine is not running: nothing answers at `unix:///var/run/docker.sock`"
            );
        }
        let denied = EngineError::connect(
            Some("unix:///srv/d.sock"),
            io(std::io::ErrorKind::PermissionDenied),
        );
        assert_eq!(
            denied.to_string(),
            "permission denied on the Docker engine's socket `unix:///srv/d.sock`"
        );
        assert!(
            denied
                .help()
                .is_some_and(|h| h.to_string().contains("sudo usermod -aG docker $USER"))
        );
        let other = EngineError::connect(None, io(std::io::ErrorKind::TimedOut));
        assert_eq!(
            other.to_string(),
            "cannot reach the Docker engine at `unix:///var/run/docker.sock`"
        );
    }

    #[test]
    fn a_missing_image_says_how_to_get_it() {
        let ours = EngineError::image_missing(&["openmono/agent:latest".into()]);
        assert_eq!(
            ours.to_string(),
            "image `openmono/agent:latest` is not on this engine"
        );
        assert_eq!(
            ours.help().map(|h| h.to_string()).as_deref(),
            Some("as root, `images/setup` builds openmono's images without a registry")
        );
        let both =
            EngineError::image_missing(&["me/rust:1".into(), "openmono/agent:latest".into()]);
        assert_eq!(
            both.to_string(),
            "images `me/rust:1`, `openmono/agent:latest` are not on this engine"
        );
        assert_eq!(
            both.help().map(|h| h.to_string()).as_deref(),
            Some(
                "as root, `images/setup` builds openmono's images without a registry; build it (`docker build -t me/rust:1 DIR`), load it (`docker load -i FILE`) or pull it, or add `image \"me/rust:1\" { context \"DIR\" }` to the playbook and `apply` builds it"
            )
        );
    }
}
