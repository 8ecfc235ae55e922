//! Quick scans for what would make the KDL parser recurse too deep, before it sees the
//! text: children nested too deep, and too many `/-` in one node (kdl reads the entries
//! after a `/-` inside the slashdashed one, so `a /-/-/- b` and `a /-/-1 /-/-1 …` recurse
//! once for each). Either would overflow its stack on a hostile file. Playbooks nest two
//! or three levels and comment out an entry or two; the limits are far above that. The
//! [`Scanner`] that tells code from strings and comments also serves `fmt`.

/// How deep `{` may nest.
pub const MAX_DEPTH: usize = 64;

/// How many `/-` one node may hold. kdl's parser recurses on each and, past a few dozen,
/// takes time that grows much faster than their number.
pub const MAX_SLASHDASHES: usize = 16;

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

/// The byte offset of the first `/-` of code beyond the [`MAX_SLASHDASHES`]th in one
/// node: from its name to the newline (not one escaped by `\`) or `;` that ends it,
/// leaving out the nodes of its children blocks, which count on their own.
pub fn too_many_slashdashes(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut first = None;
    // Per depth, the `/-` of the node being read there.
    let mut counts = vec![0];
    // The last byte of code that was not a blank, for `\` line continuations.
    let mut last = 0;
    Scanner::default().walk(text, |at, byte, depth| {
        counts.resize(depth + 1, 0);
        match byte {
            b'\n' if last != b'\\' => counts[depth] = 0,
            b';' | b'{' => counts[depth] = 0,
            b'/' if bytes.get(at + 1) == Some(&b'-') => {
                counts[depth] += 1;
                if counts[depth] > MAX_SLASHDASHES && first.is_none() {
                    first = Some(at);
                }
            }
            _ => {}
        }
        if !matches!(byte, b' ' | b'\t' | b'\n') {
            last = byte;
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
    fn finds_the_first_slashdash_too_many_in_a_node() {
        let many = format!("a {} b", "/-".repeat(MAX_SLASHDASHES + 1));
        assert_eq!(too_many_slashdashes(&many), Some(2 + 2 * MAX_SLASHDASHES));
        let spread = format!("a {}b", "/-/-1 \\\n".repeat(MAX_SLASHDASHES));
        assert!(too_many_slashdashes(&spread).is_some());
        for text in [
            format!("a {} b", "/-".repeat(MAX_SLASHDASHES)),
            "/-a\n".repeat(200),
            "a /-1; b /-2\n".repeat(200),
            format!("a {{\n{}}}", "b /-1\n".repeat(200)),
            format!("a \"{}\"", "/-".repeat(200)),
            format!("// {}\na", "/-".repeat(200)),
        ] {
            assert_eq!(too_many_slashdashes(&text), None, "{text}");
        }
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
