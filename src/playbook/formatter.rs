//! `openmono fmt`: one layout for every playbook. Nesting is indented by four spaces,
//! trailing blanks go, runs of blank lines become one, and the file ends with one
//! newline. Everything else stays as written: comments, quoting, the order of nodes and
//! the text inside multi-line strings and block comments, which are copied untouched.

use super::nesting::Scanner;

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
            scanner.scan(line, |_, _| {});
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
        scanner.scan(content, |_, _| {});
    }
    let trimmed = out.trim_end_matches('\n');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}\n")
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
