//! Teardown: removes what the run created, whatever happened before.

use super::*;

impl Executor<'_> {
    /// Removes what the run created, newest first, then sweeps anything else that carries
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
        let label = format!("{RUN_LABEL}={}", self.run_id);
        if let Ok(objects) = self.engine.objects(&label).await {
            for object in objects {
                if self.engine.remove(&object).await.is_ok() {
                    match object.kind {
                        ObjectKind::Container => report.removed_containers += 1,
                        ObjectKind::Network => report.removed_networks += 1,
                        ObjectKind::Volume => report.removed_volumes += 1,
                    }
                }
            }
        }
        match self.engine.objects(&label).await {
            Ok(left) => report
                .leftovers
                .extend(left.iter().map(|o| format!("{} {}", o.kind, o.name))),
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
