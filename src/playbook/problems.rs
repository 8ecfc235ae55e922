//! All the problems of one playbook file, reported together with the file's text.

use std::{fmt, sync::Arc};

use miette::{Diagnostic, NamedSource, SourceCode};

/// One file's problems of one stage, each a diagnostic with its own span.
#[derive(Debug)]
pub struct Problems {
    pub items: Vec<Box<dyn Diagnostic + Send + Sync + 'static>>,
    pub src: NamedSource<Arc<String>>,
}

impl Problems {
    pub fn new<E: Diagnostic + Send + Sync + 'static>(
        src: NamedSource<Arc<String>>,
        items: Vec<E>,
    ) -> Self {
        Self {
            items: items
                .into_iter()
                .map(|e| Box::new(e) as Box<dyn Diagnostic + Send + Sync>)
                .collect(),
            src,
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        let s = if n == 1 { "" } else { "s" };
        write!(f, "`{}` has {n} problem{s}", self.src.name())
    }
}

impl std::error::Error for Problems {}

impl Diagnostic for Problems {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("openmono::playbook"))
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
