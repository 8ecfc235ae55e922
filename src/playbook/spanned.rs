//! A value as the user wrote it, with the span of the text it came from, so that every
//! later stage can point a diagnostic at it.

use miette::SourceSpan;

/// A value and where in the playbook it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// Where the value was written.
    pub span: SourceSpan,
    /// The value itself.
    pub value: T,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: SourceSpan) -> Self {
        Self { span, value }
    }
}

/// Only the value: where it was written is of no use outside this run of openmono.
impl<T: serde::Serialize> serde::Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}
