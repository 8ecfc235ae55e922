//! `openmono plan --out FILE` and `openmono apply FILE.json`: a plan saved with what it
//! was made from. `apply` makes the plan again from the same playbook and inputs and runs
//! it only when it comes out the same, and only once (the plan's run id is used up).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    plan::Plan,
    playbook::{Inputs, Source},
};

/// The version of the file's layout; another is refused.
const FORMAT: u32 = 1;

/// A plan file.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: u32,
    /// The openmono version that made it; another one is refused.
    pub openmono: String,
    /// The playbook, as an absolute path.
    pub playbook: PathBuf,
    /// Where relative paths in var values were resolved.
    pub cwd: PathBuf,
    /// The run's id: templates may have used it, and `apply` uses it.
    pub run_id: String,
    /// `OPENMONO_VAR_…` values and `--var` values, as they were.
    pub environment: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
    /// The playbook and every file it includes, with their SHA-256.
    pub sources: Vec<SourceDigest>,
    pub plan: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDigest {
    pub path: PathBuf,
    pub sha256: String,
}

/// Why a saved plan cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum StalePlan {
    #[error("cannot read the plan file {path}: {why}")]
    Unreadable { path: String, why: String },
    #[error(
        "the plan file was made by openmono {found} (layout {format}); this is openmono {}: make the plan again",
        env!("CARGO_PKG_VERSION")
    )]
    Version { found: String, format: u32 },
    #[error("the plan of run {0} was applied already: a plan runs once; make a new one")]
    Applied(String),
    #[error("{0} changed since the plan was made: make the plan again and review it")]
    Changed(String),
}

impl SavedPlan {
    /// Records `plan`, made from `source` with `inputs`.
    pub fn new(plan: &Plan, source: &Source, inputs: &Inputs) -> Result<Self, serde_json::Error> {
        Ok(Self {
            cwd: inputs.cwd.clone(),
            environment: inputs.environment.clone(),
            format: FORMAT,
            openmono: env!("CARGO_PKG_VERSION").to_owned(),
            plan: serde_json::to_value(plan)?,
            playbook: std::path::absolute(&source.path).unwrap_or_else(|_| source.path.clone()),
            run_id: inputs.run_id.clone(),
            sources: digests(source),
            vars: inputs.values.clone(),
        })
    }

    /// Reads a plan file, refusing one of another version or one applied already.
    pub fn read(path: &Path, runs: &Path) -> Result<Self, StalePlan> {
        let unreadable = |why: String| StalePlan::Unreadable {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        let saved: Self = serde_json::from_str(&text)
            .map_err(|e| unreadable(format!("not an openmono plan file: {e}")))?;
        if saved.format != FORMAT || saved.openmono != env!("CARGO_PKG_VERSION") {
            return Err(StalePlan::Version {
                found: saved.openmono,
                format: saved.format,
            });
        }
        // The id names a folder: only the ids openmono makes are taken.
        if saved.run_id.is_empty() || !saved.run_id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(unreadable(format!("`{}` is not a run id", saved.run_id)));
        }
        if runs.join(&saved.run_id).exists() {
            return Err(StalePlan::Applied(saved.run_id));
        }
        Ok(saved)
    }

    /// The inputs the plan was made with.
    pub fn inputs(&self) -> Inputs {
        Inputs {
            cwd: self.cwd.clone(),
            environment: self.environment.clone(),
            run_id: self.run_id.clone(),
            values: self.vars.clone(),
        }
    }

    /// Whether the playbook's files, read again as `source`, and `plan`, made again
    /// from them, are what was saved.
    pub fn check(&self, source: &Source, plan: &Plan) -> Result<(), StalePlan> {
        let now = digests(source);
        for saved in &self.sources {
            if !now.contains(saved) {
                return Err(StalePlan::Changed(format!(
                    "the playbook file {}",
                    saved.path.display()
                )));
            }
        }
        if let Some(new) = now.iter().find(|d| !self.sources.contains(d)) {
            return Err(StalePlan::Changed(format!(
                "the playbook's includes ({} is new)",
                new.path.display()
            )));
        }
        let again = serde_json::to_value(plan)
            .map_err(|e| StalePlan::Changed(format!("the plan (cannot record it: {e})")))?;
        if again != self.plan {
            return Err(StalePlan::Changed(first_difference(&self.plan, &again)));
        }
        Ok(())
    }
}

/// The SHA-256 of the playbook and of every file it includes.
fn digests(source: &Source) -> Vec<SourceDigest> {
    let files = std::iter::once((&source.path, &source.text))
        .chain(source.included.iter().map(|f| (&f.path, &f.text)));
    files
        .map(|(path, text)| SourceDigest {
            path: std::path::absolute(path).unwrap_or_else(|_| path.clone()),
            sha256: crate::plan::hex(&Sha256::digest(text.as_bytes())),
        })
        .collect()
}

/// What differs between two plans, in words: the first step that does.
fn first_difference(saved: &serde_json::Value, again: &serde_json::Value) -> String {
    let steps = |v: &serde_json::Value| v.get("steps").and_then(|s| s.as_array()).cloned();
    match (steps(saved), steps(again)) {
        (Some(a), Some(b)) => match a.iter().zip(&b).position(|(x, y)| x != y) {
            Some(i) => format!("step {} of the plan (a file or value it uses)", i + 1),
            None if a.len() != b.len() => {
                format!("the number of steps ({} then, {} now)", a.len(), b.len())
            }
            None => "the plan's order or teardown".to_owned(),
        },
        _ => "the plan".to_owned(),
    }
}
