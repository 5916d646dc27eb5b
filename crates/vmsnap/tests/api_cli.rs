//! The vmsnap CLI's kubectl-like verbs, garbage collection and namespace deletion.

mod common;

use common::{seeds_dir, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn vmsnap_cli_verbs_work_like_kubectl() {
    let s = Server::start();
    let snap = seeds_dir().join("004-01-virtualmachinesnapshot-snap-larry.yaml");
    let out = ok(s.vmsnap(&["apply", "-f", snap.to_str().unwrap()]));
    assert_eq!(
        out.trim(),
        "virtualmachinesnapshot.snapshot.kubevirt.io/snap-larry created"
    );
    let out = ok(s.vmsnap(&["apply", "-f", snap.to_str().unwrap()]));
    assert_eq!(
        out.trim(),
        "virtualmachinesnapshot.snapshot.kubevirt.io/snap-larry unchanged"
    );

    let table = ok(s.vmsnap(&["get", "vmsnapshot"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("SOURCEKIND") && table.contains("snap-larry"),
        "{table}"
    );

    let yaml = ok(s.vmsnap(&["get", "vmsnapshot", "snap-larry", "-o", "yaml"]));
    let v: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(v["spec"]["failureDeadline"], "1m");
    assert_eq!(v["spec"]["deletionPolicy"], "Delete");

    let json_out = ok(s.vmsnap(&["get", "vmsnapshot", "-o", "json"]));
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["kind"], "VirtualMachineSnapshotList");
    assert_eq!(v["items"].as_array().unwrap().len(), 1);

    // Editing the file and applying again patches only what changed.
    let edited = std::fs::read_to_string(&snap)
        .unwrap()
        .replace("failureDeadline: 1m", "failureDeadline: 2m");
    let f = s.data_dir().join("edited.yaml");
    std::fs::write(&f, edited).unwrap();
    let out = ok(s.vmsnap(&["apply", "-f", f.to_str().unwrap()]));
    assert!(out.contains("configured"), "{out}");
    let v = s
        .client()
        .get(
            api::registry::lookup("vmsnapshot").unwrap(),
            "default",
            "snap-larry",
        )
        .unwrap();
    assert_eq!(v["spec"]["failureDeadline"], "2m");
    assert_eq!(v["metadata"]["generation"], 2);

    // wait follows a condition a controller sets (the KubeVirt object becomes Available).
    let out = ok(s.vmsnap(&[
        "wait",
        "kubevirt",
        "kubevirt",
        "-n",
        "kubevirt",
        "--for",
        "condition=Available",
        "--timeout",
        "10s",
    ]));
    assert!(out.contains("condition met"), "{out}");
    // A condition that never comes times out with an error.
    let out = s.vmsnap(&[
        "wait",
        "vmsnapshot",
        "snap-larry",
        "--for",
        "condition=Failure",
        "--timeout",
        "1s",
    ]);
    assert!(!out.status.success());

    let out = ok(s.vmsnap(&["describe", "kubevirt", "kubevirt", "-n", "kubevirt"]));
    assert!(
        out.contains("Name:         kubevirt") && out.contains("Events:"),
        "{out}"
    );

    let out = ok(s.vmsnap(&["delete", "vmsnapshot", "snap-larry"]));
    assert!(out.contains("deleted"), "{out}");
    let out = s.vmsnap(&["get", "vmsnapshot", "snap-larry"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}

#[test]
fn kubectl_typed_verbs_on_builtin_kinds() {
    let s = Server::start();
    // `kubectl create namespace` posts protobuf; `label` sends a strategic merge patch.
    s.kubectl_ok(&["create", "namespace", "typed"]);
    s.kubectl_ok(&["label", "namespace", "typed", "team=storage"]);
    let out = s.kubectl_ok(&[
        "get",
        "namespace",
        "typed",
        "-o",
        "jsonpath={.metadata.labels.team} {.status.phase}",
    ]);
    assert_eq!(out, "storage Active");
    s.kubectl_ok(&["delete", "namespace", "typed"]);
}

#[test]
fn owner_deletion_cascades_and_namespaces_empty_before_going() {
    let s = Server::start();
    s.create_namespace("gc");
    let c = s.client();
    let snapres = api::registry::lookup("vmsnapshot").unwrap();
    let contentres = api::registry::lookup("vmsnapshotcontent").unwrap();
    let owner = c
        .create(snapres, "gc", &json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": "owner"}, "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}}}))
        .unwrap();
    let dep = json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent",
        "metadata": {"name": "dependent", "ownerReferences": [api::meta::owner_ref(&owner)]},
        "spec": {"source": {}, "volumeBackups": []}
    });
    c.create(contentres, "gc", &dep).unwrap();
    c.delete(snapres, "gc", "owner").unwrap();
    wait_until("the dependent to be collected", || {
        c.get(contentres, "gc", "dependent").is_err()
    });

    // An object with a finalizer stays (Terminating) until the finalizer is removed.
    c.create(snapres, "gc", &json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": "held", "finalizers": ["test/hold"]}, "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}}})).unwrap();
    let ns_res = api::registry::lookup("namespace").unwrap();
    c.delete(ns_res, "", "gc").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let held = c.get(snapres, "gc", "held").unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let ns = c.get(ns_res, "", "gc").unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    // Nothing new may be created in a terminating namespace.
    let e = c.create(snapres, "gc", &json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": "late"}, "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}}})).unwrap_err();
    assert_eq!(e.kind, api::ErrorKind::Forbidden, "{e}");
    c.patch_merge(
        snapres,
        "gc",
        "held",
        &json!({"metadata": {"finalizers": null}}),
    )
    .unwrap();
    wait_until("the namespace to go", || c.get(ns_res, "", "gc").is_err());
}
