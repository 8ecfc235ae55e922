//! A quick scan for children nested too deep, before the KDL parser (which recurses, and
//! would overflow its stack on a hostile file) sees the text. Playbooks nest two or three
//! levels; the limit is far above that. The [`Scanner`] that tells code from strings and
//! comments also serves `fmt`.

/// How deep `{` may nest.
pub const MAX_DEPTH: usize = 64;

/// The byte offset of the first `{` that nests deeper than [`MAX_DEPTH`], skipping
/// strings and comments.
pub fn too_deep(text: &str) -> Option<usize> {
    let mut first = None;
    Scanner::default().scan(text, |at, depth| {
        if depth > MAX_DEPTH && first.is_none() {
            first = Some(at);
        }
    });
    first
}

/// Where the scan is: how deep in `{`, and whether inside text that is not code.
#[derive(Default)]
pub(super) struct Scanner {
    /// Nested `/* */` comments open.
    comment: usize,
    pub(super) depth: usize,
    /// Inside a `"""` string, or a raw string closed by `"` and this many `#`.
    raw: Option<usize>,
    triple: bool,
}

impl Scanner {
    pub(super) fn in_literal(&self) -> bool {
        self.comment > 0 || self.triple || self.raw.is_some()
    }

    /// Moves the state past `text` (a line, or a whole file), calling `on_open` with
    /// the offset and the new depth at each `{` of code.
    pub(super) fn scan(&mut self, text: &str, mut on_open: impl FnMut(usize, usize)) {
        self.walk(text, |at, byte, depth| {
            if byte == b'{' {
                on_open(at, depth);
            }
        });
    }

    /// Moves the state past `text`, calling `on_code` with the offset, the byte and the
    /// depth after it for every byte of code: not inside a string or a comment.
    pub(super) fn walk(&mut self, text: &str, mut on_code: impl FnMut(usize, u8, usize)) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if self.comment > 0 {
                if bytes[i..].starts_with(b"*/") {
                    self.comment -= 1;
                    i += 2;
                } else if bytes[i..].starts_with(b"/*") {
                    self.comment += 1;
                    i += 2;
                } else {
                    i += 1;
                }
                continue;
            }
            if let Some(hashes) = self.raw {
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                if bytes[i..].starts_with(&close) {
                    self.raw = None;
                    i += close.len();
                } else {
                    i += 1;
                }
                continue;
            }
            if self.triple {
                if bytes[i] == b'\\' {
                    i += 2;
                } else if bytes[i..].starts_with(b"\"\"\"") {
                    self.triple = false;
                    i += 3;
                } else {
                    i += 1;
                }
                continue;
            }
            match bytes[i] {
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    i = bytes[i..]
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(bytes.len(), |n| i + n);
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    self.comment = 1;
                    i += 2;
                }
                b'#' if bytes.get(i + 1).is_some_and(|b| *b == b'#' || *b == b'"') => {
                    let hashes = bytes[i..].iter().take_while(|b| **b == b'#').count();
                    self.raw = Some(hashes);
                    i += hashes + 1;
                }
                b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                    self.triple = true;
                    i += 3;
                }
                b'"' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'{' => {
                    self.depth += 1;
                    on_code(i, b'{', self.depth);
                    i += 1;
                }
                b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    on_code(i, b'}', self.depth);
                    i += 1;
                }
                byte => {
                    on_code(i, byte, self.depth);
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_brace_too_deep() {
        let deep = "a { ".repeat(MAX_DEPTH + 1);
        assert_eq!(too_deep(&deep), Some(4 * MAX_DEPTH + 2));
        assert_eq!(too_deep(&"a { ".repeat(MAX_DEPTH)), None);
    }

    #[test]
    fn braces_in_strings_and_comments_do_not_count() {
        let many = "{".repeat(200);
        for text in [
            format!("run \"c\" \"{many}\""),
            format!("run \"c\" #\"{many}\"#"),
            format!("run \"c\" \"\"\"\n{many}\n\"\"\""),
            format!("// {many}\nnetwork \"n\""),
            format!("/* /* {many} */ */ network \"n\""),
            format!("run \"c\" \"\\\"{many}\""),
        ] {
            assert_eq!(too_deep(&text), None, "{text}");
        }
    }
}
