#![allow(clippy::result_large_err)] // api::Error is the mandated error type.

mod common;

use api::meta::{self, FieldSelector, LabelSelector};
use api::ErrorKind;
use common::*;
use serde_json::json;
use store::{Preconditions, Store};

#[test]
fn create_sets_server_metadata_and_strips_client_values() {
    let t = Tmp::new();
    let s = t.open();
    let mut body = snap("default", "a");
    body["metadata"]["uid"] = json!("client-uid");
    body["metadata"]["resourceVersion"] = json!("999");
    body["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    body["metadata"]["deletionTimestamp"] = json!("2000-01-01T00:00:00Z");
    body["metadata"]["generation"] = json!(7);
    body["status"] = json!({"phase": "Succeeded"});
    let before = s.revision();
    let obj = s.create(vmsnap(), body).unwrap();
    assert_eq!(rv(&obj), before + 1);
    assert_eq!(s.revision(), before + 1);
    assert_ne!(meta::uid(&obj), "client-uid");
    assert!(uuid::Uuid::parse_str(meta::uid(&obj)).is_ok());
    assert_eq!(meta::generation(&obj), 1);
    assert!(!meta::is_deleting(&obj));
    let ts = obj["metadata"]["creationTimestamp"].as_str().unwrap();
    assert_ne!(ts, "2000-01-01T00:00:00Z");
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok());
    // A provided status survives create.
    assert_eq!(obj["status"]["phase"], "Succeeded");
    assert_eq!(s.get(vmsnap(), "default", "a").unwrap(), obj);
}

#[test]
fn create_duplicate_is_already_exists() {
    let t = Tmp::new();
    let s = t.open();
    s.create(vmsnap(), snap("default", "x")).unwrap();
    let rev = s.revision();
    let e = s.create(vmsnap(), snap("default", "x")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert_eq!(e.kind.code(), 409);
    assert_eq!(
        e.message,
        r#"virtualmachinesnapshots.snapshot.kubevirt.io "x" already exists"#
    );
    let subject = e.subject.unwrap();
    assert_eq!(subject.name, "x");
    assert_eq!(subject.group, "snapshot.kubevirt.io");
    assert_eq!(
        s.revision(),
        rev,
        "a failed write does not bump the revision"
    );
    // Same name in another namespace is a different object.
    s.create(vmsnap(), snap("other", "x")).unwrap();
}

#[test]
fn generate_name_appends_five_characters() {
    let t = Tmp::new();
    let s = t.open();
    let mut names = std::collections::HashSet::new();
    for _ in 0..20 {
        let mut body = snap("default", "");
        body["metadata"].as_object_mut().unwrap().remove("name");
        body["metadata"]["generateName"] = json!("nightly-");
        let obj = s.create(vmsnap(), body).unwrap();
        let name = meta::name(&obj).to_string();
        let suffix = name.strip_prefix("nightly-").expect("prefix kept");
        assert_eq!(suffix.len(), 5);
        assert!(suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert!(names.insert(name.clone()));
        s.get(vmsnap(), "default", &name).unwrap();
    }
    let mut body = snap("default", "");
    body["metadata"].as_object_mut().unwrap().remove("name");
    assert_eq!(
        s.create(vmsnap(), body).unwrap_err().kind,
        ErrorKind::Invalid
    );
}

#[test]
fn cluster_scoped_objects_use_the_empty_namespace() {
    let t = Tmp::new();
    let s = t.open();
    let mut body = sc("fast");
    body["metadata"]["namespace"] = json!("ignored");
    let obj = s.create(storage_class(), body).unwrap();
    assert!(obj["metadata"].get("namespace").is_none());
    s.get(storage_class(), "", "fast").unwrap();
    let (l, f) = all();
    assert_eq!(
        s.list(storage_class(), None, &l, &f).unwrap().items.len(),
        1
    );
    let e = s.get(storage_class(), "", "slow").unwrap_err();
    assert_eq!(
        e.message,
        r#"storageclasses.storage.k8s.io "slow" not found"#
    );
    let e = s.get(namespace_res(), "", "nope").unwrap_err();
    assert_eq!(e.message, r#"namespaces "nope" not found"#);
}

#[test]
fn list_filters_by_namespace_labels_and_fields_sorted() {
    let t = Tmp::new();
    let s = t.open();
    for (ns, name, app) in [
        ("b", "z", "db"),
        ("a", "y", "web"),
        ("a", "x", "db"),
        ("b", "w", "web"),
    ] {
        let mut body = snap(ns, name);
        body["metadata"]["labels"] =
            json!({"app": app, "tier": if ns == "a" {"front"} else {"back"}});
        s.create(vmsnap(), body).unwrap();
    }
    let names = |items: &[std::sync::Arc<serde_json::Value>]| -> Vec<String> {
        items
            .iter()
            .map(|o| format!("{}/{}", meta::namespace(o), meta::name(o)))
            .collect()
    };
    let (l, f) = all();
    let list = s.list(vmsnap(), None, &l, &f).unwrap();
    assert_eq!(names(&list.items), ["a/x", "a/y", "b/w", "b/z"]);
    assert_eq!(list.revision, s.revision());
    let list = s.list(vmsnap(), Some("b"), &l, &f).unwrap();
    assert_eq!(names(&list.items), ["b/w", "b/z"]);
    let db = LabelSelector::parse("app=db").unwrap();
    assert_eq!(
        names(&s.list(vmsnap(), None, &db, &f).unwrap().items),
        ["a/x", "b/z"]
    );
    assert_eq!(
        names(&s.list(vmsnap(), Some("a"), &db, &f).unwrap().items),
        ["a/x"]
    );
    let sel = LabelSelector::parse("app=db,tier!=front").unwrap();
    assert_eq!(
        names(&s.list(vmsnap(), None, &sel, &f).unwrap().items),
        ["b/z"]
    );
    let sel = LabelSelector::parse("app in (web),tier").unwrap();
    assert_eq!(
        names(&s.list(vmsnap(), None, &sel, &f).unwrap().items),
        ["a/y", "b/w"]
    );
    let none = LabelSelector::parse("app=nothing").unwrap();
    assert!(s.list(vmsnap(), None, &none, &f).unwrap().items.is_empty());
    let by_name = FieldSelector::parse("metadata.name=y").unwrap();
    assert_eq!(
        names(&s.list(vmsnap(), None, &l, &by_name).unwrap().items),
        ["a/y"]
    );
    assert_eq!(
        names(&s.list(vmsnap(), Some("a"), &l, &by_name).unwrap().items),
        ["a/y"]
    );
    assert!(s
        .list(vmsnap(), Some("b"), &l, &by_name)
        .unwrap()
        .items
        .is_empty());
    let by_ns = FieldSelector::parse("metadata.namespace!=a").unwrap();
    assert_eq!(
        names(&s.list(vmsnap(), None, &l, &by_ns).unwrap().items),
        ["b/w", "b/z"]
    );
    // Another kind is not mixed in.
    assert!(s.list(vm(), None, &l, &f).unwrap().items.is_empty());

    // The label index follows label changes and deletes.
    let mut y = (*s.get(vmsnap(), "a", "y").unwrap()).clone();
    y["metadata"]["labels"]["app"] = json!("db");
    s.update(vmsnap(), y).unwrap();
    assert_eq!(
        names(&s.list(vmsnap(), None, &db, &f).unwrap().items),
        ["a/x", "a/y", "b/z"]
    );
    s.delete(vmsnap(), "a", "x", &Preconditions::default())
        .unwrap();
    assert_eq!(
        names(&s.list(vmsnap(), None, &db, &f).unwrap().items),
        ["a/y", "b/z"]
    );
}

#[test]
fn update_checks_resource_version() {
    let t = Tmp::new();
    let s = t.open();
    let obj = s.create(vmsnap(), snap("default", "a")).unwrap();
    let mut stale = (*obj).clone();
    stale["metadata"]["resourceVersion"] = json!("1234");
    stale["spec"]["source"]["name"] = json!("vm2");
    let e = s.update(vmsnap(), stale).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert_eq!(
        e.message,
        r#"Operation cannot be fulfilled on virtualmachinesnapshots.snapshot.kubevirt.io "a": the object has been modified; please apply your changes to the latest version and try again"#
    );
    // The matching version wins, and then the old one is stale.
    let mut good = (*obj).clone();
    good["spec"]["source"]["name"] = json!("vm2");
    let updated = s.update(vmsnap(), good.clone()).unwrap();
    assert!(rv(&updated) > rv(&obj));
    good["spec"]["source"]["name"] = json!("vm3");
    assert_eq!(
        s.update(vmsnap(), good.clone()).unwrap_err().kind,
        ErrorKind::Conflict
    );
    // An empty resourceVersion is unconditional.
    good["metadata"]["resourceVersion"] = json!("");
    let u = s.update(vmsnap(), good).unwrap();
    assert_eq!(u["spec"]["source"]["name"], "vm3");
    // Missing object.
    let e = s.update(vmsnap(), snap("default", "missing")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(
        e.message,
        r#"virtualmachinesnapshots.snapshot.kubevirt.io "missing" not found"#
    );
}

#[test]
fn update_keeps_server_fields_and_status_and_bumps_generation_on_spec() {
    let t = Tmp::new();
    let s = t.open();
    let mut body = snap("default", "a");
    body["status"] = json!({"phase": "InProgress"});
    let obj = s.create(vmsnap(), body).unwrap();

    // A metadata-only change: no generation bump; status and server fields kept.
    let mut b = (*obj).clone();
    b["metadata"]["labels"]["extra"] = json!("1");
    b["metadata"]["uid"] = json!("forged");
    b["metadata"]["generation"] = json!(42);
    b["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    b["metadata"]["deletionTimestamp"] = json!("2000-01-01T00:00:00Z");
    b["status"] = json!({"phase": "Failed"});
    let u = s.update(vmsnap(), b).unwrap();
    assert_eq!(meta::generation(&u), 1);
    assert_eq!(meta::uid(&u), meta::uid(&obj));
    assert_eq!(
        u["metadata"]["creationTimestamp"],
        obj["metadata"]["creationTimestamp"]
    );
    assert!(!meta::is_deleting(&u));
    assert_eq!(u["status"]["phase"], "InProgress");
    assert_eq!(meta::label(&u, "extra"), Some("1"));

    // A spec change bumps generation by one.
    let mut b = (*u).clone();
    b["spec"]["source"]["name"] = json!("vm2");
    let u2 = s.update(vmsnap(), b).unwrap();
    assert_eq!(meta::generation(&u2), 2);

    // Kinds without spec bump on any non-metadata change.
    let c = s.create(storage_class(), sc("fast")).unwrap();
    let mut b = (*c).clone();
    b["metadata"]["labels"] = json!({"x": "y"});
    let c2 = s.update(storage_class(), b).unwrap();
    assert_eq!(meta::generation(&c2), 1);
    let mut b = (*c2).clone();
    b["reclaimPolicy"] = json!("Retain");
    let c3 = s.update(storage_class(), b).unwrap();
    assert_eq!(meta::generation(&c3), 2);
    // Kinds without a status subresource take status... there is none; content is replaced.
    assert_eq!(c3["reclaimPolicy"], "Retain");
}

#[test]
fn noop_update_writes_nothing() {
    let t = Tmp::new();
    let s = t.open();
    let obj = s.create(vmsnap(), snap("default", "a")).unwrap();
    let rev = s.revision();
    let rt = rt();
    let mut w = s.watch(None, None, rev).unwrap();
    let same = s.update(vmsnap(), (*obj).clone()).unwrap();
    assert_eq!(same, obj);
    assert_eq!(s.revision(), rev);
    // Status in the main body is ignored, so this is a no-op too.
    let mut b = (*obj).clone();
    b["status"] = json!({"phase": "Whatever"});
    assert_eq!(s.update(vmsnap(), b).unwrap(), obj);
    // Same status via the subresource.
    assert_eq!(s.update_status(vmsnap(), (*obj).clone()).unwrap(), obj);
    assert_eq!(s.revision(), rev);
    rt.block_on(quiet(&mut w));
}

#[test]
fn update_status_only_takes_status() {
    let t = Tmp::new();
    let s = t.open();
    let obj = s.create(vmsnap(), snap("default", "a")).unwrap();
    let mut b = (*obj).clone();
    b["spec"]["source"]["name"] = json!("ignored");
    b["metadata"]["labels"]["ignored"] = json!("yes");
    b["status"] = json!({"phase": "Succeeded", "readyToUse": true});
    let u = s.update_status(vmsnap(), b.clone()).unwrap();
    assert_eq!(u["status"]["readyToUse"], true);
    assert_eq!(u["spec"]["source"]["name"], "vm1");
    assert_eq!(meta::label(&u, "ignored"), None);
    assert_eq!(meta::generation(&u), 1);
    assert_eq!(rv(&u), rv(&obj) + 1);
    // Stale resourceVersion on the subresource.
    let e = s.update_status(vmsnap(), b).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    // Unconditional status write without resourceVersion.
    let u2 = s
        .update_status(
            vmsnap(),
            json!({"metadata": {"name": "a", "namespace": "default"}, "status": {"phase": "Failed"}}),
        )
        .unwrap();
    assert_eq!(u2["status"], json!({"phase": "Failed"}));
    // A status-less kind has no status subresource.
    s.create(storage_class(), sc("fast")).unwrap();
    assert_eq!(
        s.update_status(storage_class(), sc("fast"))
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        s.update_status(vmsnap(), snap("default", "nope"))
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
}

#[test]
fn delete_without_finalizers_removes() {
    let t = Tmp::new();
    let s = t.open();
    let obj = s.create(vmsnap(), snap("default", "a")).unwrap();
    let rt = rt();
    let mut w = s.watch(Some(vmsnap()), None, s.revision()).unwrap();
    let gone = s
        .delete(vmsnap(), "default", "a", &Preconditions::default())
        .unwrap();
    assert_eq!(
        rv(&gone),
        rv(&obj) + 1,
        "the deleted object carries the new revision"
    );
    assert_eq!(meta::uid(&gone), meta::uid(&obj));
    assert_eq!(s.revision(), rv(&gone));
    assert_eq!(
        s.get(vmsnap(), "default", "a").unwrap_err().kind,
        ErrorKind::NotFound
    );
    let ev = rt.block_on(next(&mut w)).unwrap();
    assert_eq!(ev.ty.as_str(), "DELETED");
    assert_eq!(ev.revision, rv(&gone));
    assert_eq!(*ev.object, *gone);
    assert_eq!(
        s.delete(vmsnap(), "default", "a", &Preconditions::default())
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    // The name can be reused, with a new uid.
    let again = s.create(vmsnap(), snap("default", "a")).unwrap();
    assert_ne!(meta::uid(&again), meta::uid(&obj));
}

#[test]
fn delete_preconditions() {
    let t = Tmp::new();
    let s = t.open();
    let obj = s.create(vmsnap(), snap("default", "a")).unwrap();
    let e = s
        .delete(
            vmsnap(),
            "default",
            "a",
            &Preconditions {
                uid: Some("other".into()),
                resource_version: None,
            },
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(
        e.message.contains("UID in precondition: other"),
        "{}",
        e.message
    );
    let e = s
        .delete(
            vmsnap(),
            "default",
            "a",
            &Preconditions {
                uid: None,
                resource_version: Some("999".into()),
            },
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    s.get(vmsnap(), "default", "a").unwrap();
    s.delete(
        vmsnap(),
        "default",
        "a",
        &Preconditions {
            uid: Some(meta::uid(&obj).into()),
            resource_version: Some(meta::resource_version(&obj).into()),
        },
    )
    .unwrap();
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let t = Tmp::new();
    let s = t.open();
    let mut body = snap("default", "a");
    body["metadata"]["finalizers"] = json!(["vmsnap.io/protect", "other/f"]);
    let obj = s.create(vmsnap(), body).unwrap();
    let rt = rt();
    let mut w = s
        .watch(Some(vmsnap()), Some("default"), s.revision())
        .unwrap();

    let marked = s
        .delete(vmsnap(), "default", "a", &Preconditions::default())
        .unwrap();
    assert!(meta::is_deleting(&marked));
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(rv(&marked), rv(&obj) + 1);
    assert_eq!(*s.get(vmsnap(), "default", "a").unwrap(), *marked);
    let ev = rt.block_on(next(&mut w)).unwrap();
    assert_eq!(ev.ty.as_str(), "MODIFIED");
    assert!(meta::is_deleting(&ev.object));

    // A second delete changes nothing.
    let again = s
        .delete(vmsnap(), "default", "a", &Preconditions::default())
        .unwrap();
    assert_eq!(again, marked);
    assert_eq!(s.revision(), rv(&marked));

    // Clients cannot clear deletionTimestamp, nor add finalizers now.
    let mut b = (*marked).clone();
    b["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    b["metadata"]["finalizers"] = json!(["vmsnap.io/protect", "other/f", "new/f"]);
    let e = s.update(vmsnap(), b).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);

    // Removing one finalizer keeps it; removing the last deletes it.
    let mut b = (*marked).clone();
    meta::remove_finalizer(&mut b, "other/f");
    let still = s.update(vmsnap(), b).unwrap();
    assert!(meta::is_deleting(&still));
    let ev = rt.block_on(next(&mut w)).unwrap();
    assert_eq!(ev.ty.as_str(), "MODIFIED");
    let mut b = (*still).clone();
    meta::remove_finalizer(&mut b, "vmsnap.io/protect");
    let gone = s.update(vmsnap(), b).unwrap();
    assert_eq!(rv(&gone), rv(&still) + 1);
    assert_eq!(
        s.get(vmsnap(), "default", "a").unwrap_err().kind,
        ErrorKind::NotFound
    );
    let ev = rt.block_on(next(&mut w)).unwrap();
    assert_eq!(ev.ty.as_str(), "DELETED");
    assert_eq!(ev.revision, rv(&gone));
}

#[test]
fn failed_writes_change_nothing() {
    let t = Tmp::new();
    let s = t.open();
    s.create(vmsnap(), snap("default", "a")).unwrap();
    let rev = s.revision();
    assert!(s.create(vmsnap(), json!("not an object")).is_err());
    assert!(
        s.create(vmsnap(), json!({"metadata": {"name": "x"}}))
            .is_err(),
        "namespace required"
    );
    assert!(s.update(vmsnap(), snap("default", "b")).is_err());
    assert_eq!(s.revision(), rev);
    drop(s);
    let s = t.open();
    assert_eq!(s.revision(), rev);
    let (l, f) = all();
    assert_eq!(s.list(vmsnap(), None, &l, &f).unwrap().items.len(), 1);
}

#[test]
fn second_open_of_the_same_database_is_refused() {
    let t = Tmp::new();
    let _s = t.open();
    let e = store::SqliteStore::open(&t.db(), Default::default())
        .err()
        .expect("refused");
    assert!(e.message.contains("in use"), "{}", e.message);
}

#[test]
fn works_as_a_trait_object() {
    let t = Tmp::new();
    let s: std::sync::Arc<dyn Store> = std::sync::Arc::new(t.open());
    s.create(vmsnap(), snap("default", "a")).unwrap();
    assert_eq!(s.revision(), 1);
    assert_eq!(s.compacted_revision(), 0);
}
