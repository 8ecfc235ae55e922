//! The `search_text` tool: finds the lines that match a pattern in the files of a
//! tree, as `file:line:text`.
//!
//! The pattern is literal text unless the call says `"regex": true` (then it is a
//! regular expression in the `regex` crate's syntax). Files are visited in sorted
//! order; `.git` folders, binary files (a NUL byte near the start), files over
//! [`FILE_LIMIT`] bytes and symbolic links to folders are skipped. The search stops
//! at [`MATCH_CAP`] matches.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use regex::RegexBuilder;

use super::file_tools::{cut_line, is_binary, sorted_entries};
use super::tool_args::ToolArgs;
use super::workspace::Workspace;

/// Most matching lines one search returns.
pub const MATCH_CAP: usize = 100;

/// Largest file searched, in bytes.
pub const FILE_LIMIT: u64 = 4 * 1024 * 1024;

pub const SEARCH_USAGE: &str = r#"{"pattern": "fn main", "path": "src", "regex": false}"#;

/// Runs one search.
pub fn search_text(workspace: &Workspace, args: &ToolArgs) -> Result<String, String> {
    let pattern = args.string("pattern")?;
    if pattern.is_empty() {
        return Err("error: `pattern` is empty".to_owned());
    }
    let regex = args.opt_bool("regex")?.unwrap_or(false);
    let ignore_case = args.opt_bool("ignore_case")?.unwrap_or(false);
    let given = args.opt_string("path")?.unwrap_or_else(|| ".".to_owned());
    let root = workspace.resolve(&given)?;
    let shown_root = workspace.show(&root);
    let source = if regex {
        pattern.clone()
    } else {
        regex::escape(&pattern)
    };
    let matcher = RegexBuilder::new(&source)
        .case_insensitive(ignore_case)
        .size_limit(1 << 22)
        .build()
        .map_err(|error| {
            format!(
                "error: `pattern` is not a valid regex ({}); leave out \"regex\": true to \
                 search for the text as it is",
                error.to_string().lines().last().unwrap_or_default().trim()
            )
        })?;
    if !root.exists() {
        return Err(format!("error: `{shown_root}` does not exist"));
    }
    let mut files = Vec::new();
    collect_files(&root, &mut files);
    let mut out = String::new();
    let (mut matches, mut matched_files, mut skipped) = (0, 0, 0);
    for file in files {
        let Some(text) = searchable_text(&file) else {
            skipped += 1;
            continue;
        };
        let mut matched = false;
        for (index, line) in text.lines().enumerate() {
            if !matcher.is_match(line) {
                continue;
            }
            if matches == MATCH_CAP {
                let _ = write!(
                    out,
                    "[stopped after {MATCH_CAP} matches; narrow the pattern or the path]"
                );
                return Ok(out);
            }
            matches += 1;
            matched = true;
            let _ = writeln!(
                out,
                "{}:{}:{}",
                workspace.show(&file),
                index + 1,
                cut_line(line.trim_end())
            );
        }
        matched_files += usize::from(matched);
    }
    let kind = if regex { "regex" } else { "text" };
    let skipped_note = if skipped > 0 {
        format!("; skipped {skipped} binary or large files")
    } else {
        String::new()
    };
    if matches == 0 {
        return Ok(format!(
            "no matches for the {kind} `{pattern}` in `{shown_root}`{skipped_note}"
        ));
    }
    let _ = write!(
        out,
        "[{matches} matches in {matched_files} files{skipped_note}]"
    );
    Ok(out)
}

/// The files under `path` (or `path` itself), in sorted order.
fn collect_files(path: &Path, files: &mut Vec<PathBuf>) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = sorted_entries(path) else {
            return;
        };
        for (name, entry) in entries {
            if name != ".git" {
                collect_files(&entry, files);
            }
        }
    } else if meta.is_file() || fs::metadata(path).is_ok_and(|target| target.is_file()) {
        files.push(path.to_owned());
    }
}

/// A file's text if it is worth searching: not binary, not too large, readable.
fn searchable_text(file: &Path) -> Option<String> {
    if fs::metadata(file).ok()?.len() > FILE_LIMIT {
        return None;
    }
    let bytes = fs::read(file).ok()?;
    if is_binary(&bytes) {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
