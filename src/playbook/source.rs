//! The text of a playbook and of the files it includes, each read once: later stages
//! never read them again (the agent may be able to write them from inside the
//! workspace). All files share one offset space: an included file's spans start after
//! the text before it, so a span alone says which file it points into, and diagnostics
//! name the right file.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use miette::{MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

/// One file: where it is, its text, and where its offsets start.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The first offset of this file in the shared offset space.
    pub base: usize,
    /// The folder that relative paths in this file are resolved against.
    pub dir: PathBuf,
    /// The path as the user (or the `include`) gave it, for messages.
    pub path: PathBuf,
    pub text: Arc<String>,
}

/// A playbook file and the files it includes.
#[derive(Debug, Clone)]
pub struct Source {
    /// The built-in default playbook, which is in no file: messages say so rather than
    /// name a file that does not exist.
    pub built_in: bool,
    /// The playbook's folder.
    pub dir: PathBuf,
    /// Files brought in by `include`, in the order they were read.
    pub included: Vec<SourceFile>,
    /// The playbook's path as the user gave it.
    pub path: PathBuf,
    /// The playbook's own text.
    pub text: Arc<String>,
}

impl Source {
    /// Reads `path` once. A CRLF file becomes LF so that no `\r` reaches a value.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let (dir, text) = read_file(path)?;
        Ok(Self::from_text(path, dir, text))
    }

    pub fn from_text(path: &Path, dir: PathBuf, text: String) -> Self {
        Self {
            built_in: false,
            dir,
            included: Vec::new(),
            path: path.to_path_buf(),
            text: Arc::new(lf(text)),
        }
    }

    /// Adds an included file; its offsets start after everything read so far.
    pub fn include(&mut self, path: &Path, dir: PathBuf, text: String) -> &SourceFile {
        let base = self
            .included
            .last()
            .map_or(self.text.len(), |f| f.base + f.text.len())
            + 1;
        self.included.push(SourceFile {
            base,
            dir,
            path: path.to_path_buf(),
            text: Arc::new(lf(text)),
        });
        self.included.last().expect("just pushed")
    }

    /// All files, the playbook first.
    fn files(&self) -> impl Iterator<Item = (usize, &Path, &Path, &Arc<String>)> {
        std::iter::once((0, self.path.as_path(), self.dir.as_path(), &self.text)).chain(
            self.included
                .iter()
                .map(|f| (f.base, f.path.as_path(), f.dir.as_path(), &f.text)),
        )
    }

    /// The folder of the file that holds `offset`.
    pub fn dir_at(&self, offset: usize) -> &Path {
        self.files()
            .filter(|(base, ..)| *base <= offset)
            .last()
            .map_or(self.dir.as_path(), |(_, _, dir, _)| dir)
    }

    /// `path`, written at `span`, resolved against the folder of the file it is in.
    pub fn resolve_at(&self, span: SourceSpan, path: &str) -> PathBuf {
        self.dir_at(span.offset()).join(path)
    }

    /// The text at `span`, in whichever file holds it.
    pub fn slice(&self, span: SourceSpan) -> Option<&str> {
        let (base, _, _, text) = self
            .files()
            .filter(|(base, ..)| *base <= span.offset())
            .last()?;
        let start = span.offset() - base;
        text.get(start..start + span.len())
    }

    /// The source for miette: every file, each under its own name.
    pub fn named(&self) -> SourceMap {
        SourceMap {
            built_in: self.built_in,
            files: self
                .files()
                .map(|(base, path, _, text)| {
                    let name = if base == 0 && self.built_in {
                        BUILT_IN.to_owned()
                    } else {
                        path.display().to_string()
                    };
                    (name, base, Arc::clone(text))
                })
                .collect(),
        }
    }
}

/// The name of the built-in default playbook in messages.
pub const BUILT_IN: &str = "the built-in default playbook";

/// The most bytes a playbook, or a file it includes, may hold: 4 MiB. Playbooks are a
/// few KB; the cap keeps `openmono plan /dev/zero`, or a log given by mistake, from
/// eating memory (the text is held whole, with spans into it, until the run ends).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a playbook file's text: a regular file of at most [`MAX_FILE_BYTES`], UTF-8.
/// Anything else is an error, at once: a device or a pipe is never read from (`/dev/zero`
/// would never end, a FIFO would block), and a file that grows is read no further than
/// the cap.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let too_large = || {
        Error::new(
            ErrorKind::FileTooLarge,
            format!(
                "the file is larger than {} MiB, the most a playbook may be",
                MAX_FILE_BYTES >> 20
            ),
        )
    };
    let not_regular = || Error::new(ErrorKind::InvalidInput, "not a regular file");
    // Checked before opening: opening a FIFO blocks until something writes to it.
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(not_regular());
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        // Where the first bad byte is, as an editor counts: line and column of characters.
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = std::str::from_utf8(valid).unwrap_or_default();
        let line = text.matches('\n').count() + 1;
        let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Error::new(
            ErrorKind::InvalidData,
            format!(
                "the file is not UTF-8 text: byte {} (line {line}, column {column}) is not valid UTF-8; save the playbook as UTF-8",
                valid.len() + 1
            ),
        )
    })
}

/// Reads a file's text (see [`read_text`]) and the absolute folder it is in.
pub fn read_file(path: &Path) -> std::io::Result<(PathBuf, String)> {
    let text = read_text(path)?;
    let dir = std::path::absolute(path)?
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    Ok((dir, text))
}

fn lf(text: String) -> String {
    if text.contains("\r\n") {
        text.replace("\r\n", "\n")
    } else {
        text
    }
}

/// The playbook's files for diagnostics: a span is looked up in the file that holds it.
#[derive(Debug, Clone)]
pub struct SourceMap {
    /// The playbook is the built-in default, in no file.
    built_in: bool,
    /// Name, first offset and text of each file, in offset order.
    files: Vec<(String, usize, Arc<String>)>,
}

impl SourceMap {
    /// The playbook's own name.
    pub fn name(&self) -> &str {
        self.files.first().map_or("playbook", |(name, ..)| name)
    }

    /// The playbook as a message names it: its file in backticks, or the built-in
    /// default in words.
    pub fn title(&self) -> String {
        if self.built_in {
            BUILT_IN.to_owned()
        } else {
            format!("`{}`", self.name())
        }
    }
}

impl SourceCode for SourceMap {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let (name, base, text) = self
            .files
            .iter()
            .rev()
            .find(|(_, base, _)| *base <= span.offset())
            .ok_or(MietteError::OutOfBounds)?;
        let local = SourceSpan::new((span.offset() - base).into(), span.len());
        let contents =
            text.as_str()
                .read_span(&local, context_lines_before, context_lines_after)?;
        let (start, end) = (
            contents.span().offset(),
            contents.span().offset() + contents.span().len(),
        );
        // miette shows whole lines: a label in a line of megabytes would print it all.
        // Past [`SNIPPET`] bytes, only the text around the label is shown.
        if end - start > SNIPPET && local.len() < SNIPPET {
            let from = floor_char(text, local.offset().saturating_sub(AROUND).max(start));
            let to = ceil_char(text, (local.offset() + local.len() + AROUND).min(end));
            let before = &text[..from];
            let line = before.matches('\n').count();
            let column = before[before.rfind('\n').map_or(0, |n| n + 1)..]
                .chars()
                .count();
            let data = &text.as_bytes()[from..to];
            return Ok(Box::new(MietteSpanContents::new_named(
                name.clone(),
                data,
                SourceSpan::new((from + base).into(), to - from),
                line,
                column,
                text[from..to].matches('\n').count() + 1,
            )));
        }
        Ok(Box::new(MietteSpanContents::new_named(
            name.clone(),
            contents.data(),
            SourceSpan::new((start + base).into(), end - start),
            contents.line(),
            contents.column(),
            contents.line_count(),
        )))
    }
}

/// The most bytes of source a diagnostic shows whole; beyond it, [`AROUND`] bytes on
/// each side of the label.
const SNIPPET: usize = 2048;
const AROUND: usize = 160;

fn floor_char(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_char(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_regular_files_up_to_the_cap() {
        let dir = tempfile::tempdir().expect("temp dir");
        let at_cap = dir.path().join("at-cap.kdl");
        let big = dir.path().join("big.kdl");
        let line = "// ".to_owned() + &"x".repeat(1020) + "\n";
        let text = line.repeat(usize::try_from(MAX_FILE_BYTES).expect("fits") / line.len());
        std::fs::write(&at_cap, &text).expect("write");
        std::fs::write(&big, text.clone() + &line).expect("write");
        assert_eq!(read_text(&at_cap).expect("at the cap").len(), text.len());
        let error = read_text(&big).expect_err("too large");
        assert_eq!(error.kind(), std::io::ErrorKind::FileTooLarge);
        assert!(error.to_string().contains("larger than 4 MiB"), "{error}");
        // Devices and folders return at once, never read.
        for path in ["/dev/zero", "/dev/null", "/"] {
            let error = read_text(Path::new(path)).expect_err(path);
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{path}");
        }
    }
}
