//! Which Docker engine to use, chosen as Docker's own tools choose it: `--engine` (a URL
//! or a context's name), then `DOCKER_HOST`, then `DOCKER_CONTEXT`, then the current
//! context in `~/.docker/config.json`, then the local socket. In: the flag and the
//! environment; out: an [`Endpoint`] that says where, with which TLS files, and why.
//!
//! Decided here: an engine over TCP must use TLS that checks its certificate
//! (`DOCKER_TLS_VERIFY`); plain TCP and unverified TLS are refused, since whoever
//! reaches such an engine is root on its machine and sees the workspace go by.
//! `ssh://[USER@]HOST[:PORT]` is reached through `ssh` (see `ssh.rs`), which checks the
//! host's key itself.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use super::EngineError;

/// Where bollard connects when nothing chooses another engine.
pub const DEFAULT_ENGINE: &str = "unix:///var/run/docker.sock";

/// The engine to connect to, and why that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix:///path` or `tcp://host:port`.
    pub host: String,
    pub origin: Origin,
    /// The CA, client certificate and key for an engine over TCP.
    pub tls: Option<TlsFiles>,
}

/// What chose the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A Docker context, and what named it.
    Context {
        name: String,
        by: ContextChoice,
    },
    /// Nothing: the local socket.
    Default,
    DockerHost,
    /// `--engine URL`.
    Flag,
    /// The `dev.openmono.engine` label of this swarm node (its hostname).
    SwarmNode(String),
}

/// What named a Docker context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextChoice {
    /// `currentContext` in this config file.
    Config(PathBuf),
    DockerContext,
    Flag,
}

/// The files of a TLS connection, as `docker --tlsverify` reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What the choice reads from the environment; tests make their own.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `DOCKER_CERT_PATH`.
    pub cert_path: Option<PathBuf>,
    /// `DOCKER_CONFIG`, else `~/.docker`; none without a home.
    pub config_dir: Option<PathBuf>,
    pub docker_context: Option<String>,
    pub docker_host: Option<String>,
    /// `DOCKER_TLS` set: TLS, but without checking the engine's certificate.
    pub tls: bool,
    /// `DOCKER_TLS_VERIFY` set.
    pub tls_verify: bool,
}

impl Environment {
    /// This process's environment. As for the docker CLI, a variable set to the empty
    /// string counts as unset.
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            cert_path: var("DOCKER_CERT_PATH").map(PathBuf::from),
            config_dir: var("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".docker"))),
            docker_context: var("DOCKER_CONTEXT"),
            docker_host: var("DOCKER_HOST"),
            tls: var("DOCKER_TLS").is_some(),
            tls_verify: var("DOCKER_TLS_VERIFY").is_some(),
        }
    }
}

impl Endpoint {
    /// Chooses the engine: `flag` (`--engine`: a URL, or else a context's name), then
    /// `DOCKER_HOST`, `DOCKER_CONTEXT`, the config's current context, the local socket.
    pub fn choose(flag: Option<&str>, env: &Environment) -> Result<Self, EngineError> {
        match flag.filter(|f| !f.is_empty()) {
            Some(url) if url.contains("://") => Self::from_url(url, Origin::Flag, env),
            Some(name) => Self::from_context(name, ContextChoice::Flag, env),
            None => {
                if let Some(host) = &env.docker_host {
                    return Self::from_url(host, Origin::DockerHost, env);
                }
                if let Some(name) = &env.docker_context {
                    return Self::from_context(name, ContextChoice::DockerContext, env);
                }
                if let Some((name, config)) = current_context(env)? {
                    return Self::from_context(&name, ContextChoice::Config(config), env);
                }
                Ok(Self::local(Origin::Default))
            }
        }
    }

    /// The engine of the swarm node `node`, as its `dev.openmono.engine` label names
    /// it (`url`). Over TCP it is reached with the TLS files of the manager (`manager`),
    /// as the nodes of one swarm share a CA; plain TCP is refused as everywhere.
    pub fn for_node(url: &str, node: &str, manager: &Self) -> Result<Self, EngineError> {
        let origin = Origin::SwarmNode(node.to_owned());
        match (scheme(url), &manager.tls) {
            ("tcp", Some(tls)) => Ok(Self {
                host: url.to_owned(),
                origin,
                tls: Some(tls.clone()),
            }),
            _ => Self::from_url(url, origin, &Environment::default()),
        }
    }

    /// The local socket.
    fn local(origin: Origin) -> Self {
        Self {
            host: DEFAULT_ENGINE.to_owned(),
            origin,
            tls: None,
        }
    }

    /// An engine named by URL; TLS as `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` say.
    fn from_url(url: &str, origin: Origin, env: &Environment) -> Result<Self, EngineError> {
        let engine = url.to_owned();
        let by = origin.to_string();
        match scheme(url) {
            "unix" => Ok(Self {
                host: engine,
                origin,
                tls: None,
            }),
            // ssh checks the host's key itself.
            "ssh" => match super::ssh::parse(&engine) {
                Ok(_) => Ok(Self {
                    host: engine,
                    origin,
                    tls: None,
                }),
                Err(why) => Err(EngineError::BadSshUrl { by, engine, why }),
            },
            "tcp" if env.tls_verify => {
                let dir = env
                    .cert_path
                    .clone()
                    .or_else(|| env.config_dir.clone())
                    .unwrap_or_else(|| PathBuf::from(".docker"));
                let tls = TlsFiles::in_dir(&dir, &engine, &by)?;
                Ok(Self {
                    host: engine,
                    origin,
                    tls: Some(tls),
                })
            }
            "tcp" if env.tls => Err(EngineError::UnverifiedTls {
                engine,
                why: format!("DOCKER_TLS is set without DOCKER_TLS_VERIFY ({by})"),
            }),
            "tcp" => Err(EngineError::PlainTcp { engine, by }),
            _ => Err(EngineError::UnsupportedEngine { engine, by }),
        }
    }

    /// An engine named by a Docker context: its endpoint and TLS files, as `docker
    /// context create` stored them.
    fn from_context(name: &str, by: ContextChoice, env: &Environment) -> Result<Self, EngineError> {
        let origin = Origin::Context {
            name: name.to_owned(),
            by,
        };
        // `default` is the engine Docker uses without a context: DOCKER_HOST is unset
        // by now, so the local socket.
        if name == "default" {
            return Ok(Self::local(origin));
        }
        let Some(config) = &env.config_dir else {
            return Err(EngineError::ContextMissing {
                name: name.to_owned(),
                path: "~/.docker (HOME is not set)".to_owned(),
                by: origin.to_string(),
            });
        };
        let id = context_id(name);
        let meta = config.join("contexts/meta").join(&id).join("meta.json");
        let text = std::fs::read_to_string(&meta).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                EngineError::ContextMissing {
                    name: name.to_owned(),
                    path: meta.display().to_string(),
                    by: origin.to_string(),
                }
            } else {
                EngineError::ContextUnreadable {
                    name: name.to_owned(),
                    path: meta.display().to_string(),
                    why: e.to_string(),
                }
            }
        })?;
        let unreadable = |why: String| EngineError::ContextUnreadable {
            name: name.to_owned(),
            path: meta.display().to_string(),
            why,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        let docker = &json["Endpoints"]["docker"];
        let host = docker["Host"]
            .as_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| unreadable("it has no `Endpoints.docker.Host`".to_owned()))?
            .to_owned();
        let by = origin.to_string();
        match scheme(&host) {
            "tcp" if docker["SkipTLSVerify"].as_bool() == Some(true) => {
                Err(EngineError::UnverifiedTls {
                    engine: host,
                    why: format!("{by} says skip-tls-verify"),
                })
            }
            "tcp" => {
                let dir = config.join("contexts/tls").join(&id).join("docker");
                if !dir.exists() {
                    return Err(EngineError::PlainTcp { engine: host, by });
                }
                let tls = TlsFiles::in_dir(&dir, &host, &by)?;
                Ok(Self {
                    host,
                    origin,
                    tls: Some(tls),
                })
            }
            _ => Self::from_url(&host, origin, env),
        }
    }

    /// Whether the engine may be on another machine: then it cannot see this one's
    /// files, and the workspace travels in a volume. Only a Unix socket is surely here.
    pub fn is_remote(&self) -> bool {
        scheme(&self.host) != "unix"
    }

    /// The engine's address and how it is reached: `tcp://…:2376 (TLS)`.
    pub fn address(&self) -> String {
        match self.tls {
            Some(_) => format!("{} (TLS)", self.host),
            None if scheme(&self.host) == "ssh" => format!("{} (ssh)", self.host),
            None => self.host.clone(),
        }
    }

    /// Whether the engine is reached through `ssh`.
    pub fn is_ssh(&self) -> bool {
        scheme(&self.host) == "ssh"
    }
}

impl fmt::Display for Endpoint {
    /// `tcp://127.0.0.1:2376 (TLS) from DOCKER_HOST`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.address(), self.origin)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("(the default: no --engine, DOCKER_HOST or context)"),
            Self::DockerHost => f.write_str("from DOCKER_HOST"),
            Self::Flag => f.write_str("from --engine"),
            Self::SwarmNode(node) => {
                write!(f, "from the label dev.openmono.engine of swarm node {node}")
            }
            Self::Context { name, by } => {
                write!(f, "from context `{name}` ")?;
                match by {
                    ContextChoice::Config(path) => {
                        write!(f, "(the current context in {})", path.display())
                    }
                    ContextChoice::DockerContext => f.write_str("(DOCKER_CONTEXT)"),
                    ContextChoice::Flag => f.write_str("(--engine)"),
                }
            }
        }
    }
}

impl TlsFiles {
    /// `ca.pem`, `cert.pem` and `key.pem` in `dir`, each there and readable.
    fn in_dir(dir: &Path, engine: &str, by: &str) -> Result<Self, EngineError> {
        let files = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        for path in [&files.ca, &files.cert, &files.key] {
            if let Err(e) = std::fs::File::open(path) {
                return Err(EngineError::TlsFile {
                    engine: engine.to_owned(),
                    path: path.display().to_string(),
                    why: e.to_string(),
                    by: by.to_owned(),
                });
            }
        }
        Ok(files)
    }
}

/// The part of a URL before `://`.
fn scheme(url: &str) -> &str {
    url.split_once("://").map_or("", |(scheme, _)| scheme)
}

/// A context's folder name: the SHA-256 of its name, in hex, as the docker CLI stores it.
fn context_id(name: &str) -> String {
    use sha2::Digest;
    use std::fmt::Write as _;
    sha2::Sha256::digest(name.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// `currentContext` of the Docker config, with the file that names it; none when there
/// is no config or it names no context.
fn current_context(env: &Environment) -> Result<Option<(String, PathBuf)>, EngineError> {
    let Some(dir) = &env.config_dir else {
        return Ok(None);
    };
    let path = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EngineError::ContextUnreadable {
            name: "(current)".to_owned(),
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
    Ok(json["currentContext"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(|c| (c.to_owned(), path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Docker config folder with one context, `remote` at `host`, with TLS files
    /// unless `tls` is false; and a current context when `current` names one.
    fn config(host: &str, tls: bool, current: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp");
        let id = context_id("remote");
        let meta = dir.path().join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).expect("mkdir");
        std::fs::write(
            meta.join("meta.json"),
            format!(
                r#"{{"Name":"remote","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#
            ),
        )
        .expect("meta");
        if tls {
            let certs = dir.path().join("contexts/tls").join(&id).join("docker");
            std::fs::create_dir_all(&certs).expect("mkdir");
            for f in ["ca.pem", "cert.pem", "key.pem"] {
                std::fs::write(certs.join(f), "pem").expect("pem");
            }
        }
        if let Some(name) = current {
            std::fs::write(
                dir.path().join("config.json"),
                format!(r#"{{"auths":{{}},"currentContext":"{name}"}}"#),
            )
            .expect("config");
        }
        dir
    }

    fn env(dir: &Path) -> Environment {
        Environment {
            config_dir: Some(dir.to_owned()),
            ..Environment::default()
        }
    }

    #[test]
    fn the_context_id_is_the_sha256_of_its_name_as_docker_stores_it() {
        // The folders `docker context create remote` and the `default` context use.
        assert_eq!(
            context_id("remote"),
            "b71199ebd070b36beab7317920c2c2f1d777df8d05e5527d8458fda57cb17a7a"
        );
        assert_eq!(
            context_id("default"),
            "37a8eec1ce19687d132fe29051dca629d164e2c4958ba141d5f4133a33f0688f"
        );
    }

    #[test]
    fn the_choice_follows_the_docker_cli_precedence() {
        let dir = config("tcp://10.0.0.9:2376", true, Some("remote"));
        let mut env = env(dir.path());
        // The config's current context.
        let chosen = Endpoint::choose(None, &env).expect("context");
        assert_eq!(chosen.host, "tcp://10.0.0.9:2376");
        assert_eq!(
            chosen.to_string(),
            format!(
                "tcp://10.0.0.9:2376 (TLS) from context `remote` (the current context in {})",
                dir.path().join("config.json").display()
            )
        );
        let certs = dir
            .path()
            .join("contexts/tls")
            .join(context_id("remote"))
            .join("docker");
        assert_eq!(
            chosen.tls,
            Some(TlsFiles {
                ca: certs.join("ca.pem"),
                cert: certs.join("cert.pem"),
                key: certs.join("key.pem"),
            })
        );
        // DOCKER_CONTEXT beats the config.
        env.docker_context = Some("default".into());
        assert_eq!(
            Endpoint::choose(None, &env).expect("default").to_string(),
            "unix:///var/run/docker.sock from context `default` (DOCKER_CONTEXT)"
        );
        // DOCKER_HOST beats DOCKER_CONTEXT.
        env.docker_host = Some("unix:///run/other.sock".into());
        assert_eq!(
            Endpoint::choose(None, &env).expect("host").to_string(),
            "unix:///run/other.sock from DOCKER_HOST"
        );
        // --engine beats everything, as a URL or as a context.
        assert_eq!(
            Endpoint::choose(Some("unix:///x.sock"), &env)
                .expect("flag")
                .to_string(),
            "unix:///x.sock from --engine"
        );
        assert_eq!(
            Endpoint::choose(Some("remote"), &env)
                .expect("flag context")
                .to_string(),
            "tcp://10.0.0.9:2376 (TLS) from context `remote` (--engine)"
        );
        // Nothing at all: the local socket.
        assert_eq!(
            Endpoint::choose(None, &Environment::default())
                .expect("default")
                .to_string(),
            "unix:///var/run/docker.sock (the default: no --engine, DOCKER_HOST or context)"
        );
    }

    #[test]
    fn tcp_needs_verified_tls_with_all_three_files() {
        let dir = tempfile::tempdir().expect("temp");
        let mut env = Environment {
            cert_path: Some(dir.path().to_owned()),
            docker_host: Some("tcp://127.0.0.1:2376".into()),
            ..Environment::default()
        };
        let plain = Endpoint::choose(None, &env).expect_err("plain tcp");
        assert_eq!(
            plain.to_string(),
            "refusing the engine at `tcp://127.0.0.1:2376` (from DOCKER_HOST): plain TCP, without TLS"
        );
        env.tls = true;
        assert_eq!(
            Endpoint::choose(None, &env)
                .expect_err("unverified")
                .to_string(),
            "refusing the engine at `tcp://127.0.0.1:2376`: DOCKER_TLS is set without DOCKER_TLS_VERIFY (from DOCKER_HOST), so its certificate would not be checked"
        );
        env.tls_verify = true;
        let missing = Endpoint::choose(None, &env).expect_err("no files");
        assert_eq!(
            missing.to_string(),
            format!(
                "cannot read `{}` for the TLS connection to `tcp://127.0.0.1:2376` (from DOCKER_HOST)",
                dir.path().join("ca.pem").display()
            )
        );
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(f), "pem").expect("pem");
        }
        let chosen = Endpoint::choose(None, &env).expect("tls");
        assert_eq!(
            chosen.to_string(),
            "tcp://127.0.0.1:2376 (TLS) from DOCKER_HOST"
        );
        assert!(chosen.is_remote());
    }

    #[test]
    fn other_schemes_and_missing_contexts_say_what_to_do() {
        let dir = config("tcp://10.0.0.9:2376", false, None);
        let env = env(dir.path());
        let ssh = Endpoint::choose(Some("ssh://me@box"), &env).expect("ssh");
        assert_eq!(ssh.to_string(), "ssh://me@box (ssh) from --engine");
        assert!(ssh.is_remote());
        assert_eq!(
            Endpoint::choose(Some("npipe:////./pipe/docker_engine"), &env)
                .expect_err("npipe")
                .to_string(),
            "openmono cannot use the engine at `npipe:////./pipe/docker_engine` (from --engine)"
        );
        let missing = Endpoint::choose(Some("nowhere"), &env).expect_err("missing");
        assert_eq!(
            missing.to_string(),
            "there is no Docker context `nowhere` (from context `nowhere` (--engine))"
        );
        // A context over TCP without TLS files is plain TCP.
        assert_eq!(
            Endpoint::choose(Some("remote"), &env)
                .expect_err("plain context")
                .to_string(),
            "refusing the engine at `tcp://10.0.0.9:2376` (from context `remote` (--engine)): plain TCP, without TLS"
        );
    }
}
