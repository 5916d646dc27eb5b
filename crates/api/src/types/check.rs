//! Validation helpers shared by the kinds. Each appends `Cause`s with kube-apiserver style
//! field paths rather than stopping at the first problem.

use super::common::{ObjectMeta, ResourceList};
use crate::error::Cause;
use serde_json::Value;

pub(crate) fn required(causes: &mut Vec<Cause>, field: impl Into<String>) {
    causes.push(Cause::required(field));
}

pub(crate) fn invalid(causes: &mut Vec<Cause>, field: impl Into<String>, msg: impl Into<String>) {
    causes.push(Cause::invalid(field, msg));
}

/// A string that must be non-empty when the field is required.
pub(crate) fn required_str(causes: &mut Vec<Cause>, field: &str, value: &str) {
    if value.is_empty() {
        required(causes, field);
    }
}

/// Checks an enumerated value, with kube-apiserver's `Unsupported value` message.
pub(crate) fn one_of(causes: &mut Vec<Cause>, field: &str, value: Option<&str>, allowed: &[&str]) {
    if let Some(v) = value {
        if !allowed.contains(&v) {
            let list = allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            causes.push(Cause::unsupported(
                field,
                format!("Unsupported value: {v:?}: supported values: {list}"),
            ));
        }
    }
}

/// A DNS-1123 label (disk, volume, interface and network names).
pub(crate) fn dns_label(causes: &mut Vec<Cause>, field: &str, name: &str) {
    if name.is_empty() {
        required(causes, field);
    } else if let Some(e) = crate::meta::validate_label_name(name) {
        invalid(causes, field, e);
    }
}

/// A DNS-1123 subdomain (object names).
pub(crate) fn dns_subdomain(causes: &mut Vec<Cause>, field: &str, name: &str) {
    if name.is_empty() {
        required(causes, field);
    } else if let Some(e) = crate::meta::validate_subdomain(name) {
        invalid(causes, field, e);
    }
}

/// Every quantity in a resource list must parse.
pub(crate) fn quantities(causes: &mut Vec<Cause>, field: &str, list: Option<&ResourceList>) {
    for (name, q) in list.into_iter().flatten() {
        if q.value().is_none() {
            invalid(
                causes,
                format!("{field}[{name}]"),
                format!("{:?} is not a valid quantity; quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'", q.0),
            );
        }
    }
}

/// Labels and annotations of an embedded object (a template), validated like top-level ones.
pub(crate) fn embedded_meta(causes: &mut Vec<Cause>, field: &str, meta: &ObjectMeta) {
    for (k, v) in meta.labels.iter().flatten() {
        if let Some(e) = crate::meta::validate_label(k, v) {
            invalid(causes, format!("{field}.labels[{k}]"), e);
        }
    }
}

/// Validates a MAC address as KubeVirt accepts it in `macAddress` and `newMacAddresses`:
/// six octets of two hex digits separated consistently by `:` or `-`, unicast, not all
/// zeros. Returns the reason it is not valid.
pub fn validate_mac(mac: &str) -> Option<String> {
    let sep = if mac.contains(':') { ':' } else { '-' };
    let octets: Vec<&str> = mac.split(sep).collect();
    let well_formed = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Some(format!(
            "'{mac}' is not a valid MAC address: expected six octets of two hex digits separated by ':' or '-'"
        ));
    }
    let bytes: Vec<u8> = octets
        .iter()
        .filter_map(|o| u8::from_str_radix(o, 16).ok())
        .collect();
    if bytes.iter().all(|b| *b == 0) {
        return Some(format!(
            "'{mac}' is not a valid MAC address: it is all zeros"
        ));
    }
    if bytes[0] & 1 == 1 {
        return Some(format!(
            "'{mac}' is not a valid MAC address: it is a multicast address"
        ));
    }
    None
}

/// Parses one JSON patch operation as KubeVirt's `patches` strings carry it
/// (`{"op": "replace", "path": "/spec/running", "value": false}`) and returns it.
pub fn validate_json_patch(patch: &str) -> Result<Value, String> {
    let v: Value =
        serde_json::from_str(patch).map_err(|e| format!("the patch is not valid JSON: {e}"))?;
    let ops: Vec<&Value> = match &v {
        Value::Object(_) => vec![&v],
        Value::Array(a) if !a.is_empty() => a.iter().collect(),
        _ => return Err("the patch must be a JSON patch operation object".into()),
    };
    for op in ops {
        let Some(obj) = op.as_object() else {
            return Err("each JSON patch operation must be an object".into());
        };
        let kind = obj.get("op").and_then(Value::as_str).unwrap_or("");
        let path = obj.get("path").and_then(Value::as_str);
        let Some(path) = path else {
            return Err("the patch operation has no \"path\"".into());
        };
        if !(path.is_empty() || path.starts_with('/')) {
            return Err(format!("the patch path {path:?} must start with '/'"));
        }
        match kind {
            "add" | "replace" | "test" => {
                if !obj.contains_key("value") {
                    return Err(format!("the {kind:?} patch operation needs a \"value\""));
                }
            }
            "remove" => {}
            "move" | "copy" => {
                if !obj.get("from").is_some_and(Value::is_string) {
                    return Err(format!("the {kind:?} patch operation needs a \"from\""));
                }
            }
            other => {
                return Err(format!(
                    "unsupported patch operation {other:?}: expected add, remove, replace, move, copy or test"
                ))
            }
        }
    }
    Ok(v)
}

/// The JSON patch paths of all operations in a parsed patch.
pub(crate) fn patch_paths(v: &Value) -> Vec<&str> {
    match v {
        Value::Array(a) => a.iter().filter_map(|o| o["path"].as_str()).collect(),
        other => other["path"].as_str().into_iter().collect(),
    }
}

/// A clone label or annotation filter: `!` may only lead and `*` may only end it.
pub(crate) fn filter(causes: &mut Vec<Cause>, field: &str, f: &str) {
    if f.is_empty() {
        invalid(causes, field, "a filter may not be empty");
        return;
    }
    if f.char_indices().any(|(i, c)| c == '!' && i != 0) {
        invalid(
            causes,
            field,
            format!("invalid filter {f:?}: '!' may only appear at the start"),
        );
    }
    if f.char_indices().any(|(i, c)| c == '*' && i != f.len() - 1) {
        invalid(
            causes,
            field,
            format!("invalid filter {f:?}: '*' may only appear at the end"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(validate_mac("02:00:00:aa:bb:cc"), None);
        assert_eq!(validate_mac("02-00-00-AA-BB-CC"), None);
        assert!(validate_mac("00-11-22")
            .unwrap()
            .contains("'00-11-22' is not a valid MAC address"));
        assert!(validate_mac("00:00:00:00:00").is_some());
        assert!(validate_mac("00:00:00:00:00:00").unwrap().contains("zeros"));
        assert!(validate_mac("01:00:5e:00:00:01")
            .unwrap()
            .contains("multicast"));
        assert!(validate_mac("02:00:00-aa:bb:cc").is_some());
        assert!(validate_mac("02:00:00:aa:bb:cg").is_some());
        assert!(validate_mac("").is_some());
    }

    #[test]
    fn patches() {
        assert!(
            validate_json_patch(r#"{"op":"replace","path":"/spec/running","value":true}"#).is_ok()
        );
        assert!(validate_json_patch(r#"{"op":"remove","path":"/metadata/labels/a"}"#).is_ok());
        assert!(validate_json_patch(r#"{"op":"add","path":"/spec/x"}"#).is_err());
        assert!(validate_json_patch(r#"{"op":"frob","path":"/spec/x","value":1}"#).is_err());
        assert!(validate_json_patch("not json").is_err());
        assert!(validate_json_patch(r#"{"op":"add","path":"spec","value":1}"#).is_err());
    }
}
