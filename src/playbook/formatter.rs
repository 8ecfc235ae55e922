//! `openmono fmt`: one layout for every playbook. Nesting is indented by four spaces,
//! trailing blanks go, runs of blank lines become one, and the file ends with one
//! newline. Everything else stays as written: comments, quoting, the order of nodes and
//! the text inside multi-line strings and block comments, which are copied untouched.

/// The text in the canonical layout.
pub fn format(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len());
    let mut scanner = Scanner::default();
    let mut blank_run = 0;
    for line in text.split('\n') {
        if scanner.in_literal() {
            // Inside a multi-line string or block comment: the text is content.
            out.push_str(line);
            out.push('\n');
            scanner.scan(line);
            continue;
        }
        let content = line.trim();
        if content.is_empty() {
            blank_run += 1;
            continue;
        }
        // One blank line between blocks, none at the start of the file or of a block.
        if blank_run > 0 && !out.is_empty() && !out.ends_with("{\n") {
            out.push('\n');
        }
        blank_run = 0;
        let closing = content.starts_with('}');
        let depth = scanner.depth.saturating_sub(usize::from(closing));
        out.push_str(&"    ".repeat(depth));
        out.push_str(content);
        out.push('\n');
        scanner.scan(content);
    }
    let trimmed = out.trim_end_matches('\n');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}\n")
    }
}

/// Where the scan is: how deep in `{`, and whether inside text that is not code.
#[derive(Default)]
struct Scanner {
    /// Nested `/* */` comments open.
    comment: usize,
    depth: usize,
    /// Inside a `"""` string, or a raw string closed by `"` and this many `#`.
    raw: Option<usize>,
    triple: bool,
}

impl Scanner {
    fn in_literal(&self) -> bool {
        self.comment > 0 || self.triple || self.raw.is_some()
    }

    /// Moves the state past one line of text.
    fn scan(&mut self, line: &str) {
        let bytes = line.as_bytes();
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
                b'/' if bytes.get(i + 1) == Some(&b'/') => return,
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
                    i += 1;
                }
                b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    i += 1;
                }
                _ => i += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_trims_and_keeps_comments() {
        let messy = "\n\n// a comment\nnetwork \"n\"   // why\n\n\n\ncontainer \"c\" {\n  image \"i\"   \n        network \"n\"\n      }\n\n";
        assert_eq!(
            format(messy),
            "// a comment\nnetwork \"n\"   // why\n\ncontainer \"c\" {\n    image \"i\"\n    network \"n\"\n}\n"
        );
    }

    #[test]
    fn multi_line_strings_and_block_comments_are_left_alone() {
        let text = "task \"t\" {\n  run \"c\" \"\"\"\n      echo {\n   keep\n      \"\"\"\n/* a\n   { b\n*/\n}\n";
        assert_eq!(
            format(text),
            "task \"t\" {\n    run \"c\" \"\"\"\n      echo {\n   keep\n      \"\"\"\n    /* a\n   { b\n*/\n}\n"
        );
    }

    #[test]
    fn braces_in_strings_do_not_indent() {
        let text = "task \"t\" {\nrun \"c\" \"awk '{print $1}' {\"\nafter \"x\"\n}\n";
        assert_eq!(
            format(text),
            "task \"t\" {\n    run \"c\" \"awk '{print $1}' {\"\n    after \"x\"\n}\n"
        );
    }

    #[test]
    fn formatting_twice_changes_nothing() {
        for text in [
            "a {\nb {\nc\n}\n}\n",
            "x \"\"\"\n  y\n  \"\"\"\n",
            "",
            "\n\n",
        ] {
            let once = format(text);
            assert_eq!(format(&once), once, "{text:?}");
        }
    }
}
