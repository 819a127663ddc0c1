//! [`SharedError`]: an error kept as the source of another, in error types that are cloned.

use std::{error::Error, fmt, sync::Arc};

/// An error kept as the [`source`](Error::source) of another error whose type is `Clone`
/// (one failed dial answers every request that waited for it; a record validator's verdict is
/// compared and cached).
///
/// It prints and chains as the error it holds: its [`Display`](fmt::Display) and
/// [`Debug`](fmt::Debug) are the inner error's, and its `source` is the inner error's
/// source. Two are equal when they print the same, so the enums holding one can still
/// derive `PartialEq` and `Eq`.
#[derive(Clone)]
pub struct SharedError(Arc<dyn Error + Send + Sync + 'static>);

impl SharedError {
    /// Keeps `error`.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        SharedError(Arc::new(error))
    }

    /// The error held.
    pub fn get(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Error for SharedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for SharedError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for SharedError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn prints_and_chains_as_the_error_it_holds() {
        let shared = SharedError::new(Outer(std::io::Error::other("inner")));
        assert_eq!(shared.to_string(), "outer");
        assert_eq!(
            format!("{shared:?}"),
            format!("{:?}", Outer(std::io::Error::other("inner")))
        );
        assert_eq!(
            shared.source().map(ToString::to_string).as_deref(),
            Some("inner")
        );
        assert_eq!(shared.get().to_string(), "outer");
        assert_eq!(shared.clone(), shared);
        assert_eq!(
            shared,
            SharedError::new(Outer(std::io::Error::other("other")))
        );
        assert_ne!(shared, SharedError::new(std::io::Error::other("outer!")));
    }
}
