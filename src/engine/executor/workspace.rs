//! The workspace on an engine elsewhere, which cannot bind-mount this machine's files:
//! before the container starts, the workspace is copied into a volume of the run; at
//! teardown, once the containers are gone, the volume's files come back and what the
//! box changed is written back, file by file, where the host's file is still the one
//! that was sent. A file that changed on the host meanwhile is not overwritten: the
//! box's version goes to the run's folder. Protected paths (the playbook, git's hooks
//! and config) never come back. A volume whose files could not be fetched is kept.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::*;

/// A workspace sent to the engine. Saved in the run's folder as
/// `workspace-CONTAINER.json` until it is back, so that `openmono runs fetch` can bring
/// it back later when the run could not (the connection broke).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Travelled {
    /// The playbook's name of the container.
    pub container: String,
    /// The workspace on this machine.
    pub dir: PathBuf,
    /// The image of the container, for the helper that reads the volume.
    pub image: String,
    /// Paths relative to the workspace that never come back.
    pub protected: Vec<String>,
    pub read_only: bool,
    /// What was sent: each file's SHA-256 (a symlink's, of its target), and each folder.
    pub sent: BTreeMap<String, Entry>,
    /// The volume's name on the engine.
    pub volume: String,
    /// The engine that holds the volume, as its address reads (`tcp://…:2376 (TLS)`): a
    /// matrix on a swarm places runs on other nodes than the one connected to.
    #[serde(default)]
    pub engine: Option<String>,
}

/// One thing in a workspace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Entry {
    File([u8; 32]),
    Folder,
    Link([u8; 32]),
}

/// The label of a workspace volume, with the run id: not the run's own label, so that
/// teardown's sweep and `gc` leave a volume whose changes were not fetched.
pub const WORKSPACE_LABEL: &str = "dev.openmono.workspace";

/// What came back of one workspace.
#[derive(Debug, Default)]
struct Returned {
    removed: usize,
    /// Files changed on both sides: the box's version is kept in the run's folder.
    kept_apart: Vec<String>,
    skipped: Vec<String>,
    written: usize,
}

impl Executor<'_> {
    /// Copies the workspace of the container of `step` into a new volume of the run;
    /// returns the volume's name.
    pub(super) async fn send_workspace(&self, step: &Step) -> Result<String, String> {
        let Step::StartContainer {
            image,
            name,
            protected,
            workspace: Some((dir, read_only)),
            ..
        } = step
        else {
            unreachable!("called for StartContainer with a workspace only")
        };
        let volume = format!("{}.workspace", self.engine_name(name));
        let mut labels = self.labels(name);
        labels.remove(RUN_LABEL);
        labels.insert(WORKSPACE_LABEL.to_owned(), self.run_id.clone());
        self.engine
            .create_volume(&volume, labels)
            .await
            .map_err(|e| error_chain(&e))?;
        let (archive, sent) =
            pack(dir).map_err(|e| format!("cannot pack the workspace {}: {e}", dir.display()))?;
        let travelled = Travelled {
            container: name.clone(),
            dir: dir.clone(),
            image: image.clone(),
            protected: protected.clone(),
            read_only: *read_only,
            sent,
            volume: volume.clone(),
            engine: Some(self.engine.address()),
        };
        // The record is written once the copy is whole: a record always stands for a
        // workspace the box may have changed, never for a copy cut short (whose missing
        // files would come back as removed). One cut short holds nothing of the box's.
        if let Err(e) = self
            .engine
            .fill_volume(&volume, WORKSPACE, image, self.labels(name), archive)
            .await
        {
            let _ = self.engine.remove_volume(&volume).await;
            return Err(error_chain(&e));
        }
        travelled
            .save(&self.dir)
            .map_err(|e| format!("cannot write the record of the workspace's journey: {e}"))?;
        lock(&self.travelled).push(travelled);
        Ok(volume)
    }

    /// Brings back what the boxes changed in their workspaces and removes the volumes;
    /// a volume whose files cannot be fetched is kept, and named in `report`.
    pub(super) async fn bring_back(&self, report: &mut Report) {
        let travelled = std::mem::take(&mut *lock(&self.travelled));
        for t in travelled {
            match t
                .fetch(&self.engine, &self.dir, self.labels(&t.container))
                .await
            {
                Ok(Some(line)) => report.workspace.push(line),
                Ok(None) => {}
                Err(Lost::Files(why)) => {
                    report.leftovers.push(format!(
                        "volume {} (kept: it holds what `{}` changed in {}, which could not be fetched; `openmono runs fetch {}` brings it back)",
                        t.volume,
                        t.container,
                        t.dir.display(),
                        self.run_id
                    ));
                    report.teardown_errors.push(why);
                    continue;
                }
                Err(Lost::Volume(line, why)) => {
                    report.workspace.extend(line);
                    report.leftovers.push(format!("volume {}", t.volume));
                    report.teardown_errors.push(why);
                    continue;
                }
            }
            report.removed_volumes += 1;
        }
    }
}

/// Why a travelled workspace is not all back.
pub enum Lost {
    /// Its files could not be fetched: the volume is kept, and so is the record.
    Files(String),
    /// They are back (the report's line, if any), but the volume could not be removed.
    Volume(Option<String>, String),
}

impl Travelled {
    /// The file in the run's folder `run_dir` that records this workspace's journey.
    fn record(run_dir: &Path, container: &str) -> PathBuf {
        run_dir.join(format!("workspace-{container}.json"))
    }

    fn save(&self, run_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(Self::record(run_dir, &self.container), json)
    }

    /// The workspaces of the run in `run_dir` that are not back yet.
    pub fn pending(run_dir: &Path) -> Vec<Self> {
        let Ok(entries) = std::fs::read_dir(run_dir) else {
            return Vec::new();
        };
        let mut pending: Vec<Self> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("workspace-") && name.ends_with(".json")
            })
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        pending.sort_by(|a, b| a.container.cmp(&b.container));
        pending
    }

    /// Brings back what the box changed (unless the workspace was read-only), removes
    /// the volume and the record; the report's line, if there is one to give.
    pub async fn fetch(
        &self,
        engine: &Engine,
        run_dir: &Path,
        labels: HashMap<String, String>,
    ) -> Result<Option<String>, Lost> {
        // Only the run's own volume, on the engine it ran on: elsewhere the engine would
        // make an empty one, and every file sent would seem removed by the box.
        let run = run_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let owner = engine
            .volume_label(&self.volume, WORKSPACE_LABEL)
            .await
            .map_err(|e| Lost::Files(error_chain(&e)))?;
        if owner.as_deref() != Some(run) {
            let used = match &self.engine {
                Some(used) => format!("; the run used {used}: choose that engine"),
                None => ": choose the engine the run used".to_owned(),
            };
            return Err(Lost::Files(format!(
                "this engine ({}) has no volume {} of run {run}{used} (--engine, DOCKER_HOST or a context)",
                engine.address(),
                self.volume
            )));
        }
        let line = if self.read_only {
            None
        } else {
            let tar = engine
                .read_volume(&self.volume, WORKSPACE, &self.image, labels)
                .await
                .map_err(|e| Lost::Files(error_chain(&e)))?;
            let returned = write_back(self, run_dir, &tar).map_err(Lost::Files)?;
            Some(returned.describe(self, run_dir))
        };
        // The files are back: the record goes, whatever becomes of the volume.
        let _ = std::fs::remove_file(Self::record(run_dir, &self.container));
        match engine.remove_volume(&self.volume).await {
            Ok(()) => Ok(line),
            Err(e) => Err(Lost::Volume(line, error_chain(&e))),
        }
    }
}

/// Writes back what changed between `sent` and the volume's archive `tar`; a file
/// changed on both sides goes to the run's folder `run_dir`.
fn write_back(t: &Travelled, run_dir: &Path, tar: &[u8]) -> Result<Returned, String> {
    let top = WORKSPACE.trim_start_matches('/');
    let mut returned = Returned::default();
    let mut seen = std::collections::BTreeSet::new();
    // An archive without the workspace's own folder is not the workspace: nothing in it
    // may count as removed.
    let whole = tar::Archive::new(tar)
        .entries()
        .map_err(|e| format!("cannot read the workspace's files: {e}"))?
        .filter_map(Result::ok)
        .any(|e| {
            e.path()
                .is_ok_and(|p| p.components().eq(Path::new(top).components()))
        });
    if !whole {
        return Err("the volume holds no workspace: nothing was brought back".to_owned());
    }
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| format!("cannot read the workspace's files: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("cannot read the workspace's files: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("a path in the workspace: {e}"))?
            .into_owned();
        let Some(relative) = relative(&path, top) else {
            continue;
        };
        seen.insert(relative.clone());
        if t.protected
            .iter()
            .any(|p| relative == *p || relative.starts_with(&format!("{p}/")))
        {
            continue;
        }
        let kind = entry.header().entry_type();
        let now = if kind.is_dir() {
            Entry::Folder
        } else if kind.is_symlink() {
            let target = entry.link_name().ok().flatten().unwrap_or_default();
            Entry::Link(Sha256::digest(target.as_os_str().as_encoded_bytes()).into())
        } else if kind.is_file() {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes)
                .map_err(|e| format!("cannot read `{relative}` from the workspace: {e}"))?;
            let hash: [u8; 32] = Sha256::digest(&bytes).into();
            if t.sent.get(&relative) == Some(&Entry::File(hash)) {
                continue;
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
            write_file(t, run_dir, &relative, &bytes, mode, &mut returned)?;
            continue;
        } else {
            continue;
        };
        if t.sent.get(&relative) == Some(&now) {
            continue;
        }
        match now {
            Entry::Folder => {
                if safe_parents(&t.dir, &relative) {
                    std::fs::create_dir_all(t.dir.join(&relative))
                        .map_err(|e| format!("cannot make folder `{relative}`: {e}"))?;
                }
            }
            _ => returned.skipped.push(format!("{relative} (a symlink)")),
        }
    }
    // What was sent and is gone: removed, unless the host's copy changed meanwhile.
    for (relative, was) in t.sent.iter().rev() {
        if seen.contains(relative)
            || t.protected
                .iter()
                .any(|p| relative == p || relative.starts_with(&format!("{p}/")))
        {
            continue;
        }
        let here = t.dir.join(relative);
        match was {
            Entry::Folder => {
                let _ = std::fs::remove_dir(&here);
            }
            _ if safe_parents(&t.dir, relative) && host_entry(&here).as_ref() == Some(was) => {
                std::fs::remove_file(&here)
                    .map_err(|e| format!("cannot remove `{relative}`: {e}"))?;
                returned.removed += 1;
            }
            _ => returned
                .skipped
                .push(format!("{relative} (removed in the box, changed here)")),
        }
    }
    Ok(returned)
}

/// Writes one file the box changed, where the host's file is still the one sent;
/// else keeps the box's version in the run's folder.
fn write_file(
    t: &Travelled,
    run_dir: &Path,
    relative: &str,
    bytes: &[u8],
    mode: u32,
    returned: &mut Returned,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let here = t.dir.join(relative);
    let unchanged = match t.sent.get(relative) {
        Some(was) => host_entry(&here).as_ref() == Some(was),
        None => std::fs::symlink_metadata(&here).is_err(),
    };
    let (target, kept_apart) = if unchanged && safe_parents(&t.dir, relative) {
        (here, false)
    } else {
        (
            run_dir
                .join(format!("workspace-{}", t.container))
                .join(relative),
            true,
        )
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot make the folder of `{relative}`: {e}"))?;
    }
    std::fs::write(&target, bytes)
        .and_then(|()| std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| format!("cannot write `{}`: {e}", target.display()))?;
    if kept_apart {
        returned.kept_apart.push(relative.to_owned());
    } else {
        returned.written += 1;
    }
    Ok(())
}

impl Returned {
    /// One line for the report.
    fn describe(&self, t: &Travelled, dir: &Path) -> String {
        use std::fmt::Write as _;
        let mut text = format!(
            "workspace of `{}` back in {}: {} file(s) written, {} removed",
            t.container,
            t.dir.display(),
            self.written,
            self.removed
        );
        if !self.kept_apart.is_empty() {
            let _ = write!(
                text,
                "; changed here meanwhile, so the box's versions are in {}: {}",
                dir.join(format!("workspace-{}", t.container)).display(),
                self.kept_apart.join(", ")
            );
        }
        if !self.skipped.is_empty() {
            let _ = write!(text, "; not brought back: {}", self.skipped.join(", "));
        }
        text
    }
}

/// A path of the volume's archive relative to the workspace (`workspace/a/b` → `a/b`);
/// none for the top folder and for anything that is not plainly inside it.
fn relative(path: &Path, top: &str) -> Option<String> {
    let inner = path.strip_prefix(top).ok()?;
    let plain = inner
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    let text = inner.to_str()?.trim_end_matches('/');
    (plain && !text.is_empty()).then(|| text.to_owned())
}

/// Whether every folder above `relative` in `dir` is a real folder (or absent): a
/// symlink there could lead a write out of the workspace.
fn safe_parents(dir: &Path, relative: &str) -> bool {
    let mut here = dir.to_path_buf();
    let parts: Vec<&str> = relative.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        here.push(part);
        match std::fs::symlink_metadata(&here) {
            Ok(meta) if !meta.is_dir() => return false,
            _ => {}
        }
    }
    true
}

/// What is at `path` on this machine now, as [`Entry`].
fn host_entry(path: &Path) -> Option<Entry> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.is_symlink() {
        let target = std::fs::read_link(path).ok()?;
        Some(Entry::Link(
            Sha256::digest(target.as_os_str().as_encoded_bytes()).into(),
        ))
    } else if meta.is_dir() {
        Some(Entry::Folder)
    } else {
        Some(Entry::File(
            Sha256::digest(std::fs::read(path).ok()?).into(),
        ))
    }
}

/// The workspace as a tar archive under `workspace/`, with its owners and modes, and
/// what it holds. Symlinks stay symlinks; sockets and pipes are left out.
fn pack(dir: &Path) -> std::io::Result<(Vec<u8>, BTreeMap<String, Entry>)> {
    let top = WORKSPACE.trim_start_matches('/');
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir(top, dir)?;
    let mut sent = BTreeMap::new();
    let mut folders = vec![PathBuf::new()];
    while let Some(folder) = folders.pop() {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(&folder))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let inner = folder.join(&name);
            let path = dir.join(&inner);
            let Some(relative) = inner.to_str().map(str::to_owned) else {
                continue;
            };
            let meta = std::fs::symlink_metadata(&path)?;
            let entry = if meta.is_dir() {
                folders.push(inner.clone());
                Entry::Folder
            } else if meta.is_file() || meta.is_symlink() {
                match host_entry(&path) {
                    Some(entry) => entry,
                    None => continue,
                }
            } else {
                continue;
            };
            builder.append_path_with_name(&path, Path::new(top).join(&inner))?;
            sent.insert(relative, entry);
        }
    }
    Ok((builder.into_inner()?, sent))
}
