//! `openmono fmt`: one layout for every playbook. Nesting is indented by four spaces,
//! tokens on a line are one space apart (none around a property's `=`), trailing blanks
//! go, runs of blank lines become one, and the file ends with one newline. Everything else
//! stays as written: comments, quoting, the order of nodes and the text inside strings
//! and comments, which is copied untouched.

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
        out.push_str(&space_line(content, &mut scanner));
        out.push('\n');
    }
    let trimmed = out.trim_end_matches('\n');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}\n")
    }
}

/// `line` (trimmed, starting in code) with the spaces between its tokens made canonical,
/// moving `scanner` past it: one space between tokens and before a trailing comment, none
/// around the `=` of a property or before `;`, one on each side of a brace that has
/// something beside it on the line. Strings and comments are copied as they are.
fn space_line(line: &str, scanner: &mut Scanner) -> String {
    let bytes = line.as_bytes();
    let mut code = vec![false; bytes.len()];
    scanner.walk(line, |at, _, _| code[at] = true);
    let mut out = String::with_capacity(line.len());
    // The last byte written if it was code, and whether blanks of code came after it.
    let mut before: Option<u8> = None;
    let mut blanks = false;
    for (at, ch) in line.char_indices() {
        let next = code[at].then_some(bytes[at]);
        if matches!(next, Some(b' ' | b'\t')) {
            blanks = true;
            continue;
        }
        let glued = matches!(before, Some(b'=')) || matches!(next, Some(b'=' | b';'));
        let apart = matches!(next, Some(b'{' | b'}')) || matches!(before, Some(b'{' | b';'));
        let space = match (before, next) {
            _ if out.is_empty() || glued => false,
            (Some(b'{'), Some(b'}')) => false,
            _ => blanks || apart,
        };
        if space {
            out.push(' ');
        }
        out.push(ch);
        before = next;
        blanks = false;
    }
    out
}

/// Checks that formatting `text` keeps what it means and is done in one pass: when kdl
/// reads `text`, it reads the formatted text too, as the same names, types and values.
/// Panics otherwise; returns whether kdl read `text`. For the tests and the fuzz target.
#[doc(hidden)]
pub fn check(text: &str) -> bool {
    // kdl's parser recurses: what it must not read is for `parse` to refuse.
    let Ok(before) = super::parse(text, 0) else {
        return false;
    };
    let formatted = format(text);
    let after = kdl::KdlDocument::parse_v2(&formatted)
        .unwrap_or_else(|e| panic!("no longer KDL formatted: {e:?}\n{formatted}"));
    assert_eq!(meaning(&before), meaning(&after), "{formatted}");
    assert_eq!(format(&formatted), formatted, "not formatted in one pass");
    true
}

/// What a document says, without its layout: names, types and values, nested.
fn meaning(document: &kdl::KdlDocument) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for node in document.nodes() {
        let ty = node.ty().map(kdl::KdlIdentifier::value);
        let _ = write!(out, "{ty:?} {:?} [", node.name().value());
        for entry in node.entries() {
            let name = entry.name().map(kdl::KdlIdentifier::value);
            let ty = entry.ty().map(kdl::KdlIdentifier::value);
            let _ = write!(out, "{name:?} {ty:?} {:?}, ", entry.value());
        }
        out.push(']');
        if let Some(children) = node.children() {
            let _ = write!(out, "{{{}}}", meaning(children));
        }
        out.push(';');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_trims_and_keeps_comments() {
        let messy = "\n\n// a comment\nnetwork \"n\"   // why\n\n\n\ncontainer \"c\" {\n  image \"i\"   \n        network \"n\"\n      }\n\n";
        assert_eq!(
            format(messy),
            "// a comment\nnetwork \"n\" // why\n\ncontainer \"c\" {\n    image \"i\"\n    network \"n\"\n}\n"
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
    fn spaces_between_tokens_are_made_canonical() {
        for (messy, canonical) in [
            (
                "network   \"n\"\tegress = #true",
                "network \"n\" egress=#true",
            ),
            ("container \"c\"{", "container \"c\" {"),
            ("a {b;c }", "a { b; c }"),
            ("a { }", "a {}"),
            ("a {}", "a {}"),
            ("a ; b", "a; b"),
            ("image \"i\"     // why  two", "image \"i\" // why  two"),
            (
                "run \"c\"   \"echo  a   =  b\"",
                "run \"c\" \"echo  a   =  b\"",
            ),
            (
                "run \"c\" #\"x  {  \"y\"  }\"#   limit=1",
                "run \"c\" #\"x  {  \"y\"  }\"# limit=1",
            ),
            ("a /*  x  */   b", "a /*  x  */ b"),
            ("/-  a   b", "/- a b"),
            ("a \\", "a \\"),
        ] {
            assert_eq!(format(messy), format!("{canonical}\n"), "{messy:?}");
        }
    }

    #[test]
    fn a_line_that_opens_a_multi_line_string_is_spaced_up_to_it() {
        let text = "run   \"c\"   \"\"\"\n  a   b\n  \"\"\"\n";
        assert_eq!(format(text), "run \"c\" \"\"\"\n  a   b\n  \"\"\"\n");
    }

    #[test]
    fn every_playbook_and_example_means_the_same_formatted() {
        let mut compared = 0;
        for (name, text) in super::super::fast_parser::tests::corpus() {
            eprintln!("{name}");
            compared += usize::from(check(&text));
        }
        assert!(compared > 50, "only {compared} texts compared");
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
