//! Runtime failures: no spans, but always the resource or step and the engine's cause.

use miette::Diagnostic;
use thiserror::Error;

use super::Endpoint;

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

    #[error("the TLS connection to the Docker engine at `{engine}` failed: {why}")]
    #[diagnostic(code(openmono::engine::tls))]
    Tls {
        engine: String,
        #[help]
        help: String,
        why: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },

    #[error("refusing the engine at `{engine}` ({by}): plain TCP, without TLS")]
    #[diagnostic(
        code(openmono::engine::plain_tcp),
        help(
            "whoever reaches an engine is root on its machine, and the workspace would cross the network unencrypted: use TLS (set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to a folder with ca.pem, cert.pem and key.pem, or a context made with `docker context create NAME --docker host=tcp://…,ca=…,cert=…,key=…`)"
        )
    )]
    PlainTcp { by: String, engine: String },

    #[error("refusing the engine at `{engine}`: {why}, so its certificate would not be checked")]
    #[diagnostic(
        code(openmono::engine::unverified_tls),
        help(
            "openmono only talks to an engine whose certificate it checks: set DOCKER_TLS_VERIFY=1 (with the CA in DOCKER_CERT_PATH/ca.pem), or make the context again without skip-tls-verify"
        )
    )]
    UnverifiedTls { engine: String, why: String },

    #[error("cannot reach the Docker engine at `{engine}` over ssh: {why}")]
    #[diagnostic(
        code(openmono::engine::ssh),
        help(
            "check that `ssh HOST docker version` works without a question: a key that ssh finds (ssh-agent, `IdentityFile`), the host's key in `known_hosts`, and `docker` on the host's PATH for that user; OPENMONO_SSH sets the ssh command (`ssh -F FILE`)"
        )
    )]
    Ssh { engine: String, why: String },

    #[error("`{engine}` ({by}) is not ssh://[USER@]HOST[:PORT]: {why}")]
    #[diagnostic(
        code(openmono::engine::ssh_url),
        help(
            "as the docker CLI takes it: `ssh://me@gpu-box`, `ssh://gpu-box:2222`, `ssh://me@[fd00::7]:22`"
        )
    )]
    BadSshUrl {
        by: String,
        engine: String,
        why: String,
    },

    #[error("openmono cannot use the engine at `{engine}` ({by})")]
    #[diagnostic(
        code(openmono::engine::unsupported),
        help(
            "an engine is `unix:///PATH` (a socket on this machine), `tcp://HOST:PORT` with TLS (DOCKER_TLS_VERIFY=1), or the name of a Docker context"
        )
    )]
    UnsupportedEngine { by: String, engine: String },

    #[error("the engine at `{engine}` is not on this machine: it cannot see {what}")]
    #[diagnostic(
        code(openmono::engine::host_files),
        help(
            "on an engine elsewhere only the workspace (copied into a volume of the run, the agent's changes copied back after it), model files and replay scripts travel; `mount`s do not: run this playbook on the local engine, or put the files in the workspace or a `volume`"
        )
    )]
    HostFiles { engine: String, what: String },

    #[error("there is no Docker context `{name}` ({by})")]
    #[diagnostic(
        code(openmono::engine::no_context),
        help(
            "`docker context ls` lists the contexts; `docker context create {name} --docker host=…` makes one; it would be at `{path}`"
        )
    )]
    ContextMissing {
        by: String,
        name: String,
        path: String,
    },

    #[error("cannot read Docker context `{name}` from `{path}`: {why}")]
    #[diagnostic(
        code(openmono::engine::bad_context),
        help(
            "`docker context inspect {name}` shows what Docker makes of it; make it again with `docker context create`"
        )
    )]
    ContextUnreadable {
        name: String,
        path: String,
        why: String,
    },

    #[error("cannot read `{path}` for the TLS connection to `{engine}` ({by})")]
    #[diagnostic(
        code(openmono::engine::tls_file),
        help(
            "the folder needs the CA that signed the engine's certificate (ca.pem) and your client certificate and key (cert.pem, key.pem), as for `docker --tlsverify`; DOCKER_CERT_PATH names the folder ({why})"
        )
    )]
    TlsFile {
        by: String,
        engine: String,
        path: String,
        why: String,
    },

    #[error("the Docker engine failed to {action}")]
    #[diagnostic(code(openmono::engine::call))]
    Call {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("{what} not on {engine}")]
    #[diagnostic(code(openmono::engine::image_missing))]
    ImageMissing {
        #[help]
        help: String,
        /// The missing images, each in backticks: "image `a` is" or "images `a`, `b` are".
        what: String,
        /// Which engine: "this engine", or a swarm node's.
        engine: String,
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

    /// What a swarm would not do for a run: a service it could not place or start.
    #[error("{0}")]
    #[diagnostic(code(openmono::engine::swarm))]
    Swarm(String),

    #[error("cannot read the openmono binary to copy into the container")]
    #[diagnostic(code(openmono::engine::self_binary))]
    SelfBinary {
        #[source]
        source: std::io::Error,
    },
}

/// Whether something chose this engine (a flag, a variable, a context) rather than the
/// default: then the help says what chose it, since the user may not mean that one.
fn chosen(endpoint: &Endpoint) -> bool {
    endpoint.is_remote() || endpoint.origin != super::Origin::Default
}

/// The help for an engine that something chose and that does not answer.
fn elsewhere(endpoint: &Endpoint) -> String {
    let tls = if endpoint.host.starts_with("tcp://") {
        ", with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for TLS"
    } else {
        ""
    };
    format!(
        "check that an engine runs and answers at that address (`docker -H {} info`{tls}), and that it is the one you mean: it came {}; `openmono doctor` says which engine is chosen and why",
        endpoint.host, endpoint.origin
    )
}

impl EngineError {
    pub fn call(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.into();
        move |source| Self::Call { action, source }
    }

    /// A failure to connect to `endpoint`, told apart by its cause: nothing listening, a
    /// socket this user may not open, a certificate that was not accepted.
    pub fn connect(endpoint: &Endpoint, source: bollard::errors::Error) -> Self {
        let engine = endpoint.host.clone();
        let elsewhere = elsewhere(endpoint);
        let not_running = |source| Self::NotRunning {
            engine: engine.clone(),
            help: if chosen(endpoint) {
                elsewhere.clone()
            } else {
                "start it: as root, `images/setup` installs and starts it (or `systemctl start docker`, or `dockerd &`); DOCKER_HOST, DOCKER_CONTEXT or --engine selects another engine".to_owned()
            },
            source,
        };
        if matches!(source, bollard::errors::Error::SocketNotFoundError(_)) {
            return not_running(source);
        }
        // `IOError` is transparent: its own `source()` skips the `io::Error` it holds,
        // and so does an `io::Error`'s for the error it wraps (a TLS alert).
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match &source {
            bollard::errors::Error::IOError { err } => Some(err),
            other => Some(other),
        };
        while let Some(error) = cause {
            if let Some(tls) = error.downcast_ref::<rustls::Error>() {
                let why = tls.to_string();
                return Self::Tls {
                    help: tls_help(endpoint, tls),
                    engine,
                    why,
                    source: Box::new(source),
                };
            }
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::PermissionDenied => {
                        return Self::PermissionDenied { engine, source };
                    }
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                        return not_running(source);
                    }
                    _ => {}
                }
                if let Some(inner) = io.get_ref() {
                    cause = Some(inner);
                    continue;
                }
            }
            cause = error.source();
        }
        Self::Connect {
            engine,
            help: if chosen(endpoint) {
                elsewhere
            } else {
                "check that it runs (`docker info`); as root, `images/setup` installs and starts it; DOCKER_HOST, DOCKER_CONTEXT or --engine selects another engine".to_owned()
            },
            source,
        }
    }

    /// The engine took `seconds` to say nothing at all: it accepts connections but is
    /// stuck, or what was chosen as the engine is not one.
    pub fn no_answer(endpoint: &Endpoint, seconds: u64) -> Self {
        Self::NoAnswer {
            engine: endpoint.host.clone(),
            help: if chosen(endpoint) {
                elsewhere(endpoint)
            } else {
                "it accepts connections but says nothing: it may be stuck or overloaded; see whether `docker info` answers, and restart it (`systemctl restart docker`, or stop and start `dockerd`)".to_owned()
            },
            seconds,
        }
    }

    /// Images a plan needs that the engine lacks, with how to get each kind.
    pub fn image_missing(images: &[String], engine: &str) -> Self {
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
            engine: engine.to_owned(),
        }
    }
}

/// What to do when the TLS handshake failed: which side refused which certificate.
fn tls_help(endpoint: &Endpoint, error: &rustls::Error) -> String {
    let (ca, cert) = endpoint.tls.as_ref().map_or_else(
        || ("ca.pem".to_owned(), "cert.pem".to_owned()),
        |t| (t.ca.display().to_string(), t.cert.display().to_string()),
    );
    match error {
        rustls::Error::InvalidCertificate(_) => format!(
            "the engine's certificate is not one to trust: it must be signed by the CA in `{ca}` and name the host you connect to (`{}`), and be valid today; check DOCKER_CERT_PATH (or the context's TLS files), or make the engine a new certificate",
            endpoint.host
        ),
        rustls::Error::AlertReceived(_) => format!(
            "the engine refused your client certificate `{cert}`: it must be signed by the CA the engine trusts (its `--tlscacert`) and be valid today; check DOCKER_CERT_PATH (or the context's TLS files)"
        ),
        _ => format!(
            "check the engine's TLS setup and the files in use (`{ca}`, `{cert}`); `docker -H {} --tlsverify info` tries the same",
            endpoint.host
        ),
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

    fn endpoint(host: &str) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            origin: crate::engine::Origin::DockerHost,
            tls: None,
        }
    }

    #[test]
    fn a_failed_connect_is_told_apart_by_its_cause() {
        let local = endpoint("unix:///var/run/docker.sock");
        let not_running = [
            bollard::errors::Error::SocketNotFoundError("/run/x.sock".into()),
            io(std::io::ErrorKind::ConnectionRefused),
            io(std::io::ErrorKind::NotFound),
        ];
        for source in not_running {
            let error = EngineError::connect(&local, source);
            assert_eq!(
                error.to_string(),
                "the Docker engine is not running: nothing answers at `unix:///var/run/docker.sock`"
            );
        }
        let denied = EngineError::connect(
            &endpoint("unix:///srv/d.sock"),
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
        let other = EngineError::connect(&local, io(std::io::ErrorKind::TimedOut));
        assert_eq!(
            other.to_string(),
            "cannot reach the Docker engine at `unix:///var/run/docker.sock`"
        );
        // Elsewhere, "start it" is no help: where it came from and how to try it is.
        let remote = EngineError::connect(
            &endpoint("tcp://10.0.0.9:2376"),
            io(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(
            remote.help().map(|h| h.to_string()).as_deref(),
            Some(
                "check that an engine runs and answers at that address (`docker -H tcp://10.0.0.9:2376 info`, with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for TLS), and that it is the one you mean: it came from DOCKER_HOST; `openmono doctor` says which engine is chosen and why"
            )
        );
    }

    #[test]
    fn a_refused_certificate_says_whose() {
        let wrapped = |tls: rustls::Error| bollard::errors::Error::IOError {
            err: std::io::Error::new(std::io::ErrorKind::InvalidData, tls),
        };
        let engine = endpoint("tcp://10.0.0.9:2376");
        let theirs = EngineError::connect(
            &engine,
            wrapped(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        );
        assert_eq!(
            theirs.to_string(),
            "the TLS connection to the Docker engine at `tcp://10.0.0.9:2376` failed: invalid peer certificate: UnknownIssuer"
        );
        assert!(theirs.help().is_some_and(|h| h.to_string().starts_with(
            "the engine's certificate is not one to trust: it must be signed by the CA in `ca.pem`"
        )));
        let mine = EngineError::connect(
            &engine,
            wrapped(rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate,
            )),
        );
        assert!(
            mine.help().is_some_and(|h| h
                .to_string()
                .starts_with("the engine refused your client certificate `cert.pem`")),
            "{mine}"
        );
    }

    #[test]
    fn a_missing_image_says_how_to_get_it() {
        let ours = EngineError::image_missing(&["openmono/agent:latest".into()], "this engine");
        assert_eq!(
            ours.to_string(),
            "image `openmono/agent:latest` is not on this engine"
        );
        assert_eq!(
            ours.help().map(|h| h.to_string()).as_deref(),
            Some("as root, `images/setup` builds openmono's images without a registry")
        );
        let both = EngineError::image_missing(
            &["me/rust:1".into(), "openmono/agent:latest".into()],
            "this engine",
        );
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
