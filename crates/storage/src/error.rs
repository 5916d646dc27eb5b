//! One error type for every driver, with a kind the controllers map to API errors.

use std::io;

/// What went wrong, in terms a controller can map to an API status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    FailedPrecondition,
    Unsupported,
    NoSpace,
    /// An I/O or tool failure that is none of the above.
    Internal,
}

/// A storage error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not found: {0}
    #[error("Not found: {0}")]
    NotFound(String),
    /// Already exists: {0}
    #[error("Already exists: {0}")]
    AlreadyExists(String),
    /// Conflict: {0}
    #[error("Conflict: {0}")]
    Conflict(String),
    /// Invalid request: {0}
    #[error("Invalid: {0}")]
    Invalid(String),
    /// The request needs something else to happen first.
    #[error("Failed precondition: {0}")]
    FailedPrecondition(String),
    /// The driver cannot do this.
    #[error("The {driver} driver does not support {what}")]
    Unsupported { driver: &'static str, what: String },
    /// Not enough free space in the pool.
    #[error("Not enough space: {what} needs {needed} bytes, the pool has {available} bytes free after its reserve of {reserve} bytes")]
    NoSpace {
        what: String,
        needed: u64,
        available: u64,
        reserve: u64,
    },
    /// An I/O call failed.
    #[error("Cannot {context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// An external tool failed.
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::NoSpace { .. } => ErrorKind::NoSpace,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
                Some(libc::ENOENT) => ErrorKind::NotFound,
                Some(libc::EEXIST) => ErrorKind::AlreadyExists,
                _ => ErrorKind::Internal,
            },
            Error::Tool { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn unsupported(driver: &'static str, what: impl Into<String>) -> Self {
        Error::Unsupported {
            driver,
            what: what.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a short context to I/O errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Io {
            context: context(),
            source: e.into(),
        })
    }
}
