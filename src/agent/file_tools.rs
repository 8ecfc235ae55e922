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
        "wrote {} bytes ({} lines) to `{shown}`, {what}",
        content.len(),
        content.lines().count()
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
        "edited `{shown}` at line {line}: {} lines replaced by {}",
        line_count(&old_text),
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

/// Lines of a piece of text: a last line without its newline still counts.
fn line_count(text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        text.lines().count().max(1)
    }
}
