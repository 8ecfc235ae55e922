//! Source text → KDL document. Valid playbooks take the [`FastParser`]; whatever it
//! declines, syntax errors included, goes to the kdl crate's KDL v2 parser, so the
//! document and the diagnostics are always what kdl would give.

use kdl::{KdlDocument, KdlError};

use super::fast_parser::FastParser;

/// Parses `text` as KDL v2.
pub fn parse(text: &str) -> Result<KdlDocument, KdlError> {
    FastParser::parse(text).map_or_else(|| KdlDocument::parse_v2(text), Ok)
}
