//! `openmono gc`: removes what runs left behind when openmono itself was killed
//! (`kill -9`, a crash, a machine that lost power), so that teardown never ran. A run's
//! objects carry its owner's process id, start time and host; a run whose owner process
//! is gone from this host is dead. A live run, or one owned by another host sharing the
//! engine, is never touched. `apply` does the same before it starts, for dead runs
//! older than a minute (a run killed a moment ago is `openmono gc`'s to reap).

use std::collections::BTreeMap;

use super::{
    Engine, EngineError, EngineObject, ObjectKind,
    executor::{BINARY_LABEL, BINARY_VOLUME, FILE_LABEL, RUN_LABEL},
};

/// Labels that name a run's owner process.
pub const OWNER_PID: &str = "dev.openmono.owner-pid";
pub const OWNER_START: &str = "dev.openmono.owner-start";
pub const OWNER_HOST: &str = "dev.openmono.owner-host";
/// When the run started, in seconds since the Unix epoch.
pub const STARTED: &str = "dev.openmono.started";

/// How long reaping waits for a swarm to let go of an overlay whose boxes it removed.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether a run's objects (their labels) are not for this process to reap: its owner
/// is on another host sharing the engine, or alive here.
fn owned_elsewhere_or_alive(
    labels: &std::collections::HashMap<String, String>,
    host: &str,
) -> bool {
    labels.get(OWNER_HOST).is_some_and(|h| h != host)
        || owner_alive(
            labels.get(OWNER_PID).map_or("", String::as_str),
            labels.get(OWNER_START),
        )
}

/// The objects of one dead run.
#[derive(Debug)]
pub struct DeadRun {
    pub objects: Vec<EngineObject>,
    pub owner_pid: String,
    pub run: String,
    /// Objects that could not be removed, each with why.
    pub failed: Vec<String>,
}

/// Finds, on each of `engines` (one engine, or a swarm's manager and the nodes it
/// reaches), the runs whose owner is gone and that started at least `min_age` ago and,
/// unless `dry_run`, removes their objects: services and containers on every engine
/// first, then networks, then volumes, so that no overlay is removed while a node's
/// container is still on it. A network that the swarm still holds is waited for at most
/// `patience`. A removal that fails is noted in its run and the rest goes on. Returns
/// each run once, with what was (or would be) removed.
pub async fn collect(
    engines: &[Engine],
    dry_run: bool,
    min_age: std::time::Duration,
    patience: std::time::Duration,
) -> Result<Vec<DeadRun>, EngineError> {
    let mut found: Vec<(usize, DeadRun)> = Vec::new();
    for (i, engine) in engines.iter().enumerate() {
        found.extend(
            dead_runs(engine, min_age)
                .await?
                .into_iter()
                .map(|r| (i, r)),
        );
    }
    if !dry_run {
        let phases: [&[ObjectKind]; 3] = [
            &[ObjectKind::Service, ObjectKind::Container],
            &[ObjectKind::Network],
            &[ObjectKind::Volume],
        ];
        for phase in phases {
            for (
                i,
                DeadRun {
                    objects, failed, ..
                },
            ) in &mut found
            {
                for object in objects.iter().filter(|o| phase.contains(&o.kind)) {
                    if let Err(e) = engines[*i].remove_within(object, patience).await {
                        let why = super::error_chain(&e);
                        // The swarm holds an overlay for a box that no engine here has.
                        let hint = if why.contains(super::docker::HELD_BY_SWARM) {
                            format!(
                                " (a box on a swarm node that was not visited holds it: label that node {}=URL of its engine)",
                                super::NODE_ENGINE_LABEL
                            )
                        } else {
                            String::new()
                        };
                        failed.push(format!("{} {}: {why}{hint}", object.kind, object.name));
                    }
                }
            }
        }
    }
    let mut dead = Vec::new();
    for (_, run) in found {
        merge(&mut dead, vec![run]);
    }
    Ok(dead)
}

/// The runs on `engine` whose owner is gone and that started at least `min_age` ago.
async fn dead_runs(
    engine: &Engine,
    min_age: std::time::Duration,
) -> Result<Vec<DeadRun>, EngineError> {
    let now = now_secs();
    let mut runs: BTreeMap<String, Vec<EngineObject>> = BTreeMap::new();
    for object in engine.objects(RUN_LABEL).await? {
        if let Some(run) = object.labels.get(RUN_LABEL) {
            runs.entry(run.clone()).or_default().push(object);
        }
    }
    let host = host_name();
    let mut dead = Vec::new();
    for (run, objects) in runs {
        let labels = &objects[0].labels;
        let owner_pid = labels.get(OWNER_PID).cloned().unwrap_or_default();
        let started = labels
            .get(STARTED)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if now.saturating_sub(started) < min_age.as_secs()
            || owned_elsewhere_or_alive(labels, &host)
        {
            continue;
        }
        dead.push(DeadRun {
            objects,
            owner_pid,
            run,
            failed: Vec::new(),
        });
    }
    Ok(dead)
}

/// What reaping says: a line for each dead run, and one for what it could not remove.
pub fn reaped_lines(dead: &[DeadRun]) -> Vec<String> {
    let mut lines = Vec::new();
    for run in dead {
        lines.push(format!(
            "Removed {} object(s) left by run {} (its openmono, pid {}, is gone)",
            run.objects.len() - run.failed.len(),
            run.run,
            run.owner_pid
        ));
        if !run.failed.is_empty() {
            lines.push(format!(
                "warning: some of what run {} left is still there (`openmono gc` removes it): {}",
                run.run,
                run.failed.join("; ")
            ));
        }
    }
    lines
}

/// Adds the dead runs found on one more engine of a swarm to those found before: one
/// run's objects together, each object once (services and networks are the swarm's,
/// seen from every node).
pub fn merge(dead: &mut Vec<DeadRun>, more: Vec<DeadRun>) {
    for run in more {
        match dead.iter_mut().find(|d| d.run == run.run) {
            Some(known) => {
                for why in run.failed {
                    if !known.failed.contains(&why) {
                        known.failed.push(why);
                    }
                }
                for object in run.objects {
                    if !known
                        .objects
                        .iter()
                        .any(|o| o.kind == object.kind && o.id == object.id)
                    {
                        known.objects.push(object);
                    }
                }
            }
            None => dead.push(run),
        }
    }
}

/// Workspace volumes that runs whose owner is gone kept on the engine (their changes
/// could not be fetched): never removed here, only named, with their run's id.
pub async fn kept_workspaces(engine: &Engine) -> Result<Vec<(String, String)>, EngineError> {
    let host = host_name();
    Ok(engine
        .objects(super::executor::WORKSPACE_LABEL)
        .await?
        .into_iter()
        .filter(|o| {
            let labels = &o.labels;
            labels.get(OWNER_HOST).is_none_or(|h| *h == host)
                && !owner_alive(
                    labels.get(OWNER_PID).map_or("", String::as_str),
                    labels.get(OWNER_START),
                )
        })
        .filter_map(|o| {
            let run = o.labels.get(super::executor::WORKSPACE_LABEL)?.clone();
            Some((o.name, run))
        })
        .collect())
}

/// The copies of other openmono binaries that runs kept on the engine (a volume each,
/// and its marker), none of which this binary (`current`, its SHA-256) uses: removed
/// unless `dry_run`, and named. A copy that a box still mounts is left: the engine
/// refuses, and its marker stays with it. So is the copy of a binary whose run is alive
/// (it labels its objects with its binary), which may mount it any moment.
pub async fn stale_binaries(
    engine: &Engine,
    current: &str,
    dry_run: bool,
) -> Result<Vec<String>, EngineError> {
    let in_use = binaries_in_use(engine).await?;
    let copies: Vec<EngineObject> = engine
        .objects(FILE_LABEL)
        .await?
        .into_iter()
        .filter(|o| {
            o.kind == ObjectKind::Volume
                && o.name.ends_with(BINARY_VOLUME)
                && o.labels
                    .get(FILE_LABEL)
                    .is_some_and(|hash| hash != current && !in_use.contains(hash))
        })
        .collect();
    let mut removed = Vec::new();
    for copy in copies {
        let whole = EngineObject {
            id: format!("{}.whole", copy.id),
            name: format!("{}.whole", copy.name),
            ..copy.clone()
        };
        if dry_run || engine.remove(&copy).await.is_ok() {
            if !dry_run {
                engine.remove(&whole).await?;
            }
            removed.push(copy.name);
        }
    }
    Ok(removed)
}

/// The binaries (their SHA-256) of the runs on `engine` whose owner is alive, on this
/// host or another: such a run may be about to mount its binary's copy.
async fn binaries_in_use(engine: &Engine) -> Result<Vec<String>, EngineError> {
    let host = host_name();
    Ok(engine
        .objects(RUN_LABEL)
        .await?
        .into_iter()
        .filter(|object| owned_elsewhere_or_alive(&object.labels, &host))
        .filter_map(|mut object| object.labels.remove(BINARY_LABEL))
        .collect())
}

/// Whether process `pid` is running and is the one that started the run (a pid can be
/// reused; its start time cannot). Without a pid, the owner is unknown: alive, to be safe.
pub fn owner_alive(pid: &str, start: Option<&String>) -> bool {
    let Ok(pid) = pid.parse::<u32>() else {
        return true;
    };
    match (process_start(pid), start) {
        (None, _) => false,
        (Some(now), Some(then)) => now == *then,
        (Some(_), None) => true,
    }
}

/// A process's start time, in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, field 2, is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19).map(str::to_owned)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This machine's name, to tell this host's runs from another's on a shared engine.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_found_on_several_nodes_are_merged_with_each_object_once() {
        let object = |kind, id: &str| EngineObject {
            id: id.to_owned(),
            kind,
            labels: std::collections::HashMap::new(),
            name: format!("openmono-{id}"),
        };
        let run = |run: &str, objects| DeadRun {
            objects,
            owner_pid: "7".to_owned(),
            run: run.to_owned(),
            failed: Vec::new(),
        };
        let mut dead = vec![run(
            "r1",
            vec![
                object(ObjectKind::Service, "s1"),
                object(ObjectKind::Network, "n1"),
            ],
        )];
        merge(
            &mut dead,
            vec![
                run(
                    "r1",
                    vec![
                        object(ObjectKind::Network, "n1"),
                        object(ObjectKind::Volume, "v1"),
                    ],
                ),
                run("r2", vec![object(ObjectKind::Container, "c2")]),
            ],
        );
        let seen: Vec<(&str, Vec<&str>)> = dead
            .iter()
            .map(|d| {
                (
                    d.run.as_str(),
                    d.objects.iter().map(|o| o.id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(seen, [("r1", vec!["s1", "n1", "v1"]), ("r2", vec!["c2"])]);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = std::process::id();
        let start = process_start(me).expect("own start time");
        assert!(owner_alive(&me.to_string(), Some(&start)));
        assert!(!owner_alive(&me.to_string(), Some(&"1".to_owned())));
        // No such process.
        assert!(!owner_alive("4194304", None));
        // Unknown owner: left alone.
        assert!(owner_alive("", None));
    }
}
