//! All the problems of one playbook file, reported together with the file's text.

use std::fmt;

use miette::{Diagnostic, Severity, SourceCode};

use super::SourceMap;

/// One file's problems of one stage, each a diagnostic with its own span.
#[derive(Debug)]
pub struct Problems {
    pub items: Vec<Box<dyn Diagnostic + Send + Sync + 'static>>,
    /// How many more there were than are shown.
    pub more: usize,
    pub src: SourceMap,
}

/// Most problems shown at once: a file with thousands of them is one mistake repeated,
/// and printing them all would take longer than fixing it.
const SHOWN: usize = 50;

impl Problems {
    /// The problems in the order of the text (of the first place each points at), so
    /// that they read top to bottom whichever check found them; the first [`SHOWN`].
    pub fn new<E: Diagnostic + Send + Sync + 'static>(src: SourceMap, mut items: Vec<E>) -> Self {
        items.sort_by_key(|e| {
            e.labels()
                .and_then(|labels| labels.map(|label| label.offset()).min())
                .unwrap_or(usize::MAX)
        });
        let more = items.len().saturating_sub(SHOWN);
        Self {
            items: items
                .into_iter()
                .take(SHOWN)
                .map(|e| Box::new(e) as Box<dyn Diagnostic + Send + Sync>)
                .collect(),
            more,
            src,
        }
    }
}

impl Problems {
    fn warnings(&self) -> usize {
        self.items
            .iter()
            .filter(|e| e.severity() == Some(Severity::Warning))
            .count()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: usize, what: &str| {
            if n == 1 {
                format!("1 {what}")
            } else {
                format!("{n} {what}s")
            }
        };
        let warnings = self.warnings();
        let errors = self.items.len() - warnings;
        let name = self.src.title();
        match (errors, warnings) {
            (0, w) => write!(f, "{name} has {}", plural(w, "warning"))?,
            (e, 0) => write!(f, "{name} has {}", plural(e, "problem"))?,
            (e, w) => write!(
                f,
                "{name} has {} and {}",
                plural(e, "problem"),
                plural(w, "warning")
            )?,
        }
        if self.more > 0 {
            write!(f, " shown below, and {} more", self.more)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Diagnostic for Problems {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("openmono::playbook"))
    }

    fn severity(&self) -> Option<Severity> {
        (self.warnings() == self.items.len()).then_some(Severity::Warning)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.src)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(
            self.items.iter().map(|e| &**e as &'a dyn Diagnostic),
        ))
    }
}
