//! The sandbox's mount policy: which host paths a playbook may mount into a container.
//! A source is judged by where it really leads (the caller canonicalizes it, so a
//! symlink is judged by its target). Each danger it carries is named by a
//! [`Permission`]; the mount is refused unless its `allow="…"` grants every one.
//!
//! The dangers, and the permission that lets each through:
//! - `system`: `/` itself, or `/etc`, `/boot`, `/dev`, `/proc`, `/sys` or anything in them;
//! - `home`: the home folder, a folder that holds it, or a hidden file or folder
//!   directly in it (`~/.ssh`, `~/.aws`, `~/.config`…), where keys and tokens live;
//! - `engine-socket`: a container engine's socket (Docker, containerd, Podman, CRI-O,
//!   buildkitd) or a folder that holds one, such as `/run`: whoever talks to the engine
//!   is root on the host;
//! - `outside-project`: anything outside the project, the playbook's folder.

use std::path::{Path, PathBuf};

/// The names `allow=` takes, in the order the grammar lists them.
pub const PERMISSIONS: &[&str] = &["system", "home", "engine-socket", "outside-project"];

/// The host's system folders: a mount of one of them, or of anything in them, needs
/// `allow="system"`.
const SYSTEM_DIRS: &[&str] = &["/etc", "/boot", "/dev", "/proc", "/sys"];

/// Where container engines put their sockets, besides those under `$XDG_RUNTIME_DIR`
/// and the one `DOCKER_HOST` names.
const ENGINE_SOCKETS: &[&str] = &[
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/var/run/podman/podman.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/buildkit/buildkitd.sock",
    "/run/cri-dockerd.sock",
    "/var/run/cri-dockerd.sock",
];

/// A danger a mount source can carry; `allow="NAME"` on the mount accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// `/`, or the host's system folders.
    System,
    /// The home folder, a folder that holds it, or a hidden entry directly in it.
    Home,
    /// A container engine's socket, or a folder that holds one.
    EngineSocket,
    /// A path outside the project.
    OutsideProject,
}

impl Permission {
    pub const ALL: [Self; 4] = [
        Self::System,
        Self::Home,
        Self::EngineSocket,
        Self::OutsideProject,
    ];

    /// The name `allow=` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Home => "home",
            Self::EngineSocket => "engine-socket",
            Self::OutsideProject => "outside-project",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// What a container gets when this danger is let through, for help lines and plans.
    pub fn exposes(self) -> &'static str {
        match self {
            Self::System => "the host's system files (configuration, devices, kernel state)",
            Self::Home => "your personal files, keys and tokens",
            Self::EngineSocket => {
                "CONTROL OF THE CONTAINER ENGINE, WHICH IS ROOT ON THE HOST (it can start a privileged container and take over the machine)"
            }
            Self::OutsideProject => "host files that are not part of the project",
        }
    }
}

/// Parses the value of `allow=`: names separated by spaces or commas. Returns the
/// permissions, and the words that name none.
pub fn parse_permissions(text: &str) -> (Vec<Permission>, Vec<&str>) {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for word in text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
    {
        match Permission::parse(word) {
            Some(p) => known.push(p),
            None => unknown.push(word),
        }
    }
    known.sort_unstable();
    known.dedup();
    (known, unknown)
}

/// What the policy needs to know about this machine.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The user's home folder, canonical; none when it cannot be told.
    pub home: Option<PathBuf>,
    /// Container engine sockets, each as canonical as the host allows (a socket need
    /// not exist: an engine may start after the plan).
    pub sockets: Vec<PathBuf>,
}

impl Host {
    /// This machine, as the user running openmono sees it.
    pub fn current() -> Self {
        let mut sockets: Vec<PathBuf> = ENGINE_SOCKETS.iter().map(PathBuf::from).collect();
        if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            let runtime = PathBuf::from(runtime);
            for socket in [
                "docker.sock",
                "podman/podman.sock",
                "containerd/containerd.sock",
                "buildkit/buildkitd.sock",
            ] {
                sockets.push(runtime.join(socket));
            }
        }
        for variable in ["DOCKER_HOST", "CONTAINER_HOST"] {
            if let Some(path) = std::env::var(variable)
                .ok()
                .as_deref()
                .and_then(|h| h.strip_prefix("unix://"))
            {
                sockets.push(PathBuf::from(path));
            }
        }
        let mut sockets: Vec<PathBuf> = sockets.iter().map(|s| resolved(s)).collect();
        sockets.dedup();
        Self {
            home: std::env::home_dir()
                .filter(|h| h.is_absolute())
                .map(|h| resolved(&h)),
            sockets,
        }
    }
}

/// A path with its longest existing part canonicalized: `/var/run/x.sock` becomes
/// `/run/x.sock` where `/var/run` leads to `/run`, even if `x.sock` does not exist.
fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(canonical, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// One danger of a mount source: the permission that lets it through, and why, in
/// words that follow "it".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Danger {
    pub permission: Permission,
    pub why: String,
}

/// The dangers of mounting `source` for a playbook whose project is `project`; both
/// canonical. At most one per permission, in the order of [`Permission::ALL`].
pub fn dangers(source: &Path, project: &Path, host: &Host) -> Vec<Danger> {
    let mut found = Vec::new();
    let mut danger = |permission, why: String| found.push(Danger { permission, why });
    if source == Path::new("/") {
        danger(Permission::System, "is the host's root folder".to_owned());
    } else if let Some(dir) = SYSTEM_DIRS.iter().find(|d| source.starts_with(d)) {
        danger(
            Permission::System,
            if source == Path::new(dir) {
                format!("is the host's system folder `{dir}`")
            } else {
                format!("is in the host's system folder `{dir}`")
            },
        );
    }
    if let Some(home) = &host.home {
        let hidden = source
            .strip_prefix(home)
            .ok()
            .and_then(|rest| rest.components().next())
            .map(|first| first.as_os_str().to_string_lossy().into_owned())
            .filter(|first| first.starts_with('.'));
        if source == home {
            danger(Permission::Home, "is your home folder".to_owned());
        } else if home.starts_with(source) {
            danger(Permission::Home, "holds your home folder".to_owned());
        } else if let Some(entry) = hidden {
            danger(
                Permission::Home,
                format!("is in `~/{entry}`, where programs keep keys, tokens and settings"),
            );
        }
    }
    if let Some(socket) = host.sockets.iter().find(|s| s.starts_with(source)) {
        danger(
            Permission::EngineSocket,
            if socket == source {
                "is a container engine's socket".to_owned()
            } else {
                format!("holds the container engine socket `{}`", socket.display())
            },
        );
    }
    if !source.starts_with(project) {
        danger(
            Permission::OutsideProject,
            "is outside the project (the playbook's folder)".to_owned(),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            home: Some(PathBuf::from("/home/ada")),
            sockets: vec![
                PathBuf::from("/run/docker.sock"),
                PathBuf::from("/run/user/1000/podman/podman.sock"),
            ],
        }
    }

    /// The permissions `source` needs in project `/home/ada/code/p`.
    fn needs(source: &str) -> Vec<&'static str> {
        dangers(Path::new(source), Path::new("/home/ada/code/p"), &host())
            .iter()
            .map(|d| d.permission.name())
            .collect()
    }

    #[test]
    fn each_source_needs_exactly_its_permissions() {
        for (source, expected) in [
            ("/home/ada/code/p", &[][..]),
            ("/home/ada/code/p/data", &[]),
            ("/home/ada/code/p/.cache", &[]),
            ("/home/ada/code/other", &["outside-project"]),
            ("/usr/share", &["outside-project"]),
            ("/etc", &["system", "outside-project"]),
            ("/etc/ssl/certs", &["system", "outside-project"]),
            ("/etcetera", &["outside-project"]),
            ("/proc/1", &["system", "outside-project"]),
            ("/home/ada", &["home", "outside-project"]),
            ("/home", &["home", "outside-project"]),
            ("/home/ada/.ssh", &["home", "outside-project"]),
            ("/home/ada/.config/gcloud", &["home", "outside-project"]),
            ("/home/ada/Documents", &["outside-project"]),
            ("/run/docker.sock", &["engine-socket", "outside-project"]),
            ("/run", &["engine-socket", "outside-project"]),
            ("/run/user/1000", &["engine-socket", "outside-project"]),
            ("/run/user/1000/other", &["outside-project"]),
            ("/", &["system", "home", "engine-socket", "outside-project"]),
        ] {
            assert_eq!(needs(source), expected, "{source}");
        }
    }

    #[test]
    fn a_project_inside_a_hidden_folder_of_home_still_needs_home() {
        let found = dangers(
            Path::new("/home/ada/.local/p/data"),
            Path::new("/home/ada/.local/p"),
            &host(),
        );
        assert_eq!(
            found,
            [Danger {
                permission: Permission::Home,
                why: "is in `~/.local`, where programs keep keys, tokens and settings".into()
            }]
        );
    }

    #[test]
    fn reasons_name_what_was_found() {
        let found = dangers(Path::new("/run"), Path::new("/p"), &host());
        assert_eq!(
            found[0].why,
            "holds the container engine socket `/run/docker.sock`"
        );
        let found = dangers(Path::new("/etc/passwd"), Path::new("/p"), &host());
        assert_eq!(found[0].why, "is in the host's system folder `/etc`");
    }

    #[test]
    fn allow_takes_names_separated_by_spaces_or_commas() {
        assert_eq!(
            parse_permissions("outside-project home, home"),
            (vec![Permission::Home, Permission::OutsideProject], vec![])
        );
        assert_eq!(
            parse_permissions("homes system"),
            (vec![Permission::System], vec!["homes"])
        );
        let names: Vec<&str> = Permission::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, PERMISSIONS);
    }

    #[test]
    fn a_socket_is_resolved_through_symlinked_folders() {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
        let canonical = std::fs::canonicalize(&real).expect("canonical");
        assert_eq!(
            resolved(&dir.path().join("link/sub/x.sock")),
            canonical.join("sub/x.sock")
        );
    }
}
