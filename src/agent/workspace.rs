//! Where the file tools work. In goes the path a model wrote; out comes the path to
//! touch, or an error for the model.
//!
//! A relative path is taken from the working directory and must stay inside its tree
//! (`../x` is refused); an absolute path is taken as it is, since the container itself
//! is the sandbox. Paths are cleaned by their text alone (`a/./b/../c` is `a/c`);
//! symbolic links are not followed here.

use std::path::{Component, Path, PathBuf};

/// The working directory of the file tools.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Absolute and clean.
    root: PathBuf,
}

impl Workspace {
    #[must_use]
    pub fn new(root: &Path) -> Self {
        let root = if root.is_absolute() {
            root.to_owned()
        } else {
            std::env::current_dir().unwrap_or_default().join(root)
        };
        Self { root: clean(&root) }
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path a tool call names, or an error for the model.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        if path.trim().is_empty() {
            return Err("error: `path` is empty; use \".\" for the working directory".into());
        }
        let given = Path::new(path);
        if given.is_absolute() {
            return Ok(clean(given));
        }
        let mut resolved = self.root.clone();
        let mut depth = 0_usize;
        for component in given.components() {
            match component {
                Component::Normal(name) => {
                    resolved.push(name);
                    depth += 1;
                }
                Component::ParentDir if depth == 0 => {
                    return Err(format!(
                        "error: `{path}` leaves the working directory {}; use an absolute \
                         path to go outside it",
                        self.root.display()
                    ));
                }
                Component::ParentDir => {
                    resolved.pop();
                    depth -= 1;
                }
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        Ok(resolved)
    }

    /// How a path is shown to the model: relative to the working directory when inside
    /// it (`.` for the directory itself), absolute otherwise.
    #[must_use]
    pub fn show(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(relative) if relative.as_os_str().is_empty() => ".".to_owned(),
            Ok(relative) => relative.display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }
}

/// The path with `.` dropped and `..` applied to the text, never above the root.
fn clean(path: &Path) -> PathBuf {
    let mut cleaned = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                cleaned.pop();
            }
            Component::CurDir => {}
            other => cleaned.push(other),
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside_the_tree() {
        let workspace = Workspace::new(Path::new("/workspace"));
        let resolve = |path: &str| workspace.resolve(path);
        assert_eq!(
            resolve("src/main.rs"),
            Ok(PathBuf::from("/workspace/src/main.rs"))
        );
        assert_eq!(resolve("./a/../b/./c"), Ok(PathBuf::from("/workspace/b/c")));
        assert_eq!(resolve("."), Ok(PathBuf::from("/workspace")));
        assert_eq!(resolve("a/.."), Ok(PathBuf::from("/workspace")));
        assert_eq!(
            resolve("a/../../etc/passwd"),
            Err(
                "error: `a/../../etc/passwd` leaves the working directory /workspace; use an \
                 absolute path to go outside it"
                    .into()
            )
        );
        assert_eq!(
            resolve(" "),
            Err("error: `path` is empty; use \".\" for the working directory".into())
        );
    }

    #[test]
    fn absolute_paths_are_taken_as_they_are() {
        let workspace = Workspace::new(Path::new("/workspace/"));
        assert_eq!(
            workspace.resolve("/tmp/x/../y"),
            Ok(PathBuf::from("/tmp/y"))
        );
        assert_eq!(
            workspace.resolve("/workspace/a"),
            Ok(PathBuf::from("/workspace/a"))
        );
    }

    #[test]
    fn paths_are_shown_relative_to_the_root() {
        let workspace = Workspace::new(Path::new("/workspace"));
        assert_eq!(workspace.show(Path::new("/workspace/src/a.rs")), "src/a.rs");
        assert_eq!(workspace.show(Path::new("/workspace")), ".");
        assert_eq!(workspace.show(Path::new("/tmp/b")), "/tmp/b");
    }
}
