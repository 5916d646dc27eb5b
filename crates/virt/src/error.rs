use std::time::Duration;

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the QEMU runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// I/O failed while doing something named in the message.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A command did not answer before its deadline.
    #[error("{command} timed out after {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    /// QEMU answered a QMP command with an error.
    #[error("QMP {command} failed: {class}: {desc}")]
    Qmp {
        command: String,
        class: String,
        desc: String,
    },
    /// The guest agent answered a command with an error.
    #[error("guest agent {command} failed: {class}: {desc}")]
    Agent {
        command: String,
        class: String,
        desc: String,
    },
    /// The peer sent something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The socket closed, usually because QEMU exited.
    #[error("connection to {0} closed")]
    Closed(String),
    /// QEMU refused to start.
    #[error("QEMU failed to start: {0}")]
    Launch(String),
    /// The VM spec cannot be turned into a QEMU command line.
    #[error("invalid VM spec: {0}")]
    InvalidSpec(String),
    /// The guest command ran but was killed by a signal, or similar.
    #[error("{0}")]
    Guest(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn timeout(command: impl Into<String>, timeout: Duration) -> Self {
        Error::Timeout {
            command: command.into(),
            timeout,
        }
    }

    /// True for a deadline that passed, as opposed to a refusal.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}
