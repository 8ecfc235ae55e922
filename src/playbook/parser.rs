//! Source text → KDL document. Valid playbooks take the [`FastParser`]; whatever it
//! declines, syntax errors included, goes to the kdl crate's KDL v2 parser, so the
//! document and the diagnostics are always what kdl would give. kdl's parser recurses:
//! text it would recurse too deep on is refused first (see [`super::nesting`]), here,
//! for every caller (`plan`, `validate`, `apply`, `fmt`, includes).

use kdl::KdlDocument;

use super::{DecodeError, decoder::syntax_error, fast_parser::FastParser, nesting};

/// Parses `text` as KDL v2. On failure, the syntax errors to report, their spans
/// shifted by `base` (where the text starts in its [`super::Source`]).
pub fn parse(text: &str, base: usize) -> Result<KdlDocument, Vec<DecodeError>> {
    if let Some(doc) = FastParser::parse(text) {
        return Ok(doc);
    }
    // The fast path never reads text nested too deep, nor any `/-`.
    if let Some(at) = nesting::too_deep(text) {
        return Err(vec![DecodeError::Syntax {
            help: Some("a playbook nests two or three levels; check for unclosed `{`".into()),
            label: "too deep".into(),
            message: format!(
                "children are nested more than {} levels deep",
                nesting::MAX_DEPTH
            ),
            span: (base + at, 1).into(),
        }]);
    }
    if let Some(at) = nesting::too_many_slashdashes(text) {
        return Err(vec![DecodeError::Syntax {
            help: Some(
                "`/-` comments out the one node, entry or children block after it; \
                 one is enough"
                    .into(),
            ),
            label: "one too many".into(),
            message: format!("more than {} `/-` in one node", nesting::MAX_SLASHDASHES),
            span: (base + at, 2).into(),
        }]);
    }
    KdlDocument::parse_v2(text).map_err(|err| {
        err.diagnostics
            .into_iter()
            .map(|d| syntax_error(text, base, d))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashdashes_and_nesting_that_would_overflow_kdl_are_refused() {
        // Each of these overflowed the stack of kdl's parser.
        for text in [
            format!("a {} b", "/-".repeat(5000)),
            format!("a {} b", "/-/-1 ".repeat(3000)),
            format!("a {{ /-b {} c }}", "/- ".repeat(3000)),
            "a { b ".repeat(3000),
        ] {
            let errors = parse(&text, 0).expect_err("refused");
            assert!(
                matches!(&errors[..], [DecodeError::Syntax { message, .. }]
                    if message.contains("more than")),
                "{errors:?}"
            );
        }
        // Up to the limit, kdl reads it.
        let text = format!("a {} b", "/-1 ".repeat(nesting::MAX_SLASHDASHES));
        assert!(parse(&text, 0).is_ok());
    }
}
