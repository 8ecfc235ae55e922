//! An image's build context as the engine takes it: a tar archive of the context folder,
//! without what its `.dockerignore` excludes, read as `docker build` reads it. Patterns
//! are relative to the context (a leading `/` changes nothing), `*` and `?` stay within
//! one path segment, `**` spans any number of them, `!` makes an exception, the last
//! matching line wins, and a pattern that matches a folder excludes all in it.

use std::path::Path;

use globset::GlobMatcher;

/// The lines of a `.dockerignore`, in order.
#[derive(Debug, Default)]
pub struct Ignore {
    patterns: Vec<(GlobMatcher, bool)>,
}

impl Ignore {
    /// Reads `.dockerignore` text; a line that is not a valid pattern is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (pattern, exception) = match line.strip_prefix('!') {
                Some(rest) => (rest.trim(), true),
                None => (line, false),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob = globset::GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("line {}: `{line}`: {e}", n + 1))?;
            patterns.push((glob.compile_matcher(), exception));
        }
        Ok(Self { patterns })
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for (pattern, exception) in &self.patterns {
            // A pattern matches a path or any folder the path is in.
            let matches = pattern.is_match(path)
                || path
                    .match_indices('/')
                    .any(|(i, _)| pattern.is_match(&path[..i]));
            if matches {
                excluded = !exception;
            }
        }
        excluded
    }

    /// Whether some `!` line could bring back something inside an excluded folder.
    fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|(_, exception)| *exception)
    }
}

/// `./a/../b/` → `b`, `/x` → `x`: patterns are relative to the context root.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// The context folder as a tar archive, without what `.dockerignore` excludes; the
/// Dockerfile and `.dockerignore` go in always (the engine needs them).
pub fn archive(dir: &Path, dockerfile: &str) -> std::io::Result<Vec<u8>> {
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text).map_err(|why| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(".dockerignore: {why}"),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(e),
    };
    let keep = [clean(dockerfile), ".dockerignore".to_owned()];
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    // The engine's tar reader does not take GNU sparse entries.
    builder.sparse(false);
    add(&mut builder, dir, "", &ignore, &keep)?;
    builder.into_inner()
}

/// Adds the entries of `dir` (at `prefix` in the archive), recursively.
fn add(
    builder: &mut tar::Builder<Vec<u8>>,
    dir: &Path,
    prefix: &str,
    ignore: &Ignore,
    keep: &[String],
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    // The same context makes the same archive, whatever order the folder lists.
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            // The engine's paths are text; say which one is not.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a UTF-8 name", entry.path().display()),
            ));
        };
        let path = format!("{prefix}{name}");
        let kind = entry.file_type()?;
        let excluded = ignore.excludes(&path) && !keep.contains(&path);
        if kind.is_dir() {
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            if !excluded {
                builder.append_dir(&path, entry.path())?;
            }
            add(builder, &entry.path(), &format!("{path}/"), ignore, keep)?;
        } else if !excluded {
            builder.append_path_with_name(entry.path(), &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> Ignore {
        Ignore::parse(text).expect("valid patterns")
    }

    #[test]
    fn patterns_are_relative_to_the_root_and_stay_within_a_segment() {
        let i = ignore("*.log\n/target\nsecrets/**\n");
        assert!(i.excludes("debug.log"));
        // Unlike .gitignore, `*.log` does not reach into folders.
        assert!(!i.excludes("logs/debug.log"));
        assert!(i.excludes("target"));
        assert!(i.excludes("target/debug/openmono"));
        assert!(!i.excludes("src/target"));
        assert!(i.excludes("secrets/a/b"));
    }

    #[test]
    fn the_last_matching_line_wins_and_exceptions_bring_files_back() {
        let i = ignore("# comment\n\ndocs\n!docs/keep.md\n*.md\n!README.md\n");
        assert!(i.excludes("docs/other.md"));
        // `docs` excludes it, the exception after brings it back, `*.md` is root-only.
        assert!(!i.excludes("docs/keep.md"));
        assert!(i.excludes("NOTES.md"));
        assert!(!i.excludes("README.md"));
    }

    #[test]
    fn double_star_spans_folders() {
        let i = ignore("**/*.tmp\n");
        assert!(i.excludes("a.tmp"));
        assert!(i.excludes("a/b/c.tmp"));
        assert!(!i.excludes("a/b/c.txt"));
    }

    #[test]
    fn a_bad_pattern_names_its_line() {
        let error = Ignore::parse("ok\n[unclosed\n").expect_err("bad pattern");
        assert!(error.starts_with("line 2: `[unclosed`"), "{error}");
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/a/./b/../c/"), "a/c");
        assert_eq!(clean("./Dockerfile"), "Dockerfile");
    }
}
