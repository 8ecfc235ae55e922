//! Teardown: removes what the run created, whatever happened before.

use super::*;

impl Executor<'_> {
    /// the run's label (created by a step that was cancelled before it could record it).
    pub(super) async fn teardown(&mut self) -> Report {
        let mut report = Report {
            dir: self.dir.clone(),
            run_id: self.run_id.clone(),
            ..Report::default()
        };
        let mut errors = Vec::new();
        self.progress.start_step("teardown");
        for created in self.created.drain(..).rev() {
            match created {
                Created::Container { id, log } => {
                    if let Some(path) = log {
                        let text = self.engine.log_tail(&id, 10_000).await;
                        let _ = std::fs::write(path, text);
                    }
                    match self.engine.remove_container(&id).await {
                        Ok(()) => report.removed_containers += 1,
                        Err(e) => errors.push(error_chain(&e)),
                    }
                }
                Created::Volume { name } => match self.engine.remove_volume(&name).await {
                    Ok(()) => report.removed_volumes += 1,
                    Err(e) => errors.push(error_chain(&e)),
                },
                Created::Network { id } => match self.engine.remove_network(&id).await {
                    Ok(()) => report.removed_networks += 1,
                    Err(e) => {
                        let users = self.engine.network_users(&id).await;
                        errors.push(if users.is_empty() {
                            error_chain(&e)
                        } else {
                            format!(
                                "{}; containers still attached: {}",
                                error_chain(&e),
                                users.join(", ")
                            )
                        });
                    }
                },
            }
        }
        if let Ok((containers, networks)) = self.engine.labelled(RUN_LABEL, &self.run_id).await {
            for (id, _) in containers {
                if self.engine.remove_container(&id).await.is_ok() {
                    report.removed_containers += 1;
                }
            }
            for (id, _) in networks {
                if self.engine.remove_network(&id).await.is_ok() {
                    report.removed_networks += 1;
                }
            }
        }
        if let Ok(volumes) = self.engine.labelled_volumes(RUN_LABEL, &self.run_id).await {
            for name in volumes {
                if self.engine.remove_volume(&name).await.is_ok() {
                    report.removed_volumes += 1;
                }
            }
        }
        if let Ok(volumes) = self.engine.labelled_volumes(RUN_LABEL, &self.run_id).await {
            report
                .leftovers
                .extend(volumes.iter().map(|name| format!("volume {name}")));
        }
        match self.engine.labelled(RUN_LABEL, &self.run_id).await {
            Ok((containers, networks)) => {
                report.leftovers.extend(
                    containers
                        .iter()
                        .map(|(_, name)| format!("container {name}")),
                );
                report
                    .leftovers
                    .extend(networks.iter().map(|(_, name)| format!("network {name}")));
            }
            Err(e) => report
                .leftovers
                .push(format!("unknown: {}", error_chain(&e))),
        }
        let ok = report.leftovers.is_empty();
        self.progress
            .finish_step("teardown", ok, &errors.join("; "));
        report
    }
}
