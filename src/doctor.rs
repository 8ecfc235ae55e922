//! `openmono doctor`: what this machine and its engine mean for the sandbox, before a
//! run finds out. Each finding is fine (`✓`), worth knowing (`!`) or in the way (`✗`).

use std::{fmt, path::Path};

use crate::engine::{Endpoint, Engine, EngineError, EngineFacts};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// One line of the report, with what to do when it is not fine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
    pub help: Option<String>,
}

impl Finding {
    fn ok(text: impl Into<String>) -> Self {
        Self {
            level: Level::Ok,
            text: text.into(),
            help: None,
        }
    }

    fn warn(text: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            level: Level::Warning,
            text: text.into(),
            help: Some(help.into()),
        }
    }

    fn error(text: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            text: text.into(),
            help: Some(help.into()),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.level {
            Level::Ok => "✓",
            Level::Warning => "!",
            Level::Error => "✗",
        };
        write!(f, "{mark} {}", self.text)?;
        if let Some(help) = &self.help {
            write!(f, "\n    {help}")?;
        }
        Ok(())
    }
}

/// Images a run needs unless a playbook names others.
const IMAGES: [&str; 2] = ["openmono/agent:latest", "openmono/llama-server:latest"];

/// Less free space than this where the engine keeps its data is worth a warning.
const LOW_DISK: u64 = 5 << 30;

/// Asks the engine `endpoint` names (or says why none could be chosen) and looks at
/// this machine.
pub async fn examine(endpoint: Result<Endpoint, EngineError>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let connected = match endpoint {
        Ok(endpoint) => {
            findings.push(Finding::ok(format!("engine: {endpoint}")));
            Engine::connect(&endpoint).await.map(|e| (endpoint, e))
        }
        Err(e) => Err(e),
    };
    let (endpoint, engine) = match connected {
        Ok(both) => both,
        Err(e) => {
            // The error knows why (not running, no permission) and what to do about it.
            let help = miette::Diagnostic::help(&e).map(|h| h.to_string());
            findings.push(Finding::error(e.to_string(), help.unwrap_or_default()));
            findings.extend(host_findings(Path::new("/sys/fs/selinux/enforce")));
            return findings;
        }
    };
    match engine.facts().await {
        Ok(facts) => {
            findings.extend(engine_findings(&facts));
            // The folder of an engine elsewhere is on its machine, not this one.
            if let Some(root) = facts.root_dir.as_ref().filter(|_| !endpoint.is_remote()) {
                findings.extend(disk_finding(Path::new(root)));
            }
            if let Ok(Some(node)) = engine.swarm_node().await {
                findings.push(Finding::ok(format!(
                    "a swarm manager: runs become services on its node {node} (see the book's On a Docker Swarm)"
                )));
                findings.extend(node_findings(&engine).await);
            }
        }
        Err(e) => findings.push(Finding::error(
            format!("the engine did not say what it is: {e}"),
            "check that the engine is healthy (`docker info`)",
        )),
    }
    for image in IMAGES {
        findings.push(match engine.image_exists(image).await {
            Ok(true) => Finding::ok(format!("image {image} is on the engine")),
            Ok(false) => Finding::warn(
                format!("image {image} is not on the engine"),
                "build it: `images/setup` (offline) or `docker build` in images/ (see images/README.md)",
            ),
            Err(e) => Finding::error(format!("cannot ask for image {image}: {e}"), "check `docker info`"),
        });
    }
    findings.extend(host_findings(Path::new("/sys/fs/selinux/enforce")));
    findings
}

/// Whether each node that a matrix's runs may go to (labelled with its own engine)
/// answers as that node and has the images.
async fn node_findings(manager: &Engine) -> Vec<Finding> {
    let help = format!(
        "a run placed on a node needs that node's own engine: fix the label (`docker node update --label-add {}=URL NODE`), or remove it and the node takes no runs",
        crate::engine::NODE_ENGINE_LABEL
    );
    let Ok(nodes) = manager.run_nodes().await else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for node in nodes {
        let node = match node {
            Ok(node) if node.engine.is_some() => node,
            Ok(_) => continue,
            Err(why) => {
                findings.push(Finding::warn(why, help.clone()));
                continue;
            }
        };
        let engine = match manager.on_node(&node).await {
            Ok(engine) => engine,
            Err(e) => {
                findings.push(Finding::warn(
                    format!("swarm node {node} takes no runs: {e}"),
                    help.clone(),
                ));
                continue;
            }
        };
        findings.push(Finding::ok(format!(
            "swarm node {node} takes runs of a matrix: its engine {} answers",
            engine.address()
        )));
        for image in IMAGES {
            if !engine.image_exists(image).await.unwrap_or(false) {
                findings.push(Finding::warn(
                    format!("image {image} is not on swarm node {node}"),
                    "each node needs the images its runs use: build them there, or `docker save IMAGE | docker -H NODE-ENGINE load`",
                ));
            }
        }
    }
    findings
}

/// What the engine's version and security options mean.
pub fn engine_findings(facts: &EngineFacts) -> Vec<Finding> {
    let mut findings = vec![Finding::ok(format!(
        "Docker engine {} (API {})",
        facts.version, facts.api_version
    ))];
    if leaks_dns(&facts.version) {
        findings.push(Finding::warn(
            format!(
                "engine {} answers DNS for internal networks by asking the host's resolvers (CVE-2024-29018); openmono's runs are protected: a box on internal networks only sends unknown names to a server inside itself, where nothing answers",
                facts.version
            ),
            "other containers on this engine are not; upgrade it to 26.0 or later (or 25.0.5, 23.0.11)",
        ));
    }
    let options = facts.security_options.join(" ");
    if options.contains("name=rootless") {
        findings.push(Finding::warn(
            "the engine runs rootless: container users map to subordinate IDs of one host user",
            "files the agent writes in the workspace may belong to a subordinate UID on the host",
        ));
    }
    if options.contains("name=userns") {
        findings.push(Finding::warn(
            "the engine remaps user namespaces (userns-remap)",
            "the agent runs as your UID inside, which is another UID on the host: workspace files it writes may not be yours",
        ));
    }
    if let Some(memory) = facts.memory {
        findings.push(Finding::ok(format!(
            "the engine has {} of memory for models and containers",
            crate::step::human_bytes(memory)
        )));
    }
    findings
}

/// Whether an engine version answers outside names on internal networks: fixed in
/// 23.0.11, 25.0.5 and 26.0.0; 24.0 never was.
pub fn leaks_dns(version: &str) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match major {
        1..23 | 24 => true,
        23 => (minor, patch) < (0, 11),
        25 => (minor, patch) < (0, 5),
        // Fixed, or a version we cannot read (0): say nothing rather than guess.
        _ => false,
    }
}

/// Whether `SELinux` enforces, read from the file `enforce` (`/sys/fs/selinux/enforce`).
fn host_findings(enforce: &Path) -> Vec<Finding> {
    match std::fs::read_to_string(enforce) {
        Ok(mode) if mode.trim() == "1" => vec![Finding::warn(
            "SELinux is enforcing",
            "containers may be denied the workspace; openmono never relabels your files: see book/src/troubleshooting.md",
        )],
        _ => Vec::new(),
    }
}

/// Free space where the engine keeps its data, when that folder is on this machine.
fn disk_finding(root: &Path) -> Option<Finding> {
    let path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a valid place for the answer.
    if unsafe { libc::statvfs(path.as_ptr(), &raw mut stat) } != 0 {
        return None;
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let text = format!(
        "{} free where the engine keeps its data ({})",
        crate::step::human_bytes(free),
        root.display()
    );
    Some(if free < LOW_DISK {
        Finding::warn(
            text,
            "images and models need room: a model is hundreds of MB to tens of GB",
        )
    } else {
        Finding::ok(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_before_the_dns_fix_are_named() {
        for leaky in ["20.10.24", "23.0.10", "24.0.9", "25.0.4", "1.13.1"] {
            assert!(leaks_dns(leaky), "{leaky}");
        }
        for fixed in [
            "23.0.11",
            "25.0.5",
            "26.0.0",
            "27.3.1",
            "28.0.0-rc.1",
            "unknown",
        ] {
            assert!(!leaks_dns(fixed), "{fixed}");
        }
    }

    #[test]
    fn findings_say_what_to_do() {
        let facts = EngineFacts {
            api_version: "1.41".into(),
            memory: Some(8 << 30),
            root_dir: None,
            security_options: vec![
                "name=seccomp,profile=default".into(),
                "name=rootless".into(),
            ],
            version: "20.10.24".into(),
        };
        let text: Vec<String> = engine_findings(&facts)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text[0], "✓ Docker engine 20.10.24 (API 1.41)");
        assert!(
            text[1].starts_with("! engine 20.10.24 answers DNS for internal networks")
                && text[1].contains("openmono's runs are protected"),
            "{}",
            text[1]
        );
        assert!(
            text[2].starts_with("! the engine runs rootless"),
            "{}",
            text[2]
        );
        assert_eq!(
            text[3],
            "✓ the engine has 8.0 GiB of memory for models and containers"
        );
    }

    #[test]
    fn selinux_enforcing_is_a_warning() {
        let dir = tempfile::tempdir().expect("temp");
        let enforce = dir.path().join("enforce");
        std::fs::write(&enforce, "1\n").expect("write");
        assert_eq!(host_findings(&enforce)[0].level, Level::Warning);
        std::fs::write(&enforce, "0\n").expect("write");
        assert!(host_findings(&enforce).is_empty());
        assert!(host_findings(&dir.path().join("absent")).is_empty());
    }
}
