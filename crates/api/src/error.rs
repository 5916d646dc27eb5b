//! The one error type of the control plane. Every layer returns it; the API server turns it
//! into a Kubernetes `Status` through [`Error::to_status`], the only place that mapping lives.

use serde_json::{json, Value};

/// What went wrong, independent of transport. Each kind has exactly one HTTP code and one
/// Kubernetes `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    BadRequest,
    FailedPrecondition,
    Unsupported,
    UnsupportedMediaType,
    MethodNotAllowed,
    Expired,
    Unauthorized,
    Forbidden,
    TooLarge,
    Timeout,
    Internal,
}

impl ErrorKind {
    pub fn code(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists | ErrorKind::Conflict => 409,
            ErrorKind::Invalid => 422,
            ErrorKind::BadRequest => 400,
            // Kubernetes reports admission refusals of a valid object in the wrong state as
            // 409 Conflict-like "precondition" failures; 412 would make kubectl print a bare code.
            ErrorKind::FailedPrecondition => 409,
            ErrorKind::Unsupported => 400,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Expired => 410,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::TooLarge => 413,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::Invalid => "Invalid",
            ErrorKind::BadRequest => "BadRequest",
            ErrorKind::FailedPrecondition => "Conflict",
            ErrorKind::Unsupported => "BadRequest",
            ErrorKind::UnsupportedMediaType => "UnsupportedMediaType",
            ErrorKind::MethodNotAllowed => "MethodNotAllowed",
            ErrorKind::Expired => "Expired",
            ErrorKind::Unauthorized => "Unauthorized",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::TooLarge => "RequestEntityTooLarge",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::Internal => "InternalError",
        }
    }
}

/// One field-level problem, reported in `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueDuplicate`.
    pub reason: String,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueInvalid".into(),
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired".into(),
            field: field.into(),
            message: "Required value".into(),
        }
    }
    pub fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueNotSupported".into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Which object an error is about, for `details`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub group: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// Boxed: it is rare, and keeping `Error` small keeps every `Result` cheap to move.
    pub subject: Option<Box<Subject>>,
    pub causes: Vec<Cause>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            subject: None,
            causes: Vec::new(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Expired, message)
    }
    /// An Invalid error in the shape kube-apiserver gives: `Kind "name" is invalid: field: msg`.
    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let detail = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        Error {
            kind: ErrorKind::Invalid,
            message: format!("{kind} \"{name}\" is invalid: {detail}"),
            subject: Some(Box::new(Subject {
                group: String::new(),
                kind: kind.into(),
                name: name.into(),
            })),
            causes,
        }
    }
    pub fn with_subject(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.subject = Some(Box::new(Subject {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
        }));
        self
    }
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }

    /// The wire form, `{"kind":"Status",...}`. This is the only mapping from errors to Status.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.kind.reason(),
            "code": self.kind.code(),
        });
        let mut details = serde_json::Map::new();
        if let Some(s) = &self.subject {
            if !s.name.is_empty() {
                details.insert("name".into(), s.name.clone().into());
            }
            if !s.group.is_empty() {
                details.insert("group".into(), s.group.clone().into());
            }
            if !s.kind.is_empty() {
                details.insert("kind".into(), s.kind.clone().into());
            }
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), causes.into());
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }

    /// Rebuilds an error from a `Status` body, for clients.
    pub fn from_status(status: &Value) -> Self {
        let reason = status["reason"].as_str().unwrap_or("");
        let code = status["code"].as_u64().unwrap_or(500);
        let kind = match (reason, code) {
            ("NotFound", _) => ErrorKind::NotFound,
            ("AlreadyExists", _) => ErrorKind::AlreadyExists,
            ("Conflict", _) => ErrorKind::Conflict,
            ("Invalid", _) => ErrorKind::Invalid,
            ("Expired", _) | (_, 410) => ErrorKind::Expired,
            ("Unauthorized", _) | (_, 401) => ErrorKind::Unauthorized,
            ("Forbidden", _) | (_, 403) => ErrorKind::Forbidden,
            ("UnsupportedMediaType", _) => ErrorKind::UnsupportedMediaType,
            ("MethodNotAllowed", _) => ErrorKind::MethodNotAllowed,
            ("RequestEntityTooLarge", _) | (_, 413) => ErrorKind::TooLarge,
            ("BadRequest", _) | (_, 400) => ErrorKind::BadRequest,
            (_, 404) => ErrorKind::NotFound,
            (_, 409) => ErrorKind::Conflict,
            (_, 422) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        };
        let causes = status["details"]["causes"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| Cause {
                        reason: c["reason"].as_str().unwrap_or("").into(),
                        field: c["field"].as_str().unwrap_or("").into(),
                        message: c["message"].as_str().unwrap_or("").into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Error {
            kind,
            message: status["message"].as_str().unwrap_or(reason).to_string(),
            subject: None,
            causes,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::bad_request(format!("malformed JSON: {e}"))
    }
}
