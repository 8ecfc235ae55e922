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

/// Reads a file's text and the absolute folder it is in.
pub fn read_file(path: &Path) -> std::io::Result<(PathBuf, String)> {
    let text = std::fs::read_to_string(path)?;
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
        Ok(Box::new(MietteSpanContents::new_named(
            name.clone(),
            contents.data(),
            SourceSpan::new(
                (contents.span().offset() + base).into(),
                contents.span().len(),
            ),
            contents.line(),
            contents.column(),
            contents.line_count(),
        )))
    }
}
