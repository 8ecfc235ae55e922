//! Teardown: removes what the run created, whatever happened before.

use futures_util::future::join_all;

use super::*;

impl Executor<'_> {
    /// Removes what the run created: containers first (all at once), then volumes, then
    /// networks, so that nothing is removed while something still uses it; then sweeps
    /// anything else that carries the run's label (created by a step that was cancelled
    /// before it could record it). After an early stop (`graceful`), containers get
    /// [`GRACE`] to stop after SIGTERM, unless a second signal comes.
    pub(super) async fn teardown(
        &self,
        graceful: bool,
        signalled: tokio::sync::watch::Receiver<u32>,
    ) -> Report {
        let mut report = Report {
            dir: self.dir.clone(),
            run_id: self.run_id.clone(),
            ..Report::default()
        };
        let bar = self.progress.start_step("teardown", None);
        let created = lock(&self.created).clone();
        let mut errors = Vec::new();
        let containers = created
            .iter()
            .filter(|c| matches!(c, Created::Container { .. }))
            .map(|c| self.remove_created(c, graceful, signalled.clone()));
        let volumes = created
            .iter()
            .filter(|c| matches!(c, Created::Volume { .. }))
            .map(|c| self.remove_created(c, graceful, signalled.clone()));
        let networks = created
            .iter()
            .filter(|c| matches!(c, Created::Network { .. }))
            .map(|c| self.remove_created(c, graceful, signalled.clone()));
        let containers = join_all(containers).await;
        // The containers are gone: what they changed in travelled workspaces is final.
        self.bring_back(&mut report).await;
        for removals in [
            containers,
            join_all(volumes).await,
            join_all(networks).await,
        ] {
            for removed in removals {
                match removed {
                    Ok(ObjectKind::Service | ObjectKind::Container) => {
                        report.removed_containers += 1;
                    }
                    Ok(ObjectKind::Network) => report.removed_networks += 1,
                    Ok(ObjectKind::Volume) => report.removed_volumes += 1,
                    Err(why) => errors.push(why),
                }
            }
        }
        // What carries the run's label and was not removed above (its creation answered
        // with an error, say) goes now; the engine is asked again only then.
        let label = format!("{RUN_LABEL}={}", self.run_id);
        // An object removed above may still be listed a moment (an overlay network on a
        // swarm): removing it again is harmless, counting it again is not.
        let removed: Vec<String> = created
            .iter()
            .filter(|c| !lock(&self.created).contains(c))
            .map(|c| match c {
                Created::Container { name, .. }
                | Created::Network { name, .. }
                | Created::Volume { name } => name.clone(),
            })
            .collect();
        // A network the swarm took for removal can still be listed once more: gone.
        let mut gone = removed.clone();
        let swept = match self.engine.objects(&label).await {
            Ok(objects) if objects.is_empty() => Ok(objects),
            Ok(objects) => {
                for object in objects {
                    if self.engine.remove(&object).await.is_err() {
                        continue;
                    }
                    if !removed.contains(&object.name) {
                        match object.kind {
                            ObjectKind::Service | ObjectKind::Container => {
                                report.removed_containers += 1;
                            }
                            ObjectKind::Network => report.removed_networks += 1,
                            ObjectKind::Volume => report.removed_volumes += 1,
                        }
                    }
                    gone.push(object.name);
                }
                self.engine.objects(&label).await
            }
            Err(_) => self.engine.objects(&label).await,
        };
        match swept {
            Ok(left) => report.leftovers.extend(
                left.iter()
                    .filter(|o| !(o.kind == ObjectKind::Network && gone.contains(&o.name)))
                    .map(|o| format!("{} {}", o.kind, o.name)),
            ),
            Err(e) => report
                .leftovers
                .push(format!("unknown: {}", error_chain(&e))),
        }
        let ok = report.leftovers.is_empty();
        bar.finish(ok, &errors.join("; "));
        report.teardown_errors = errors;
        report
    }

    /// Removes one object and forgets it; a container's output is kept first if asked.
    async fn remove_created(
        &self,
        created: &Created,
        graceful: bool,
        mut signalled: tokio::sync::watch::Receiver<u32>,
    ) -> Result<ObjectKind, String> {
        let kind = match created {
            Created::Container { id, log, .. } => {
                if graceful && *signalled.borrow() < 2 {
                    // A second signal cuts the grace short; removal kills what is left.
                    tokio::select! {
                        _ = self.engine.stop_container(id, GRACE) => {}
                        _ = signalled.wait_for(|n| *n >= 2) => {}
                    }
                }
                if let Some(path) = log {
                    let text = self.engine.log_tail(id, 10_000).await;
                    let _ = std::fs::write(path, text);
                }
                self.engine
                    .remove_container(id)
                    .await
                    .map_err(|e| error_chain(&e))?;
                ObjectKind::Container
            }
            Created::Volume { name } => {
                self.engine
                    .remove_volume(name)
                    .await
                    .map_err(|e| error_chain(&e))?;
                ObjectKind::Volume
            }
            Created::Network { id, .. } => {
                if let Err(e) = self.engine.remove_network(id).await {
                    // Our own containers still attached are detached and the removal
                    // tried again; anyone else's are named, and left alone.
                    let mut foreign = Vec::new();
                    for (user, name) in self.engine.network_users(id).await {
                        let run = self.engine.container_label(&user, RUN_LABEL).await;
                        if run.as_deref() == Some(self.run_id.as_str()) {
                            let _ = self.engine.disconnect(id, &user).await;
                        } else {
                            foreign.push(name);
                        }
                    }
                    if !foreign.is_empty() {
                        return Err(format!(
                            "{}; containers that are not this run's are attached to it: {}",
                            error_chain(&e),
                            foreign.join(", ")
                        ));
                    }
                    self.engine
                        .remove_network(id)
                        .await
                        .map_err(|e| error_chain(&e))?;
                }
                ObjectKind::Network
            }
        };
        lock(&self.created).retain(|c| c != created);
        Ok(kind)
    }
}
