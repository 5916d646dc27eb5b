//! The vmsnap resource model: KubeVirt, CDI, CSI-snapshot and core kinds, with defaulting and
//! validation. This crate does no I/O; the store, API server and controllers build on it.

pub mod error;
pub mod meta;
pub mod registry;
pub mod types;

pub use error::{Cause, Error, ErrorKind, Result};
pub use registry::Resource;

use serde_json::Value;

/// How unknown fields in a request body are treated (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Reject the request with 400 BadRequest naming the fields.
    Strict,
    /// Drop the fields and return a warning for each.
    #[default]
    Warn,
    /// Drop the fields silently.
    Ignore,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// An object that passed admission, with the warnings to send back.
#[derive(Debug)]
pub struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Admits a create or update body for `res`: checks kind and apiVersion, prunes or rejects
/// unknown fields, applies defaults, and validates. Nothing is written on failure, so a bad
/// request changes nothing.
pub fn admit(res: &Resource, mut obj: Value, mode: FieldValidation) -> Result<Admitted> {
    let name = meta::name(&obj).to_string();
    if !obj.is_object() {
        return Err(Error::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    let kind = obj["kind"].as_str().unwrap_or("");
    if kind != res.kind {
        return Err(Error::bad_request(format!(
            "the kind in the body ({kind:?}) does not match the resource {:?} (expected {:?})",
            res.plural, res.kind
        )));
    }
    let api_version = obj["apiVersion"].as_str().unwrap_or("").to_string();
    let (group, version) = registry::split_api_version(&api_version);
    if group != res.group || !res.serves(version) {
        return Err(Error::bad_request(format!(
            "apiVersion {api_version:?} is not served for {}; use one of {:?}",
            res.kind,
            res.versions
                .iter()
                .map(|v| res.api_version(v))
                .collect::<Vec<_>>()
        )));
    }
    let causes = meta::validate_metadata(&obj, res.namespaced);
    if !causes.is_empty() {
        return Err(
            Error::invalid(res.kind, &name, causes).with_subject(res.group, res.kind, &name)
        );
    }
    // Objects are stored in the storage version; the served versions are identical in shape.
    obj["apiVersion"] = Value::String(res.api_version(res.storage_version()));
    let out = types::normalize(res.kind, obj)?;
    if !out.unknown.is_empty() && mode == FieldValidation::Strict {
        let fields = out
            .unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect::<Vec<_>>();
        return Err(
            Error::bad_request(format!("strict decoding error: {}", fields.join(", ")))
                .with_subject(res.group, res.kind, &name),
        );
    }
    if !out.causes.is_empty() {
        return Err(
            Error::invalid(res.kind, &name, out.causes).with_subject(res.group, res.kind, &name)
        );
    }
    let warnings = match mode {
        FieldValidation::Warn => out
            .unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Admitted {
        object: out.object,
        warnings,
    })
}

/// Sets or replaces a condition in `status.conditions`, keeping `lastTransitionTime` when the
/// status did not change, as Kubernetes controllers do.
pub fn set_condition(obj: &mut Value, ty: &str, status: bool, reason: &str, message: &str) {
    let status_str = if status { "True" } else { "False" };
    let generation = meta::generation(obj);
    let st = meta::ensure_object(obj, "status");
    let conds = st
        .entry("conditions")
        .or_insert_with(|| Value::Array(vec![]));
    if !conds.is_array() {
        *conds = Value::Array(vec![]);
    }
    let conds = conds.as_array_mut().expect("array");
    let now = meta::now_rfc3339();
    let mut new = serde_json::json!({
        "type": ty,
        "status": status_str,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
        "lastProbeTime": null,
    });
    if generation > 0 {
        new["observedGeneration"] = generation.into();
    }
    match conds.iter_mut().find(|c| c["type"] == ty) {
        Some(c) => {
            if c["status"] == status_str {
                new["lastTransitionTime"] = c["lastTransitionTime"].clone();
            }
            *c = new;
        }
        None => conds.push(new),
    }
}

/// Reads a condition's status: Some(true) for "True", Some(false) for "False", None if absent.
pub fn condition(obj: &Value, ty: &str) -> Option<bool> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .map(|c| {
            c["status"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("true"))
        })
}
