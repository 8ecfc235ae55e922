//! The file tools: `read_file`, `write_file`, `edit_file` and `list_dir`.
//!
//! Each takes the workspace and the call's arguments and returns the text for the
//! model: `Ok` for what it did, `Err` for why it could not (an answer too, starting
//! with `error:`). Nothing here panics on what a model sends or finds on disk.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::tool_args::ToolArgs;
use super::workspace::Workspace;

/// Most bytes of text `read_file` returns in one call.
pub const READ_CAP: usize = 16 * 1024;

/// Longest line `read_file` and `search_text` show whole.
pub const LINE_CAP: usize = 500;

/// Most entries `list_dir` returns.
pub const LIST_CAP: usize = 500;

/// Deepest `list_dir` goes.
pub const MAX_DEPTH: u64 = 6;

/// How far into a file to look for a NUL byte, the sign of a binary file.
const BINARY_PROBE: usize = 8000;

pub const READ_USAGE: &str = r#"{"path": "src/main.rs", "start_line": 1, "end_line": 40}"#;
pub const WRITE_USAGE: &str = r#"{"path": "notes/todo.txt", "content": "text\n"}"#;
pub const EDIT_USAGE: &str =
    r#"{"path": "src/main.rs", "old_text": "let x = 1;", "new_text": "let x = 2;"}"#;
pub const LIST_USAGE: &str = r#"{"path": "src", "depth": 2}"#;

/// Shows the file's lines, numbered, from `start_line` to `end_line` (both counted from
/// 1, both included), stopping before [`READ_CAP`] bytes.
pub fn read_file(workspace: &Workspace, args: &ToolArgs) -> Result<String, String> {
    let path = workspace.resolve(&args.string("path")?)?;
    let shown = workspace.show(&path);
    let start = args.opt_u64("start_line")?.unwrap_or(1).max(1);
    let end = args.opt_u64("end_line")?;
    if let Some(end) = end
        && end < start
    {
        return Err(format!(
            "error: `end_line` {end} is before `start_line` {start}"
        ));
    }
    let text = read_text(&path, &shown)?;
    let lines: Vec<&str> = text.lines().collect();
    let total = lines.len() as u64;
    if total == 0 {
        return Ok(format!("`{shown}` is empty"));
    }
    if start > total {
        return Err(format!(
            "error: `start_line` {start} is past the end of `{shown}`, which has {total} lines"
        ));
    }
    let end = end.unwrap_or(total).min(total);
    let width = end.to_string().len();
    let mut body = String::new();
    let mut last = start - 1;
    let mut stopped = None;
    for number in start..=end {
        let line = lines[usize::try_from(number - 1).unwrap_or(usize::MAX)];
        let entry = format!("{number:>width$}\t{}\n", cut_line(line));
        if body.len() + entry.len() > READ_CAP {
            stopped = Some(number);
            break;
        }
        body.push_str(&entry);
        last = number;
    }
    let mut out = format!("{shown}: lines {start}-{last} of {total}\n{body}");
    if let Some(next) = stopped {
        let _ = write!(
            out,
            "[stopped before line {next} to stay under {READ_CAP} bytes; read on with \
             start_line={next}]"
        );
    }
    Ok(out)
}

/// Writes `content` to the file, replacing it, and creates its parent folders.
pub fn write_file(workspace: &Workspace, args: &ToolArgs) -> Result<String, String> {
    let path = workspace.resolve(&args.string("path")?)?;
    let content = args.string("content")?;
    let shown = workspace.show(&path);
    if path.is_dir() {
        return Err(format!("error: `{shown}` is a directory"));
    }
    let before = fs::metadata(&path).ok().map(|meta| meta.len());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|error| format!("error: cannot create the folders of `{shown}`: {error}"))?;
    }
    fs::write(&path, &content)
        .map_err(|error| format!("error: cannot write `{shown}`: {error}"))?;
    let what = match before {
        None => "a new file".to_owned(),
        Some(bytes) => format!("replacing {bytes} bytes"),
    };
    Ok(format!(
        "wrote {} ({}) to `{shown}`, {what}",
        plural(content.len(), "byte"),
        plural(content.lines().count(), "line")
    ))
}

/// Replaces the one place where `old_text` occurs in the file with `new_text`.
pub fn edit_file(workspace: &Workspace, args: &ToolArgs) -> Result<String, String> {
    let path = workspace.resolve(&args.string("path")?)?;
    let old_text = args.string("old_text")?;
    let new_text = args.string("new_text")?;
    let shown = workspace.show(&path);
    if old_text.is_empty() {
        return Err(
            "error: `old_text` is empty; to write a whole file, use `write_file`".to_owned(),
        );
    }
    let text = read_text(&path, &shown)?;
    let found: Vec<usize> = text.match_indices(&old_text).map(|(at, _)| at).collect();
    let at = match found.as_slice() {
        [at] => *at,
        [] => {
            return Err(format!(
                "error: `old_text` was not found in `{shown}`; read the file again and copy \
                 the text exactly, spaces and line breaks included"
            ));
        }
        many => {
            return Err(format!(
                "error: `old_text` was found {} times in `{shown}`; include more of the \
                 surrounding lines so that it matches exactly once",
                many.len()
            ));
        }
    };
    let edited = format!("{}{new_text}{}", &text[..at], &text[at + old_text.len()..]);
    fs::write(&path, &edited).map_err(|error| format!("error: cannot write `{shown}`: {error}"))?;
    let line = text[..at].matches('\n').count() + 1;
    Ok(format!(
        "edited `{shown}` at line {line}: {} replaced by {}",
        plural(line_count(&old_text), "line"),
        line_count(&new_text)
    ))
}

/// Lists the directory's entries, sorted, `depth` levels deep (folders end in `/`;
/// `.git` is listed but not entered), at most [`LIST_CAP`] of them.
pub fn list_dir(workspace: &Workspace, args: &ToolArgs) -> Result<String, String> {
    let given = args.opt_string("path")?.unwrap_or_else(|| ".".to_owned());
    let path = workspace.resolve(&given)?;
    let depth = args.opt_u64("depth")?.unwrap_or(1).clamp(1, MAX_DEPTH);
    let shown = workspace.show(&path);
    match fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("error: `{shown}` is a file; use `read_file`")),
        Err(error) => return Err(format!("error: cannot list `{shown}`: {error}")),
    }
    let mut entries = Vec::new();
    list_into(&path, Path::new(""), depth, &mut entries)
        .map_err(|error| format!("error: cannot list `{shown}`: {error}"))?;
    if entries.is_empty() {
        return Ok(format!("`{shown}` is empty"));
    }
    let mut out = entries.join("\n");
    if entries.len() > LIST_CAP {
        out = entries[..LIST_CAP].join("\n");
        let _ = write!(
            out,
            "\n[stopped after {LIST_CAP} entries; list a folder inside or use a smaller depth]"
        );
    }
    Ok(out)
}

/// Adds the entries under `dir` to `entries`, named from `prefix`, until there is one
/// more than [`LIST_CAP`]; unreadable folders inside are noted, not fatal.
fn list_into(dir: &Path, prefix: &Path, depth: u64, entries: &mut Vec<String>) -> io::Result<()> {
    for (name, path) in sorted_entries(dir)? {
        if entries.len() > LIST_CAP {
            return Ok(());
        }
        let relative = prefix.join(&name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_symlink() {
            let target = fs::read_link(&path).unwrap_or_default();
            entries.push(format!("{} -> {}", relative.display(), target.display()));
        } else if meta.is_dir() {
            entries.push(format!("{}/", relative.display()));
            if depth > 1
                && name != ".git"
                && let Err(error) = list_into(&path, &relative, depth - 1, entries)
            {
                entries.push(format!("{}/ (unreadable: {error})", relative.display()));
            }
        } else {
            entries.push(relative.display().to_string());
        }
    }
    Ok(())
}

/// A folder's entries as (name, path), sorted by name.
pub fn sorted_entries(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .collect();
    entries.sort();
    Ok(entries)
}

/// A file's text; folders, missing files and binary files are errors for the model.
fn read_text(path: &Path, shown: &str) -> Result<String, String> {
    if path.is_dir() {
        return Err(format!("error: `{shown}` is a directory; use `list_dir`"));
    }
    let bytes = fs::read(path).map_err(|error| format!("error: cannot read `{shown}`: {error}"))?;
    if is_binary(&bytes) {
        return Err(format!(
            "error: `{shown}` looks binary ({} bytes); only text files can be read",
            bytes.len()
        ));
    }
    String::from_utf8(bytes).map_err(|error| {
        format!(
            "error: `{shown}` is not UTF-8 text (bad byte at offset {})",
            error.utf8_error().valid_up_to()
        )
    })
}

/// Whether the start of a file holds a NUL byte, as binary files do and text does not.
#[must_use]
pub fn is_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(BINARY_PROBE)].contains(&0)
}

/// A line cut to [`LINE_CAP`] bytes, on a character boundary, saying how long it was.
#[must_use]
pub fn cut_line(line: &str) -> String {
    if line.len() <= LINE_CAP {
        return line.to_owned();
    }
    let mut end = LINE_CAP;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [line cut: {} bytes]", &line[..end], line.len())
}

/// `1 file`, `2 files`, `1 match`, `2 matches`.
#[must_use]
pub fn plural(n: usize, noun: &str) -> String {
    match (n, noun.ends_with("ch")) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        (_, false) => format!("{n} {noun}s"),
    }
}

/// Lines of a piece of text: a last line without its newline still counts.
fn line_count(text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        text.lines().count().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one tool with JSON arguments in a workspace at `root`.
    fn call(
        tool: fn(&Workspace, &ToolArgs) -> Result<String, String>,
        root: &Path,
        arguments: &serde_json::Value,
    ) -> Result<String, String> {
        let args = ToolArgs::parse("tool", &arguments.to_string(), "{}").expect("arguments");
        tool(&Workspace::new(root), &args)
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("folders");
            fs::write(path, text).expect("file");
        }
        dir
    }

    use serde_json::json;

    #[test]
    fn read_file_numbers_lines_and_honours_ranges() {
        let dir = tree(&[("a.txt", "one\ntwo\nthree\nfour\n")]);
        let read = |arguments| call(read_file, dir.path(), &arguments);
        assert_eq!(
            read(json!({"path": "a.txt"})),
            Ok("a.txt: lines 1-4 of 4\n1\tone\n2\ttwo\n3\tthree\n4\tfour\n".into())
        );
        assert_eq!(
            read(json!({"path": "./a.txt", "start_line": 2, "end_line": "3"})),
            Ok("a.txt: lines 2-3 of 4\n2\ttwo\n3\tthree\n".into())
        );
        assert_eq!(
            read(json!({"path": "a.txt", "start_line": 3, "end_line": 99})),
            Ok("a.txt: lines 3-4 of 4\n3\tthree\n4\tfour\n".into())
        );
        assert_eq!(
            read(json!({"path": "a.txt", "start_line": 5})),
            Err("error: `start_line` 5 is past the end of `a.txt`, which has 4 lines".into())
        );
        assert_eq!(
            read(json!({"path": "a.txt", "start_line": 3, "end_line": 2})),
            Err("error: `end_line` 2 is before `start_line` 3".into())
        );
    }

    #[test]
    fn read_file_refuses_what_it_cannot_show() {
        let dir = tree(&[("bin", "a\0b"), ("empty", ""), ("sub/x", "x")]);
        fs::write(dir.path().join("latin1"), b"caf\xe9\n").expect("file");
        let read = |path: &str| call(read_file, dir.path(), &json!({ "path": path }));
        assert_eq!(
            read("missing.txt"),
            Err("error: cannot read `missing.txt`: No such file or directory (os error 2)".into())
        );
        assert_eq!(
            read("sub"),
            Err("error: `sub` is a directory; use `list_dir`".into())
        );
        assert_eq!(
            read("bin"),
            Err("error: `bin` looks binary (3 bytes); only text files can be read".into())
        );
        assert_eq!(
            read("latin1"),
            Err("error: `latin1` is not UTF-8 text (bad byte at offset 3)".into())
        );
        assert_eq!(read("empty"), Ok("`empty` is empty".into()));
        assert_eq!(
            call(read_file, dir.path(), &json!({"start_line": 1})),
            Err("error: `tool` needs `path` (a string); call it like {}".into())
        );
    }

    #[test]
    fn read_file_stops_at_the_cap_and_cuts_long_lines() {
        // 100 lines of 300 bytes: each shown line takes 304 bytes with its number.
        let line = "x".repeat(300);
        let text = format!("{line}\n").repeat(100);
        let long = format!("{}\n", "é".repeat(400));
        let dir = tree(&[("big.txt", &text), ("long.txt", &long)]);
        let shown = call(read_file, dir.path(), &json!({"path": "big.txt"})).expect("text");
        let per_line = 3 + 1 + 300 + 1;
        let fits = READ_CAP / per_line;
        assert_eq!(
            shown.lines().next(),
            Some(format!("big.txt: lines 1-{fits} of 100").as_str())
        );
        assert!(
            shown.ends_with(&format!(
                "[stopped before line {} to stay under 16384 bytes; read on with start_line={}]",
                fits + 1,
                fits + 1
            )),
            "{shown}"
        );
        let cut = call(read_file, dir.path(), &json!({"path": "long.txt"})).expect("text");
        assert_eq!(
            cut,
            format!(
                "long.txt: lines 1-1 of 1\n1\t{}… [line cut: 800 bytes]\n",
                "é".repeat(250)
            )
        );
    }

    #[test]
    fn write_file_creates_folders_and_says_what_it_replaced() {
        let dir = tree(&[]);
        let write = |arguments| call(write_file, dir.path(), &arguments);
        assert_eq!(
            write(json!({"path": "a/b/c.txt", "content": "x\ny\n"})),
            Ok("wrote 4 bytes (2 lines) to `a/b/c.txt`, a new file".into())
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("a/b/c.txt"))
                .ok()
                .as_deref(),
            Some("x\ny\n")
        );
        assert_eq!(
            write(json!({"path": "a/b/c.txt", "content": ""})),
            Ok("wrote 0 bytes (0 lines) to `a/b/c.txt`, replacing 4 bytes".into())
        );
        assert_eq!(
            write(json!({"path": "a", "content": "x"})),
            Err("error: `a` is a directory".into())
        );
        assert_eq!(
            write(json!({"path": "../out.txt", "content": "x"})),
            Err(format!(
                "error: `../out.txt` leaves the working directory {}; use an absolute path to \
                 go outside it",
                dir.path().display()
            ))
        );
        let absolute = dir.path().join("abs/d.txt");
        assert_eq!(
            write(json!({"path": absolute, "content": "z"})),
            Ok("wrote 1 byte (1 line) to `abs/d.txt`, a new file".into())
        );
    }

    #[test]
    fn edit_file_replaces_exactly_one_occurrence() {
        let dir = tree(&[("m.rs", "fn a() {}\nlet x = 1;\nlet y = 1;\nlet x = 1;\n")]);
        let edit = |old: &str, new: &str| {
            call(
                edit_file,
                dir.path(),
                &json!({"path": "m.rs", "old_text": old, "new_text": new}),
            )
        };
        assert_eq!(
            edit("let x = 1;", "let x = 2;"),
            Err(
                "error: `old_text` was found 2 times in `m.rs`; include more of the \
                 surrounding lines so that it matches exactly once"
                    .into()
            )
        );
        assert_eq!(
            edit("let z = 1;", "let z = 2;"),
            Err(
                "error: `old_text` was not found in `m.rs`; read the file again and copy the \
                 text exactly, spaces and line breaks included"
                    .into()
            )
        );
        assert_eq!(
            edit("", "x"),
            Err("error: `old_text` is empty; to write a whole file, use `write_file`".into())
        );
        assert_eq!(
            edit("let y = 1;\nlet x = 1;\n", "let y = 3;\n"),
            Ok("edited `m.rs` at line 3: 2 lines replaced by 1".into())
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("m.rs")).ok().as_deref(),
            Some("fn a() {}\nlet x = 1;\nlet y = 3;\n")
        );
        assert_eq!(
            call(
                edit_file,
                dir.path(),
                &json!({"path": "none.rs", "old_text": "a", "new_text": "b"})
            ),
            Err("error: cannot read `none.rs`: No such file or directory (os error 2)".into())
        );
    }

    #[test]
    fn list_dir_sorts_descends_and_leaves_git_closed() {
        let dir = tree(&[
            ("b.txt", ""),
            ("a/z.rs", ""),
            ("a/deep/y.rs", ""),
            (".git/HEAD", ""),
            ("empty/.keep", ""),
        ]);
        std::os::unix::fs::symlink("b.txt", dir.path().join("c")).expect("symlink");
        let list = |arguments| call(list_dir, dir.path(), &arguments);
        assert_eq!(
            list(json!({})),
            Ok(".git/\na/\nb.txt\nc -> b.txt\nempty/".into())
        );
        assert_eq!(
            list(json!({"path": ".", "depth": 2})),
            Ok(".git/\na/\na/deep/\na/z.rs\nb.txt\nc -> b.txt\nempty/\nempty/.keep".into())
        );
        assert_eq!(
            list(json!({"path": "a", "depth": 9})),
            Ok("deep/\ndeep/y.rs\nz.rs".into())
        );
        assert_eq!(
            list(json!({"path": "b.txt"})),
            Err("error: `b.txt` is a file; use `read_file`".into())
        );
        assert_eq!(
            list(json!({"path": "nope"})),
            Err("error: cannot list `nope`: No such file or directory (os error 2)".into())
        );
        fs::remove_file(dir.path().join("empty/.keep")).expect("remove");
        assert_eq!(
            list(json!({"path": "empty"})),
            Ok("`empty` is empty".into())
        );
    }

    #[test]
    fn list_dir_stops_at_the_cap() {
        let dir = tree(&[]);
        for index in 0..LIST_CAP + 20 {
            fs::write(dir.path().join(format!("f{index:04}")), "").expect("file");
        }
        let listed = call(list_dir, dir.path(), &json!({})).expect("listing");
        let lines: Vec<&str> = listed.lines().collect();
        assert_eq!(lines.len(), LIST_CAP + 1);
        assert_eq!(lines[0], "f0000");
        assert_eq!(lines[LIST_CAP - 1], "f0499");
        assert_eq!(
            lines[LIST_CAP],
            "[stopped after 500 entries; list a folder inside or use a smaller depth]"
        );
    }
}
