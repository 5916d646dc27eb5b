//! Object metadata on untyped objects: names, labels, selectors, owner references and the
//! JSONPath subset printer columns use. Objects travel through the store and the API server as
//! `serde_json::Value`, so these helpers are the common vocabulary.

use crate::error::{Cause, Error, Result};
use serde_json::{Map, Value};

/// DNS-1123 subdomain: what Kubernetes requires of most object names. Because these names
/// also become file names under the data dir, nothing else may reach a path.
pub fn validate_subdomain(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a name is required".into());
    }
    if name.len() > 253 {
        return Some(format!(
            "must be no more than 253 characters (is {})",
            name.len()
        ));
    }
    let ok = name.split('.').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    if ok {
        None
    } else {
        Some(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (got {name:?})"
        ))
    }
}

/// DNS-1123 label: namespaces and volume names, at most 63 characters and no dots.
pub fn validate_label_name(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some(format!(
            "must be no more than 63 characters (is {})",
            name.len()
        ));
    }
    if name.contains('.') {
        return Some(format!(
            "a lowercase RFC 1123 label must not contain '.' (got {name:?})"
        ));
    }
    validate_subdomain(name)
}

/// Label keys and values, as Kubernetes validates them.
pub fn validate_label(key: &str, value: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if let Some(e) = validate_subdomain(p) {
            return Some(format!("label key prefix {p:?}: {e}"));
        }
    }
    let qualified = |s: &str| {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
    };
    if name.is_empty() || !qualified(name) {
        return Some(format!("invalid label key {key:?}"));
    }
    if !qualified(value) {
        return Some(format!("invalid label value {value:?} for key {key:?}"));
    }
    None
}

pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}
pub fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}
pub fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}
pub fn resource_version(obj: &Value) -> &str {
    obj["metadata"]["resourceVersion"].as_str().unwrap_or("")
}
pub fn generation(obj: &Value) -> i64 {
    obj["metadata"]["generation"].as_i64().unwrap_or(0)
}
pub fn is_deleting(obj: &Value) -> bool {
    obj["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}
pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj["metadata"]["labels"].as_object()
}
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["labels"][key].as_str()
}
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
pub fn has_finalizer(obj: &Value, f: &str) -> bool {
    finalizers(obj).iter().any(|x| x == f)
}
/// Adds a finalizer; returns true if it was not there before.
pub fn add_finalizer(obj: &mut Value, f: &str) -> bool {
    if has_finalizer(obj, f) {
        return false;
    }
    let meta = ensure_object(obj, "metadata");
    let list = meta
        .entry("finalizers")
        .or_insert_with(|| Value::Array(vec![]));
    if !list.is_array() {
        *list = Value::Array(vec![]);
    }
    list.as_array_mut()
        .expect("array")
        .push(Value::String(f.into()));
    true
}
/// Removes a finalizer; returns true if it was there.
pub fn remove_finalizer(obj: &mut Value, f: &str) -> bool {
    let Some(list) = obj["metadata"]
        .get_mut("finalizers")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = list.len();
    list.retain(|x| x.as_str() != Some(f));
    before != list.len()
}
/// The `ownerReferences` uids of an object.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
/// An owner reference pointing at `owner`, with controller=true.
pub fn owner_ref(owner: &Value) -> Value {
    serde_json::json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}
pub fn set_owner(obj: &mut Value, owner: &Value) {
    let r = owner_ref(owner);
    let meta = ensure_object(obj, "metadata");
    let list = meta
        .entry("ownerReferences")
        .or_insert_with(|| Value::Array(vec![]));
    if let Some(a) = list.as_array_mut() {
        if !a.iter().any(|o| o["uid"] == r["uid"]) {
            a.push(r);
        }
    }
}

/// Sets one annotation, creating the map if needed.
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    set_in_map(obj, "annotations", key, value);
}

/// Sets one label, creating the map if needed.
pub fn set_label(obj: &mut Value, key: &str, value: &str) {
    set_in_map(obj, "labels", key, value);
}

fn set_in_map(obj: &mut Value, map: &str, key: &str, value: &str) {
    let m = ensure_object(obj, "metadata");
    let a = m.entry(map).or_insert_with(|| Value::Object(Map::new()));
    if !a.is_object() {
        *a = Value::Object(Map::new());
    }
    if let Some(a) = a.as_object_mut() {
        a.insert(key.into(), Value::String(value.into()));
    }
}

/// Returns `obj[key]` as an object, creating it (or replacing a non-object) first.
pub fn ensure_object<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("object");
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("object")
}

/// RFC 3339 in UTC with second precision, as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Kubernetes-style age: `45s`, `5m`, `3h`, `2d`.
pub fn age(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A parsed label selector: equality, inequality, set-based (`in`, `notin`) and existence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Req>,
}

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self> {
        let mut reqs = Vec::new();
        let bad =
            |m: String| Error::bad_request(format!("unable to parse labelSelector {s:?}: {m}"));
        // Split on commas that are not inside parentheses.
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>> {
                let rest = rest.trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad(format!("expected (values) in {p:?}")))?;
                Ok(inner
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect())
            };
            if let Some((k, v)) = p.split_once("!=") {
                reqs.push(Req::Ne(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once("==") {
                reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once('=') {
                reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                reqs.push(Req::NotIn(k.trim().into(), set(rest)?));
            } else if let Some((k, rest)) = p.split_once(" in ") {
                reqs.push(Req::In(k.trim().into(), set(rest)?));
            } else if let Some(k) = p.strip_prefix('!') {
                reqs.push(Req::NotExists(k.trim().into()));
            } else if p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            {
                reqs.push(Req::Exists(p.into()));
            } else {
                return Err(bad(format!("cannot parse requirement {p:?}")));
            }
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The equality requirements, which an index can answer directly.
    pub fn equalities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.reqs.iter().filter_map(|r| match r {
            Req::Eq(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A field selector: only the fields kube-apiserver supports for every kind
/// (`metadata.name`, `metadata.namespace`), plus `involvedObject.*` for events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self> {
        let mut reqs = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, true, v)
            } else {
                return Err(Error::bad_request(format!("invalid field selector {p:?}")));
            };
            let k = k.trim();
            let supported = matches!(k, "metadata.name" | "metadata.namespace")
                || k.starts_with("involvedObject.")
                || k == "status.phase"
                || k == "spec.source.name";
            if !supported {
                return Err(Error::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
    /// The value required of `metadata.name`, which lets a lookup skip the scan.
    pub fn name(&self) -> Option<&str> {
        self.reqs
            .iter()
            .find(|(k, eq, _)| k == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(k, eq, v)| {
            let mut cur = obj;
            for part in k.split('.') {
                cur = &cur[part];
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *v) == *eq
        })
    }
}

/// Evaluates the JSONPath subset that printer columns use. Missing values give `None`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.strip_prefix('.').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = r[end + 1..].strip_prefix('.').unwrap_or(&r[end + 1..]);
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, want) = filter.split_once("==")?;
                let want = want.trim_matches(|c| c == '\'' || c == '"');
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|e| e[field].as_str() == Some(want))?;
            } else {
                cur = cur.get(inner.parse::<usize>().ok()?)?;
            }
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        cur = cur.get(&rest[..end])?;
        rest = &rest[end..];
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    if cur.is_null() {
        None
    } else {
        Some(cur)
    }
}

/// Validates the metadata every object shares. Returns causes rather than failing early so
/// that one response lists every problem, as kube-apiserver does.
pub fn validate_metadata(obj: &Value, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = &obj["metadata"];
    if !meta.is_object() {
        causes.push(Cause::required("metadata"));
        return causes;
    }
    match meta["name"].as_str() {
        None if meta["generateName"].is_string() => {}
        None => causes.push(Cause::required("metadata.name")),
        Some(n) => {
            if let Some(e) = validate_subdomain(n) {
                causes.push(Cause::invalid("metadata.name", e));
            }
        }
    }
    if let Some(ns) = meta["namespace"].as_str() {
        if namespaced {
            if let Some(e) = validate_label_name(ns) {
                causes.push(Cause::invalid("metadata.namespace", e));
            }
        }
    }
    if let Some(labels) = meta.get("labels").filter(|l| !l.is_null()) {
        match labels.as_object() {
            Some(l) => {
                for (k, v) in l {
                    match v.as_str() {
                        Some(v) => {
                            if let Some(e) = validate_label(k, v) {
                                causes.push(Cause::invalid(format!("metadata.labels[{k}]"), e));
                            }
                        }
                        None => causes.push(Cause::invalid(
                            format!("metadata.labels[{k}]"),
                            "must be a string",
                        )),
                    }
                }
            }
            None => causes.push(Cause::invalid(
                "metadata.labels",
                "must be a map of strings",
            )),
        }
    }
    if let Some(ann) = meta.get("annotations").filter(|a| !a.is_null()) {
        let ok = ann
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string));
        if !ok {
            causes.push(Cause::invalid(
                "metadata.annotations",
                "must be a map of strings",
            ));
        }
        let size: usize = ann
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                    .sum()
            })
            .unwrap_or(0);
        if size > 256 * 1024 {
            causes.push(Cause::invalid(
                "metadata.annotations",
                "may not be more than 256 KiB in total",
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(validate_subdomain("snap-larry").is_none());
        assert!(validate_subdomain("a.b-c").is_none());
        assert!(validate_subdomain("../../etc").is_some());
        assert!(validate_subdomain("Upper").is_some());
        assert!(validate_subdomain(&"a".repeat(254)).is_some());
        assert!(validate_subdomain("-x").is_some());
        assert!(validate_label_name("a.b").is_some());
    }

    #[test]
    fn selectors() {
        let l = json!({"app": "db", "tier": "back"});
        let m = l.as_object();
        assert!(LabelSelector::parse("app=db").unwrap().matches(m));
        assert!(LabelSelector::parse("app==db,tier").unwrap().matches(m));
        assert!(!LabelSelector::parse("app!=db").unwrap().matches(m));
        assert!(LabelSelector::parse("app in (db, web)").unwrap().matches(m));
        assert!(!LabelSelector::parse("app notin (db)").unwrap().matches(m));
        assert!(LabelSelector::parse("!missing").unwrap().matches(m));
    }

    #[test]
    fn paths() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}], "list": [{"a": 1}]}});
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type=='Ready')].status"),
            Some(&json!("True"))
        );
        assert_eq!(json_path(&o, ".status.list[0].a"), Some(&json!(1)));
        assert_eq!(json_path(&o, ".status.missing"), None);
    }
}
