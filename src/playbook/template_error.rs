//! Problems with vars and templates: they point at the template, or at the `var`.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

#[derive(Debug, Clone, Error, Diagnostic)]
pub enum TemplateError {
    #[error("`{value}` is not a valid {ty} for var `{name}`")]
    #[diagnostic(code(openmono::template::bad_value))]
    BadValue {
        #[help]
        help: String,
        name: String,
        #[label("declared here")]
        span: SourceSpan,
        ty: &'static str,
        value: String,
    },

    #[error("this value is empty once its template is rendered")]
    #[diagnostic(
        code(openmono::template::empty),
        help("the value must not be empty: check the vars it uses")
    )]
    Empty {
        #[label("renders to nothing")]
        span: SourceSpan,
    },

    #[error("var `{name}` needs a value")]
    #[diagnostic(code(openmono::template::missing_var))]
    MissingVar {
        #[help]
        help: String,
        name: String,
        #[label("declared here, without a default")]
        span: SourceSpan,
    },

    #[error("{message}")]
    #[diagnostic(code(openmono::template::render))]
    Render {
        #[help]
        help: Option<String>,
        message: String,
        #[label("here")]
        span: SourceSpan,
    },

    #[error("`{name}` is not defined")]
    #[diagnostic(code(openmono::template::undefined))]
    Undefined {
        #[help]
        help: String,
        name: String,
        #[label("undefined")]
        span: SourceSpan,
    },

    #[error("`--var {name}=…` names no var of this playbook")]
    #[diagnostic(code(openmono::template::unknown_var))]
    UnknownVar {
        #[help]
        help: String,
        name: String,
    },
}
