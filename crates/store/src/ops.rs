//! What a write does to an object, independent of how it is persisted. Each function takes the
//! stored object (as the writer sees it, including earlier writes of the same batch) and the
//! revision the write would get, and says what to write, if anything.

use crate::{conflict, not_found, qualified_name, EventType, Preconditions};
use api::meta;
use api::{Cause, Error, Resource, Result};
use serde_json::{Map, Value};
use std::sync::Arc;

pub(crate) enum Op {
    Create(&'static Resource, Value),
    Update(&'static Resource, Value),
    UpdateStatus(&'static Resource, Value),
    Delete(&'static Resource, String, String, Preconditions),
    Compact(u64),
}

/// The decision for one write.
pub(crate) enum Outcome {
    /// Nothing changes; the answer is the stored object with its old revision.
    Unchanged(Arc<Value>),
    /// Store `object` (already carrying its new resourceVersion), or remove the key when
    /// `remove` is set; either way an event of type `ty` with `object` is appended.
    Write {
        ty: EventType,
        namespace: String,
        name: String,
        object: Value,
        remove: bool,
    },
}

/// Reads the stored object at (namespace, name) of the resource being written.
pub(crate) type Lookup<'a> = dyn Fn(&str, &str) -> Option<Arc<Value>> + 'a;

/// How many characters of `generateName` kube-apiserver keeps before the random suffix.
const MAX_GENERATE_NAME_BASE: usize = 58;
const RANDOM_SUFFIX_LEN: usize = 5;

/// The namespace a resource's objects are keyed under: `""` for cluster-scoped kinds.
pub(crate) fn scope_namespace<'a>(res: &Resource, namespace: &'a str) -> &'a str {
    if res.namespaced {
        namespace
    } else {
        ""
    }
}

pub(crate) fn plan(op: Op, lookup: &Lookup<'_>, rev: u64) -> Result<Outcome> {
    match op {
        Op::Create(res, obj) => create(res, obj, lookup, rev),
        Op::Update(res, obj) => update(res, obj, lookup, rev),
        Op::UpdateStatus(res, obj) => update_status(res, obj, lookup, rev),
        Op::Delete(res, ns, name, pre) => delete(res, &ns, &name, &pre, lookup, rev),
        Op::Compact(_) => Err(Error::internal("compaction is not an object write")),
    }
}

fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>> {
    if !obj.is_object() {
        return Err(Error::bad_request("the object must be a JSON object"));
    }
    if obj
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(Error::bad_request("metadata must be an object"));
    }
    Ok(meta::ensure_object(obj, "metadata"))
}

/// Finds the key of the object a create or update body names. Cluster-scoped kinds lose any
/// namespace the client sent, as in kube-apiserver.
fn key_of(res: &Resource, obj: &mut Value) -> Result<(String, String)> {
    let md = metadata_mut(obj)?;
    let namespace = if res.namespaced {
        let ns = md.get("namespace").and_then(Value::as_str).unwrap_or("");
        if ns.is_empty() {
            return Err(Error::bad_request(format!(
                "the namespace of the {} must be set",
                res.kind
            )));
        }
        ns.to_string()
    } else {
        md.remove("namespace");
        String::new()
    };
    let name = md
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok((namespace, name))
}

fn stamp(obj: &mut Value, rev: u64) {
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        md.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    // Same alphabet as kube-apiserver (no vowels, so no words), random bytes from a v4 UUID.
    uuid::Uuid::new_v4().as_bytes()[..RANDOM_SUFFIX_LEN]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn create(
    res: &'static Resource,
    mut obj: Value,
    lookup: &Lookup<'_>,
    rev: u64,
) -> Result<Outcome> {
    let (namespace, mut name) = key_of(res, &mut obj)?;
    if name.is_empty() {
        let base = obj["metadata"]["generateName"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if base.is_empty() {
            return Err(Error::invalid(
                res.kind,
                "",
                vec![Cause::required("metadata.name")],
            ));
        }
        let base: String = base.chars().take(MAX_GENERATE_NAME_BASE).collect();
        // Collisions are rare; a few tries make them practically impossible.
        let mut candidate = String::new();
        for _ in 0..8 {
            candidate = format!("{base}{}", random_suffix());
            if lookup(&namespace, &candidate).is_none() {
                break;
            }
        }
        name = candidate;
    }
    if lookup(&namespace, &name).is_some() {
        return Err(Error::already_exists(format!(
            "{} \"{name}\" already exists",
            qualified_name(res)
        ))
        .with_subject(res.group, res.plural, &name));
    }
    let md = metadata_mut(&mut obj)?;
    for server_owned in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        md.remove(server_owned);
    }
    md.insert("name".into(), Value::String(name.clone()));
    md.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    md.insert("resourceVersion".into(), Value::String(rev.to_string()));
    md.insert("generation".into(), Value::from(1));
    md.insert(
        "creationTimestamp".into(),
        Value::String(meta::now_rfc3339()),
    );
    Ok(Outcome::Write {
        ty: EventType::Added,
        namespace,
        name,
        object: obj,
        remove: false,
    })
}

fn check_rv(res: &Resource, name: &str, body: &Value, stored: &Value) -> Result<()> {
    let want = meta::resource_version(body);
    if !want.is_empty() && want != meta::resource_version(stored) {
        return Err(conflict(res, name));
    }
    Ok(())
}

/// Top-level fields other than the ones every object has, for kinds without a `spec`.
fn content_changed(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "apiVersion" | "kind"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(a) != strip(b)
}

fn update(
    res: &'static Resource,
    mut obj: Value,
    lookup: &Lookup<'_>,
    rev: u64,
) -> Result<Outcome> {
    let (namespace, name) = key_of(res, &mut obj)?;
    if name.is_empty() {
        return Err(Error::invalid(
            res.kind,
            "",
            vec![Cause::required("metadata.name")],
        ));
    }
    let stored = lookup(&namespace, &name).ok_or_else(|| not_found(res, &name))?;
    check_rv(res, &name, &obj, &stored)?;

    let old_md = &stored["metadata"];
    if meta::is_deleting(&stored) {
        let old = meta::finalizers(&stored);
        let added: Vec<String> = meta::finalizers(&obj)
            .into_iter()
            .filter(|f| !old.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(Error::invalid(
                res.kind,
                &name,
                vec![Cause::invalid(
                    "metadata.finalizers",
                    format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                )],
            )
            .with_subject(res.group, res.kind, &name));
        }
    }
    let md = metadata_mut(&mut obj)?;
    for kept in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match old_md.get(kept) {
            Some(v) if !v.is_null() => {
                md.insert(kept.into(), v.clone());
            }
            _ => {
                md.remove(kept);
            }
        }
    }
    if res.has_status {
        let map = obj.as_object_mut().expect("checked to be an object");
        match stored.get("status") {
            Some(s) => {
                map.insert("status".into(), s.clone());
            }
            None => {
                map.remove("status");
            }
        }
    }
    let changed = if res.has_spec() {
        obj.get("spec") != stored.get("spec")
    } else {
        content_changed(&obj, &stored)
    };
    if changed {
        let generation = meta::generation(&stored) + 1;
        obj["metadata"]["generation"] = Value::from(generation);
    }
    if obj == *stored {
        return Ok(Outcome::Unchanged(stored));
    }
    stamp(&mut obj, rev);
    let remove = meta::is_deleting(&obj) && meta::finalizers(&obj).is_empty();
    Ok(Outcome::Write {
        ty: if remove {
            EventType::Deleted
        } else {
            EventType::Modified
        },
        namespace,
        name,
        object: obj,
        remove,
    })
}

fn update_status(
    res: &'static Resource,
    mut obj: Value,
    lookup: &Lookup<'_>,
    rev: u64,
) -> Result<Outcome> {
    if !res.has_status {
        return Err(Error::not_found(
            "the server could not find the requested resource",
        ));
    }
    let (namespace, name) = key_of(res, &mut obj)?;
    let stored = lookup(&namespace, &name).ok_or_else(|| not_found(res, &name))?;
    check_rv(res, &name, &obj, &stored)?;
    let mut new = (*stored).clone();
    let map = new.as_object_mut().expect("stored objects are objects");
    match obj.as_object_mut().and_then(|o| o.remove("status")) {
        Some(status) => {
            map.insert("status".into(), status);
        }
        None => {
            map.remove("status");
        }
    }
    if new == *stored {
        return Ok(Outcome::Unchanged(stored));
    }
    stamp(&mut new, rev);
    Ok(Outcome::Write {
        ty: EventType::Modified,
        namespace,
        name,
        object: new,
        remove: false,
    })
}

fn delete(
    res: &'static Resource,
    namespace: &str,
    name: &str,
    pre: &Preconditions,
    lookup: &Lookup<'_>,
    rev: u64,
) -> Result<Outcome> {
    let namespace = scope_namespace(res, namespace);
    let stored = lookup(namespace, name).ok_or_else(|| not_found(res, name))?;
    if let Some(uid) = pre.uid.as_deref() {
        let actual = meta::uid(&stored);
        if uid != actual {
            return Err(Error::conflict(format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}",
                qualified_name(res)
            ))
            .with_subject(res.group, res.plural, name));
        }
    }
    if let Some(rv) = pre.resource_version.as_deref() {
        let actual = meta::resource_version(&stored);
        if rv != actual {
            return Err(Error::conflict(format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}",
                qualified_name(res)
            ))
            .with_subject(res.group, res.plural, name));
        }
    }
    let mut new = (*stored).clone();
    if !meta::finalizers(&stored).is_empty() {
        if meta::is_deleting(&stored) {
            return Ok(Outcome::Unchanged(stored));
        }
        let generation = meta::generation(&stored) + 1;
        let md = meta::ensure_object(&mut new, "metadata");
        md.insert(
            "deletionTimestamp".into(),
            Value::String(meta::now_rfc3339()),
        );
        md.insert("deletionGracePeriodSeconds".into(), Value::from(0));
        md.insert("generation".into(), Value::from(generation));
        stamp(&mut new, rev);
        return Ok(Outcome::Write {
            ty: EventType::Modified,
            namespace: namespace.to_string(),
            name: name.to_string(),
            object: new,
            remove: false,
        });
    }
    stamp(&mut new, rev);
    Ok(Outcome::Write {
        ty: EventType::Deleted,
        namespace: namespace.to_string(),
        name: name.to_string(),
        object: new,
        remove: true,
    })
}
