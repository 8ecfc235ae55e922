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

use super::file_tools::{cut_line, is_binary, plural, sorted_entries};
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
    let finder = RegexBuilder::new(&source)
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
        let mut hit = false;
        for (index, line) in text.lines().enumerate() {
            if !finder.is_match(line) {
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
            hit = true;
            let _ = writeln!(
                out,
                "{}:{}:{}",
                workspace.show(&file),
                index + 1,
                cut_line(line.trim_end())
            );
        }
        matched_files += usize::from(hit);
    }
    let kind = if regex { "regex" } else { "text" };
    let skipped_note = if skipped > 0 {
        format!("; skipped {}", plural(skipped, "binary or large file"))
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
        "[{} in {}{skipped_note}]",
        plural(matches, "match"),
        plural(matched_files, "file")
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn search(root: &Path, arguments: &serde_json::Value) -> Result<String, String> {
        let args =
            ToolArgs::parse("search_text", &arguments.to_string(), SEARCH_USAGE).expect("args");
        search_text(&Workspace::new(root), &args)
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, text) in [
            (
                "src/main.rs",
                "fn main() {\n    let a.b = 1;\n    axb();\n}\n",
            ),
            ("src/lib.rs", "pub fn Main() {}\n"),
            (".git/config", "fn main in git\n"),
            ("README", "main things\n"),
        ] {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("folders");
            fs::write(path, text).expect("file");
        }
        fs::write(dir.path().join("src/blob.bin"), b"fn main\0binary").expect("binary");
        dir
    }

    #[test]
    fn literal_search_lists_file_line_text_and_skips_git_and_binaries() {
        let dir = tree();
        assert_eq!(
            search(dir.path(), &json!({"pattern": "main"})),
            Ok("README:1:main things\nsrc/main.rs:1:fn main() {\n\
                [2 matches in 2 files; skipped 1 binary or large file]"
                .into())
        );
        assert_eq!(
            search(dir.path(), &json!({"pattern": "a.b"})),
            Ok("src/main.rs:2:    let a.b = 1;\n[1 match in 1 file; skipped 1 binary or large file]".into())
        );
        assert_eq!(
            search(
                dir.path(),
                &json!({"pattern": "MAIN(", "ignore_case": true, "path": "src/lib.rs"})
            ),
            Ok("src/lib.rs:1:pub fn Main() {}\n[1 match in 1 file]".into())
        );
    }

    #[test]
    fn regex_search_is_asked_for() {
        let dir = tree();
        assert_eq!(
            search(
                dir.path(),
                &json!({"pattern": r"a.b\b", "regex": true, "path": "src"})
            ),
            Ok("src/main.rs:2:    let a.b = 1;\nsrc/main.rs:3:    axb();\n\
                [2 matches in 1 file; skipped 1 binary or large file]"
                .into())
        );
        let error = search(dir.path(), &json!({"pattern": "(", "regex": true})).expect_err("bad");
        assert_eq!(
            error,
            "error: `pattern` is not a valid regex (error: unclosed group); leave out \
             \"regex\": true to search for the text as it is"
        );
    }

    #[test]
    fn no_matches_and_bad_paths_are_said() {
        let dir = tree();
        assert_eq!(
            search(dir.path(), &json!({"pattern": "zzz", "path": "src/lib.rs"})),
            Ok("no matches for the text `zzz` in `src/lib.rs`".into())
        );
        assert_eq!(
            search(dir.path(), &json!({"pattern": "x", "path": "gone"})),
            Err("error: `gone` does not exist".into())
        );
        assert_eq!(
            search(dir.path(), &json!({"pattern": ""})),
            Err("error: `pattern` is empty".into())
        );
    }

    #[test]
    fn the_search_stops_at_the_cap() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = (1..=150).fold(String::new(), |mut text, n| {
            let _ = writeln!(text, "hit {n}");
            text
        });
        fs::write(dir.path().join("many.txt"), text).expect("file");
        let found = search(dir.path(), &json!({"pattern": "hit"})).expect("results");
        let lines: Vec<&str> = found.lines().collect();
        assert_eq!(lines.len(), MATCH_CAP + 1);
        assert_eq!(lines[0], "many.txt:1:hit 1");
        assert_eq!(lines[MATCH_CAP - 1], "many.txt:100:hit 100");
        assert_eq!(
            lines[MATCH_CAP],
            "[stopped after 100 matches; narrow the pattern or the path]"
        );
    }
}
