//! A fast path in front of the kdl crate's KDL v2 parser. Text in; out comes either the
//! very `KdlDocument` that `KdlDocument::parse_v2` builds for it (the same nodes,
//! entries, values, identifiers, formatting and spans) or nothing, and then the caller
//! asks kdl. kdl's parser is built for error recovery (winnow combinators that try,
//! backtrack and allocate at every character) and took over 90% of parse → plan.
//!
//! It reads the KDL that playbooks are written in: bare, quoted and multi-line strings,
//! single-line raw strings, decimal integers, `#true`, `#false` and `#null`, `//` and
//! `/* */` comments, `;`, and children. It declines everything else: any syntax error,
//! `/-`, type annotations, floats and other number formats, `\` line continuations and
//! whitespace escapes, non-ASCII identifiers and whitespace, newlines other than `\n`,
//! multi-line raw strings. So diagnostics are always kdl's own.
//!
//! Where kdl's spans and formatting are surprising, this copies them: a node's span
//! runs on over the whitespace after it; the whitespace after a children block is in
//! no format field; the first node takes its document's leading whitespace. The tests
//! below and the fuzz target compare the two parsers' output, spans included.

use kdl::{
    KdlDocument, KdlDocumentFormat, KdlEntry, KdlEntryFormat, KdlIdentifier, KdlNode,
    KdlNodeFormat, KdlValue,
};
use miette::SourceSpan;

/// The fast path gives up on the text: kdl's parser must read it.
struct Declined;

type Parsed<T> = Result<T, Declined>;

/// A recursive-descent parser over the bytes of one text. `parse_*` methods read one
/// grammar rule at the cursor and leave the cursor after it, or decline;
/// `skip_*` methods move over whitespace and comments.
pub struct FastParser<'t> {
    /// A node without name, entries or formatting, copied for every node:
    /// `KdlNode::new` would allocate a trailing newline that `set_format` throws away.
    blank: KdlNode,
    /// The entries of the node being read. They move into a `Vec` of their exact size
    /// once all are read: one that grows starts with room for four, and most nodes have
    /// one or two, so spare room would be most of the document's memory.
    entries: Vec<KdlEntry>,
    /// The nodes being read, per depth, likewise.
    nodes: Vec<Vec<KdlNode>>,
    /// Byte offset of the next unread character.
    pos: usize,
    text: &'t str,
}

impl<'t> FastParser<'t> {
    /// The document kdl would build for `text`, or `None` if the fast path declines.
    pub fn parse(text: &'t str) -> Option<KdlDocument> {
        let mut blank = KdlNode::new(KdlIdentifier::from(String::new()));
        blank.set_format(KdlNodeFormat::default());
        let mut parser = FastParser {
            blank,
            entries: Vec::new(),
            nodes: Vec::new(),
            pos: 0,
            text,
        };
        let document = parser.parse_nodes(0).ok()?;
        (parser.pos == text.len()).then_some(document)
    }

    fn rest(&self) -> &'t [u8] {
        &self.text.as_bytes()[self.pos..]
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn since(&self, start: usize) -> &'t str {
        &self.text[start..self.pos]
    }

    fn span(&self, start: usize) -> SourceSpan {
        (start, self.pos - start).into()
    }

    /// At a `}` or at the end: no node starts here.
    fn at_block_end(&self) -> bool {
        matches!(self.peek(), None | Some(b'}'))
    }

    /// A document or a children block, up to (not including) its `}` or the end:
    /// line space, nodes separated by terminators, line space.
    fn parse_nodes(&mut self, depth: usize) -> Parsed<KdlDocument> {
        let leading_start = self.pos;
        self.skip_line_space()?;
        let leading = self.since(leading_start);
        let start = self.pos;
        if self.nodes.len() <= depth {
            self.nodes.resize_with(depth + 1, Vec::new);
        }
        let mut scratch = std::mem::take(&mut self.nodes[depth]);
        if !self.at_block_end() {
            scratch.push(self.parse_node(String::new(), depth)?);
            loop {
                let separator = self.pos;
                if !self.skip_terminator()? {
                    break;
                }
                let node_start = self.pos;
                self.skip_line_space()?;
                if self.at_block_end() {
                    // kdl takes back the separator when no node follows it.
                    self.pos = separator;
                    break;
                }
                let leading = self.since(node_start).to_owned();
                scratch.push(self.parse_node(leading, depth)?);
            }
        }
        let mut nodes = Vec::with_capacity(scratch.len());
        nodes.append(&mut scratch);
        self.nodes[depth] = scratch;
        let span = self.span(start);
        self.skip_terminator()?;
        let trailing_start = self.pos;
        self.skip_line_space()?;
        let trailing = self.since(trailing_start).to_owned();
        // The first node, if any, holds the whitespace before it, not the document.
        let leading = match nodes.first_mut().and_then(KdlNode::format_mut) {
            Some(format) => {
                leading.clone_into(&mut format.leading);
                String::new()
            }
            None => leading.to_owned(),
        };
        let mut document = KdlDocument::new();
        *document.nodes_mut() = nodes;
        document.set_format(KdlDocumentFormat { leading, trailing });
        document.set_span(span);
        Ok(document)
    }

    /// One node, from its name to the whitespace after it; its terminator is left for
    /// the caller, as kdl only peeks at it.
    fn parse_node(&mut self, leading: String, depth: usize) -> Parsed<KdlNode> {
        let start = self.pos;
        let name = self.parse_identifier()?;
        self.check_value_end(false)?;
        let mut node = self.blank.clone();
        node.set_name(name);
        loop {
            let space = self.pos;
            if !self.skip_node_space()? || !self.entry_follows() {
                self.pos = space;
                break;
            }
            let entry = self.parse_entry(space)?;
            self.entries.push(entry);
        }
        let entries = node.entries_mut();
        entries.reserve_exact(self.entries.len());
        entries.append(&mut self.entries);
        let space = self.pos;
        self.skip_node_space()?;
        let (before_children, before_terminator) = if self.peek() == Some(b'{') {
            let before_children = self.since(space).to_owned();
            if depth >= super::nesting::MAX_DEPTH {
                return Err(Declined);
            }
            self.pos += 1;
            node.set_children(self.parse_nodes(depth + 1)?);
            if self.peek() != Some(b'}') {
                return Err(Declined);
            }
            self.pos += 1;
            (before_children, String::new())
        } else {
            (String::new(), self.since(space).to_owned())
        };
        let at = self.pos;
        self.skip_terminator()?;
        let terminator = self.since(at).to_owned();
        self.pos = at;
        // Part of the node's span, though no format field records it.
        self.skip_node_space()?;
        node.set_format(KdlNodeFormat {
            before_children,
            before_terminator,
            leading,
            terminator,
            ..KdlNodeFormat::default()
        });
        node.set_span(self.span(start));
        Ok(node)
    }

    /// After node space: whether an entry starts here rather than children or the end
    /// of the node. What cannot start an entry is declined by `parse_entry`.
    fn entry_follows(&self) -> bool {
        !matches!(
            self.rest(),
            [] | [b'\n' | b';' | b'{' | b'}', ..] | [b'/', b'/', ..]
        )
    }

    /// An argument or a property; `leading_start` is where the space before it began.
    fn parse_entry(&mut self, leading_start: usize) -> Parsed<KdlEntry> {
        let start = self.pos;
        let Some(string) = self.parse_string()? else {
            let value = self.parse_number_or_keyword()?;
            return self.finish_entry(value, leading_start, None, start);
        };
        self.check_value_end(true)?;
        let key_end = self.pos;
        self.skip_node_space()?;
        if self.peek() != Some(b'=') {
            self.pos = key_end;
            return self.finish_entry(KdlValue::String(string), leading_start, None, start);
        }
        let mut key = KdlIdentifier::from(string);
        key.set_repr(&self.text[start..key_end]);
        key.set_span(SourceSpan::from(start..key_end));
        let after_key = self.text[key_end..self.pos].to_owned();
        self.pos += 1;
        let after_eq = self.pos;
        self.skip_node_space()?;
        let after_eq = self.since(after_eq).to_owned();
        let value_start = self.pos;
        let value = match self.parse_string()? {
            Some(string) => KdlValue::String(string),
            None => self.parse_number_or_keyword()?,
        };
        let key = (key, after_key, after_eq, value_start);
        self.finish_entry(value, leading_start, Some(key), start)
    }

    /// The entry whose value ends at the cursor, with its key, the space around the
    /// `=` and where the value starts, if it is a property.
    fn finish_entry(
        &self,
        value: KdlValue,
        leading_start: usize,
        key: Option<(KdlIdentifier, String, String, usize)>,
        start: usize,
    ) -> Parsed<KdlEntry> {
        self.check_value_end(false)?;
        let (name, after_key, after_eq, value_start) = match key {
            Some((name, after_key, after_eq, value_start)) => {
                (Some(name), after_key, after_eq, value_start)
            }
            None => (None, String::new(), String::new(), start),
        };
        let mut entry = KdlEntry::new(value);
        if name.is_some() {
            entry.set_name(name);
        }
        entry.set_format(KdlEntryFormat {
            after_eq,
            after_key,
            leading: self.text[leading_start..start].to_owned(),
            value_repr: self.since(value_start).to_owned(),
            ..KdlEntryFormat::default()
        });
        entry.set_span(self.span(start));
        Ok(entry)
    }

    /// A node name: any string, with its source text as `repr`.
    fn parse_identifier(&mut self) -> Parsed<KdlIdentifier> {
        let start = self.pos;
        let mut name = KdlIdentifier::from(self.parse_string()?.ok_or(Declined)?);
        name.set_repr(self.since(start));
        name.set_span(self.span(start));
        Ok(name)
    }

    /// kdl wants a value (or a name) followed by space, a terminator, a brace, or `=`
    /// where a property's key may stand.
    fn check_value_end(&self, key: bool) -> Parsed<()> {
        match self.rest() {
            [] | [b' ' | b'\t' | b'\n' | b';' | b'{' | b'}', ..] | [b'/', b'/' | b'*', ..] => {
                Ok(())
            }
            [b'=', ..] if key => Ok(()),
            _ => Err(Declined),
        }
    }

    /// A string if one starts here (`None` if not): bare, quoted, multi-line or raw.
    fn parse_string(&mut self) -> Parsed<Option<String>> {
        match self.rest() {
            [b'"', b'"', b'"', ..] => self.parse_multi_line().map(Some),
            [b'"', ..] => self.parse_quoted().map(Some),
            [b'#', b'#' | b'"', ..] => self.parse_raw().map(Some),
            [b, ..] if is_identifier_start(*b) => self.parse_bare().map(Some),
            _ => Ok(None),
        }
    }

    /// `-?[0-9]+` that fits in an `i128`, or `#true`, `#false`, `#null`.
    fn parse_number_or_keyword(&mut self) -> Parsed<KdlValue> {
        let rest = self.rest();
        for (word, value) in [
            (&b"#true"[..], KdlValue::Bool(true)),
            (b"#false", KdlValue::Bool(false)),
            (b"#null", KdlValue::Null),
        ] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(value);
            }
        }
        let negative = rest.first() == Some(&b'-');
        let digits = &rest[usize::from(negative)..];
        let count = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        if count == 0 {
            return Err(Declined);
        }
        let mut number: i128 = 0;
        for digit in &digits[..count] {
            number = number
                .checked_mul(10)
                .and_then(|n| n.checked_add(i128::from(digit - b'0')))
                .ok_or(Declined)?;
        }
        self.pos += usize::from(negative) + count;
        Ok(KdlValue::Integer(if negative { -number } else { number }))
    }

    /// An identifier string: ASCII only, not starting with a digit, a sign or a dot,
    /// and not a keyword written without its `#`.
    fn parse_bare(&mut self) -> Parsed<String> {
        let start = self.pos;
        self.pos += self
            .rest()
            .iter()
            .take_while(|b| is_identifier_byte(**b))
            .count();
        if self.peek().is_some_and(|b| !b.is_ascii()) {
            return Err(Declined);
        }
        let word = self.since(start);
        if matches!(word, "true" | "false" | "null" | "inf" | "nan") {
            return Err(Declined);
        }
        Ok(word.to_owned())
    }

    /// `"…"` on one line.
    fn parse_quoted(&mut self) -> Parsed<String> {
        self.pos += 1;
        let mut value = String::new();
        self.parse_characters(b'"', &mut value)?;
        self.pos += 1;
        Ok(value)
    }

    /// `"""`, a newline, lines, and `"""` alone on its line. Every line loses the
    /// whitespace before the closing quotes (a line of whitespace becomes empty), and
    /// the last newline goes.
    fn parse_multi_line(&mut self) -> Parsed<String> {
        let bytes = self.text.as_bytes();
        if bytes.get(self.pos + 3) != Some(&b'\n') {
            return Err(Declined);
        }
        let body = self.pos + 4;
        // The first line that is spaces and `"""` closes the string.
        let mut line = body;
        let (close, indent_end) = loop {
            let indent = line
                + bytes[line..]
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t'))
                    .count();
            if bytes[indent..].starts_with(b"\"\"\"") {
                break (line, indent);
            }
            line += bytes[line..]
                .iter()
                .position(|b| *b == b'\n')
                .ok_or(Declined)?
                + 1;
        };
        let prefix = &self.text[close..indent_end];
        let mut value = String::new();
        let mut line = body;
        while line < close {
            let end = line
                + bytes[line..close]
                    .iter()
                    .position(|b| *b == b'\n')
                    .ok_or(Declined)?;
            let text = &self.text[line..end];
            if text.chars().all(is_unicode_space) {
                value.push('\n');
            } else if text.starts_with(prefix) && !text.contains("\"\"\"") {
                self.pos = line + prefix.len();
                self.parse_characters(b'\n', &mut value)?;
                value.push('\n');
            } else {
                return Err(Declined);
            }
            line = end + 1;
        }
        value.pop();
        self.pos = indent_end + 3;
        Ok(value)
    }

    /// `#"…"#` with any number of `#`, on one line. Not one whose text starts with `"`
    /// (kdl reads `#"""` as the start of a multi-line raw string).
    fn parse_raw(&mut self) -> Parsed<String> {
        let bytes = self.text.as_bytes();
        let hashes = self.rest().iter().take_while(|b| **b == b'#').count();
        let open = self.pos + hashes;
        if bytes.get(open) != Some(&b'"') || bytes.get(open + 1) == Some(&b'"') {
            return Err(Declined);
        }
        let body = open + 1;
        let mut at = body;
        loop {
            match bytes.get(at) {
                Some(b'"')
                    if bytes[at + 1..].len() >= hashes
                        && bytes[at + 1..at + 1 + hashes].iter().all(|b| *b == b'#') =>
                {
                    break;
                }
                Some(b'\t' | b' '..=b'~') => at += 1,
                Some(b) if !b.is_ascii() => at += allowed_char(&self.text[at..])?,
                _ => return Err(Declined),
            }
        }
        self.pos = at + 1 + hashes;
        Ok(self.text[body..at].to_owned())
    }

    /// The characters of a quoted string up to the first `stop` byte, which stays
    /// unread; escapes are resolved.
    fn parse_characters(&mut self, stop: u8, value: &mut String) -> Parsed<()> {
        let mut run = self.pos;
        loop {
            match self.peek() {
                Some(b) if b == stop => break,
                Some(b'\\') => {
                    value.push_str(self.since(run));
                    let c = self.parse_escape()?;
                    value.push(c);
                    run = self.pos;
                }
                Some(b'\t' | b' '..=b'~') => self.pos += 1,
                Some(b) if !b.is_ascii() => self.pos += allowed_char(&self.text[self.pos..])?,
                _ => return Err(Declined),
            }
        }
        value.push_str(self.since(run));
        Ok(())
    }

    /// `\` and one of `"\bfnrts`, or `\u{…}` with one to six hex digits.
    fn parse_escape(&mut self) -> Parsed<char> {
        let escaped = match self.rest() {
            [_, b'"', ..] => '"',
            [_, b'\\', ..] => '\\',
            [_, b'b', ..] => '\u{8}',
            [_, b'f', ..] => '\u{c}',
            [_, b'n', ..] => '\n',
            [_, b'r', ..] => '\r',
            [_, b't', ..] => '\t',
            [_, b's', ..] => ' ',
            [_, b'u', b'{', rest @ ..] => {
                let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                if !(1..=6).contains(&digits) || rest.get(digits) != Some(&b'}') {
                    return Err(Declined);
                }
                let hex = &self.text[self.pos + 3..self.pos + 3 + digits];
                let c = u32::from_str_radix(hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or(Declined)?;
                self.pos += 4 + digits;
                return Ok(c);
            }
            _ => return Err(Declined),
        };
        self.pos += 2;
        Ok(escaped)
    }

    /// Spaces, tabs and `/* */` comments; whether there were any.
    fn skip_node_space(&mut self) -> Parsed<bool> {
        let start = self.pos;
        loop {
            match self.rest() {
                [b' ' | b'\t', ..] => self.pos += 1,
                [b'/', b'*', ..] => self.skip_block_comment()?,
                // A line continuation.
                [b'\\', ..] => return Err(Declined),
                _ => return Ok(self.pos > start),
            }
        }
    }

    /// Node space, newlines and `//` comments.
    fn skip_line_space(&mut self) -> Parsed<()> {
        loop {
            match self.rest() {
                [b' ' | b'\t' | b'\n', ..] => self.pos += 1,
                [b'/', b'*', ..] => self.skip_block_comment()?,
                [b'/', b'/', ..] => self.skip_line_comment()?,
                [b'/', b'-', ..] | [b'\\', ..] => return Err(Declined),
                _ => return Ok(()),
            }
        }
    }

    /// A node terminator (`;`, a newline, a `//` comment); whether there was one.
    fn skip_terminator(&mut self) -> Parsed<bool> {
        match self.rest() {
            [b';' | b'\n', ..] => self.pos += 1,
            [b'/', b'/', ..] => self.skip_line_comment()?,
            // Newlines the fast path does not handle.
            [b'\r' | 0x0b | 0x0c, ..] => return Err(Declined),
            [b, ..] if !b.is_ascii() => return Err(Declined),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `//` up to and including the newline, or to the end.
    fn skip_line_comment(&mut self) -> Parsed<()> {
        self.pos += 2;
        loop {
            match self.rest() {
                [] => return Ok(()),
                [b'\n', ..] => {
                    self.pos += 1;
                    return Ok(());
                }
                // Other newlines: `\r`, VT, FF, NEL, LS and PS end a comment too.
                [b'\r' | 0x0b | 0x0c, ..] | [0xc2, 0x85, ..] | [0xe2, 0x80, 0xa8 | 0xa9, ..] => {
                    return Err(Declined);
                }
                _ => self.pos += 1,
            }
        }
    }

    /// `/* */`, nested.
    fn skip_block_comment(&mut self) -> Parsed<()> {
        self.pos += 2;
        let mut depth = 1;
        loop {
            match self.rest() {
                [] => return Err(Declined),
                [b'*', b'/', ..] => {
                    self.pos += 2;
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                [b'/', b'*', ..] => {
                    self.pos += 2;
                    depth += 1;
                }
                _ => self.pos += 1,
            }
        }
    }
}

/// The fast path against kdl's parser on `text`: either the fast path declines, or kdl
/// reads the text too, into the same document, every span and bit of formatting
/// included (`Debug` shows them all), and the text does not nest too deep nor hold too many `/-`
/// (`parse` skips those checks for it). Panics otherwise; returns whether the fast path read the
/// text. For the tests and the fuzz target.
#[doc(hidden)]
pub fn check_against_kdl(text: &str) -> bool {
    let Some(fast) = FastParser::parse(text) else {
        return false;
    };
    let kdl = KdlDocument::parse_v2(text)
        .unwrap_or_else(|e| panic!("kdl rejects what the fast path read: {text:?}: {e:?}"));
    assert_eq!(format!("{fast:#?}"), format!("{kdl:#?}"), "{text:?}");
    assert_eq!(fast.to_string(), kdl.to_string(), "{text:?}");
    assert_eq!(super::nesting::too_deep(text), None, "{text:?}");
    assert_eq!(super::nesting::too_many_slashdashes(text), None, "{text:?}");
    true
}

/// A byte of an ASCII identifier: printable, and none of `\/(){}[];"#=`.
fn is_identifier_byte(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$'..=b'\'' | b'*'..=b'.' | b'0'..=b':' | b'<' | b'>'..=b'Z' | b'^'..=b'z' | b'|' | b'~'
    )
}

/// A byte that starts an identifier string the fast path reads (a sign or a dot could
/// start a number, and kdl has special rules for them).
fn is_identifier_start(b: u8) -> bool {
    is_identifier_byte(b) && !b.is_ascii_digit() && !matches!(b, b'-' | b'+' | b'.')
}

/// KDL's `unicode-space`.
fn is_unicode_space(c: char) -> bool {
    matches!(
        c,
        '\t' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// The byte length of the non-ASCII character at the start of `text`, unless it is
/// a newline or a code point KDL does not allow in text.
fn allowed_char(text: &str) -> Parsed<usize> {
    let c = text.chars().next().ok_or(Declined)?;
    if matches!(
        c,
        '\u{85}'
            | '\u{200e}'..='\u{200f}'
            | '\u{2028}'..='\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    ) {
        Err(Declined)
    } else {
        Ok(c.len_utf8())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    #[track_caller]
    fn agrees(text: &str) -> bool {
        check_against_kdl(text)
    }

    #[track_caller]
    fn handled(text: &str) {
        assert!(agrees(text), "the fast path declined {text:?}");
    }

    #[track_caller]
    fn declined(text: &str) {
        assert!(
            FastParser::parse(text).is_none(),
            "the fast path read {text:?}"
        );
    }

    #[test]
    fn reads_what_playbooks_are_made_of() {
        for text in [
            "",
            "\n\n",
            "a",
            "a\n",
            "a;b;c",
            "a ;b\n\n  c  \n\n",
            "network \"n\" egress=#true\n",
            "a 1 -2 0 007 -0 170141183460469231731687303715884105727 #null #false",
            "a key=value k = \"v\" \"quoted key\"=1 #\"raw key\"#=#true",
            "a bare b-c d.e f+g h1 _ ~ ! @ $ % ^ & * ' ? < > , : |",
            "a \"esc \\\" \\\\ \\b \\f \\n \\r \\t \\s \\u{1} \\u{1F600} \\u{10FFFF} é → 😀\"",
            "a #\"raw \\n \"quoted\" \"#  ##\"x\"#y\"##",
            "container \"c\" {\n    image \"i\"\n    limits memory=\"1GiB\" pids=256\n}\n",
            "a {\n}\nb {}\nc { }\nd{x}\ne \"v\"{ y; z }\n",
            "a { b }",
            "a { b \"x\" }  \n",
            "a {\n    b {\n        c 1\n    }\n}",
            "a {}// c\nb {} // d\n",
            "a { b; }; c",
            "// leading\n\n/* block */ a /* in */ 1 /* x\n y */ 2 // trailing\n\n// end",
            "/* /* nested */ */ a /**/ b /*/ x */ c",
            "a // comment at the end",
            "a \"\"\"\n    one\n      two\n\n    three\n    \"\"\"\n",
            "a \"\"\"\n\"\"\"",
            "a \"\"\"\n  \"\"\" b",
            "a \"\"\"\n\t x \"\" y\n   \n\t \"\"\"",
            "a \"\"\"\n    \\t\\\"\n    \"\"\" {\n}",
            "\"quoted node\" 1\n#\"raw node\"# 2\n\"\"\"\nmulti\n\"\"\" 3",
            "a\t1\t\tb=2 ;",
            "a \"é\"",
        ] {
            handled(text);
        }
    }

    #[test]
    fn declines_errors_and_the_rarer_syntax() {
        for text in [
            // Errors: kdl must report them.
            "a \"unclosed",
            "a {",
            "a }",
            "}",
            "a true",
            "a b=",
            "a 1x",
            "a \"x\"\"y\"",
            "a=1",
            "a r\"v1 raw\"",
            "a #maybe",
            "a \"\"\"x\"\"\"",
            "a \"\"\"\n  x\n y\n  \"\"\"",
            "a \"\\q\"",
            "a \"\\u{}\" \"\\u{1234567}\" \"\\u{D800}\"",
            "a /* never closed",
            "a \"\u{1}\"",
            "5 a",
            // Valid, but left to kdl.
            "\u{feff}a",
            "/-a\nb",
            "a /-1 2",
            "(t)a",
            "a (t)1",
            "a 1.5 1e3 0x10 0o7 0b1 1_000 +1 #inf #-inf #nan",
            "a -b .c +d",
            "a \\\n  b",
            "a \"x\\  y\"",
            "a #\"\"\"\nraw\n\"\"\"#",
            "a #\"\"#",
            "a\r\nb",
            "a\u{a0}b",
            "é",
            "a\u{2028}b",
            "a \"\"\"\r\n  x\r\n  \"\"\"",
            "a 170141183460469231731687303715884105728",
            "a \"\u{7f}\"",
        ] {
            declined(text);
            // kdl may still read the valid ones; it must be a decline, not a mistake.
            agrees(text);
        }
    }

    #[test]
    fn identifier_bytes_are_the_printable_ones_kdl_allows() {
        for b in 0..=u8::MAX {
            let expected = b.is_ascii_graphic() && !b"\\/(){}[];\"#=".contains(&b);
            assert_eq!(is_identifier_byte(b), expected, "{b:#x}");
        }
    }

    #[test]
    fn declines_children_nested_too_deep() {
        let depth = super::super::nesting::MAX_DEPTH;
        handled(&format!("{}{}", "a { ".repeat(depth), "} ".repeat(depth)));
        declined(&format!(
            "{}{}",
            "a { ".repeat(depth + 1),
            "} ".repeat(depth + 1)
        ));
    }

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == extension))
            .collect();
        files.sort();
        files
    }

    /// The `kdl` code blocks of a Markdown text.
    fn kdl_blocks(text: &str) -> Vec<String> {
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            match &mut current {
                None if line.trim_start() == "```kdl" => current = Some(String::new()),
                Some(block) if line.trim_start() == "```" => {
                    blocks.push(std::mem::take(block));
                    current = None;
                }
                Some(block) => {
                    block.push_str(line);
                    block.push('\n');
                }
                None => {}
            }
        }
        blocks
    }

    /// The texts in the repository: playbooks, the docs' examples, the bad playbooks.
    pub(in crate::playbook) fn corpus() -> Vec<(String, String)> {
        let mut texts = Vec::new();
        for dir in ["playbooks", "tests/bad"] {
            for path in files(&root().join(dir), "kdl") {
                let text = std::fs::read_to_string(&path).expect("read");
                texts.push((path.display().to_string(), text));
            }
        }
        let mut markdown = files(&root().join("book/src"), "md");
        markdown.extend([root().join("README.md"), root().join("grammar/rules.md")]);
        for path in markdown {
            let text = std::fs::read_to_string(&path).expect("read");
            for (i, block) in kdl_blocks(&text).into_iter().enumerate() {
                texts.push((format!("{} block {i}", path.display()), block));
            }
        }
        texts
    }

    #[test]
    fn every_playbook_doc_example_and_bad_playbook_agrees() {
        let corpus = corpus();
        let mut read = 0;
        for (name, text) in &corpus {
            let handled = agrees(text);
            if name.contains("playbooks/") {
                assert!(handled, "the fast path declined {name}");
            }
            read += usize::from(handled);
        }
        eprintln!("the fast path read {read} of {} texts", corpus.len());
        // Most of them are plain playbook KDL.
        assert!(
            corpus.len() > 50 && read * 3 > corpus.len() * 2,
            "{read} of {}",
            corpus.len()
        );
    }

    /// `OPENMONO_CORPUS=fuzz/corpus/parser cargo test --lib -- --ignored corpus`: a fuzz
    /// corpus replayed through the check, with how much of it the fast path read.
    #[test]
    #[ignore = "needs a fuzz corpus"]
    fn a_fuzz_corpus_agrees() {
        let dir = std::env::var("OPENMONO_CORPUS").expect("OPENMONO_CORPUS names a folder");
        let (mut texts, mut read) = (0, 0);
        for entry in std::fs::read_dir(dir).expect("folder") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            if let Ok(text) = std::str::from_utf8(&bytes) {
                texts += 1;
                read += usize::from(agrees(text));
            }
        }
        eprintln!("the fast path read {read} of {texts} texts");
    }

    /// A playbook of about `n` resources, shaped like the benchmark's.
    fn generated(n: usize) -> String {
        use std::fmt::Write;
        let mut text = String::from("playbook \"gen\"\nvar \"cmd\" default=\"make test\"\n");
        for g in 0..n.div_ceil(10) {
            writeln!(text, "network \"net{g}\" // group {g}").unwrap();
            for c in 0..3 {
                write!(
                    text,
                    "container \"c{g}-{c}\" {{\n    image \"openmono/agent:latest\"\n    network \"net{g}\"\n    env \"GROUP\" \"{g}\"\n    limits memory=\"1GiB\" pids=256\n}}\n"
                )
                .unwrap();
            }
            for t in 0..6_usize {
                write!(
                    text,
                    "\ntask \"t{g}-{t}\" after=\"t{g}-{}\" {{\n    run \"c{g}-{}\" \"\"\"\n        {{{{ var.cmd }}}} {t}\n        \"\"\"\n}}\n",
                    t.saturating_sub(1),
                    t % 3
                )
                .unwrap();
            }
        }
        text
    }

    #[test]
    fn generated_playbooks_agree() {
        for n in [1, 10, 100, 1000] {
            handled(&generated(n));
        }
    }

    /// A small deterministic generator (xorshift), so a failure can be replayed.
    struct Random(u64);

    impl Random {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % n as u64).expect("fits")
        }
    }

    /// Pieces of KDL, valid and not, for the random texts below.
    const PIECES: &[&str] = &[
        "a",
        "node",
        "k",
        "=",
        " = ",
        " ",
        "  ",
        "\t",
        "\n",
        "\n    ",
        ";",
        "{",
        "}",
        "{ ",
        " }",
        "\"s\"",
        "\"\"",
        "\"\\n\"",
        "\"\\u{41}\"",
        "\"\\\"\"",
        "\"é\"",
        "1",
        "-7",
        "0",
        "12",
        "1.5",
        "#true",
        "#false",
        "#null",
        "#inf",
        "#\"r\"#",
        "##\"r\"#\"##",
        "//",
        "// c\n",
        "/*",
        "*/",
        "/* c */",
        "/-",
        "(t)",
        "\\",
        "\r",
        "\u{a0}",
        "\"\"\"\n",
        "\"\"\"",
        "\n  \"\"\"",
        "x\n",
        "é",
        "#",
        "-",
        ".",
        "+",
        "true",
        "\u{feff}",
        "\u{2028}",
    ];

    #[test]
    fn random_texts_agree() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let mut read = 0;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..random.below(24) {
                text.push_str(PIECES[random.below(PIECES.len())]);
            }
            read += usize::from(agrees(&text));
        }
        eprintln!("random: {read} read");
        assert!(read > 1_000, "only {read} read");
    }

    #[test]
    fn mutated_corpus_texts_agree() {
        let texts: Vec<String> = corpus()
            .into_iter()
            .map(|(_, t)| t)
            .chain([generated(20)])
            .collect();
        let mut random = Random(0x2545_f491_4f6c_dd1d);
        let mut read = 0;
        for _ in 0..3_000 {
            let mut text = texts[random.below(texts.len())].clone();
            for _ in 0..=random.below(3) {
                let mut at = random.below(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + random.below(4)).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                let piece = if random.below(2) == 0 {
                    ""
                } else {
                    PIECES[random.below(PIECES.len())]
                };
                text.replace_range(at..end, piece);
            }
            read += usize::from(agrees(&text));
        }
        eprintln!("mutated: {read} read");
    }
}
