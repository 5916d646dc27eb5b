//! The one place where storage errors become API errors.

use api::ErrorKind as A;
use storage::ErrorKind as S;

/// Maps a driver error to the API error a client or a status should show. NoSpace becomes
/// TooLarge (413): the request is larger than what the pool can take.
pub fn api_error(e: storage::Error) -> api::Error {
    let kind = match e.kind() {
        S::NotFound => A::NotFound,
        S::AlreadyExists => A::AlreadyExists,
        S::Conflict => A::Conflict,
        S::Invalid => A::Invalid,
        S::FailedPrecondition => A::FailedPrecondition,
        S::Unsupported => A::Unsupported,
        S::NoSpace => A::TooLarge,
        S::Internal => A::Internal,
    };
    api::Error::new(kind, e.to_string())
}

/// Shorthand for `map_err(api_error)`.
pub trait StorageResultExt<T> {
    fn api(self) -> api::Result<T>;
}

impl<T> StorageResultExt<T> for storage::Result<T> {
    fn api(self) -> api::Result<T> {
        self.map_err(api_error)
    }
}
