//! The playbook language: source text → KDL document → typed, spanned [`Playbook`].
//! The reference for every node is in `grammar/`.

mod checker;
mod decode_error;
mod decoder;
mod fast_parser;
pub mod formatter;
pub mod grammar;
mod nesting;
mod parser;
mod problems;
mod renderer;
mod resources;
pub mod schema;
mod source;
mod spanned;
mod template_error;
pub mod units;

use std::path::Path;

pub use decode_error::DecodeError;
pub use decoder::{DecodeFailure, Decoded, Decoder, closest};
#[doc(hidden)]
pub use fast_parser::check_against_kdl;
pub use parser::parse;
pub use problems::Problems;
pub use renderer::{Inputs, miscased_environment, render};
pub use resources::*;
pub use source::{MAX_FILE_BYTES, Source, SourceFile, SourceMap, read_text};
pub use spanned::Spanned;
pub use template_error::TemplateError;

/// Decodes a source; all of its problems come back together.
pub fn decode(source: &Source) -> Result<Decoded, Problems> {
    Decoder::new(source)
        .decode()
        .map_err(|failure| Problems::new(failure.source.named(), failure.errors))
}

/// Reads and decodes a playbook file.
pub fn load(path: &Path) -> Result<Decoded, LoadError> {
    let source = Source::read(path).map_err(|source| LoadError::Read {
        help: match source.kind() {
            std::io::ErrorKind::InvalidData => "a playbook is UTF-8 text; convert the file".into(),
            std::io::ErrorKind::FileTooLarge => {
                "a playbook is text of a few KB; give the playbook, not another file".into()
            }
            std::io::ErrorKind::InvalidInput => {
                "a playbook is a regular file: not a folder, a device or a pipe".into()
            }
            std::io::ErrorKind::PermissionDenied => {
                "openmono may not read it: check the file's permissions".into()
            }
            _ => "give the playbook's path, or run in a folder with an `openmono.kdl`".into(),
        },
        path: path.display().to_string(),
        source,
    })?;
    decode(&source).map_err(LoadError::Problems)
}

/// Decodes a playbook held in memory, as if it were the file `path` in `dir`.
pub fn load_text(path: &Path, dir: std::path::PathBuf, text: String) -> Result<Decoded, LoadError> {
    decode(&Source::from_text(path, dir, text)).map_err(LoadError::Problems)
}

/// Decodes the built-in default playbook, as if it were `path` in `dir`; its messages
/// name it as the built-in default, not as `path`, which does not exist.
pub fn load_built_in(
    path: &Path,
    dir: std::path::PathBuf,
    text: String,
) -> Result<Decoded, LoadError> {
    let mut source = Source::from_text(path, dir, text);
    source.built_in = true;
    decode(&source).map_err(LoadError::Problems)
}

/// Why a playbook could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Problems(Problems),
    #[error("cannot read playbook `{path}`")]
    #[diagnostic(code(openmono::playbook::read))]
    Read {
        #[help]
        help: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}
