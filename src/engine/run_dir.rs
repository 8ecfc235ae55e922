//! Where a run keeps its logs, transcripts and report: under the user's state
//! directory, never in the workspace, where the agent could rewrite them.

use std::path::PathBuf;

/// The folder that holds every run's folder.
pub fn state_dir() -> PathBuf {
    // An empty value counts as unset, as with other tools' variables.
    if let Some(dir) = std::env::var_os("OPENMONO_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("openmono")
}

/// A fresh id for a run: unique on this machine and short enough for engine names.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness; mix in time and pid for good measure.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:010x}", hasher.finish() & 0xff_ffff_ffff)
}
