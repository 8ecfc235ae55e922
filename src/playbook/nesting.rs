//! A quick scan for children nested too deep, before the KDL parser (which recurses, and
//! would overflow its stack on a hostile file) sees the text. Playbooks nest two or three
//! levels; the limit is far above that.

/// How deep `{` may nest.
pub const MAX_DEPTH: usize = 64;

/// The byte offset of the first `{` that nests deeper than [`MAX_DEPTH`], skipping
/// strings and comments.
pub fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = find(bytes, i, b"\n").unwrap_or(bytes.len());
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            b'#' if bytes.get(i + 1).is_some_and(|b| *b == b'#' || *b == b'"') => {
                let hashes = bytes[i..].iter().take_while(|b| **b == b'#').count();
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                i = find(bytes, i + hashes + 1, &close)
                    .map_or(bytes.len(), |end| end + close.len());
            }
            b'"' => i = skip_string(bytes, i),
            b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(i);
                }
                i += 1;
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// Past a `/* … */` comment, which nests in KDL.
fn skip_block_comment(bytes: &[u8], start: usize) -> usize {
    let mut nesting = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                nesting += 1;
                i += 2;
            }
            (b'*', b'/') => {
                nesting -= 1;
                i += 2;
                if nesting == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Past a quoted string, single-line or `"""` multi-line, with its escapes.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let triple = bytes.get(start..start + 3) == Some(b"\"\"\"");
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' if !triple => return i + 1,
            b'"' if bytes.get(i..i + 3) == Some(b"\"\"\"") => return i + 3,
            _ => i += 1,
        }
    }
    bytes.len()
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
