//! The text of a playbook file, read once: later stages never read the file again (the
//! agent may be able to write it from inside the workspace).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use miette::NamedSource;

/// A playbook file's path and its text.
#[derive(Debug, Clone)]
pub struct Source {
    /// The folder that relative paths in the playbook are resolved against.
    pub dir: PathBuf,
    /// The path as the user gave it, for messages.
    pub path: PathBuf,
    /// The whole text, shared with every diagnostic.
    pub text: Arc<String>,
}

impl Source {
    /// Reads `path` once. A CRLF file becomes LF so that no `\r` reaches a value.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let dir = std::path::absolute(path)?
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        Ok(Self::from_text(path, dir, text))
    }

    pub fn from_text(path: &Path, dir: PathBuf, text: String) -> Self {
        let text = if text.contains("\r\n") {
            text.replace("\r\n", "\n")
        } else {
            text
        };
        Self {
            dir,
            path: path.to_path_buf(),
            text: Arc::new(text),
        }
    }

    /// The source for miette, named by the path as given.
    pub fn named(&self) -> NamedSource<Arc<String>> {
        NamedSource::new(self.path.display().to_string(), Arc::clone(&self.text))
    }

    /// `path` resolved against the playbook's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }
}
