//! Issue 2 acceptance: the real kubectl drives a freshly started `vmsnap serve`.

mod common;

use common::{seeds_dir, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Every seed manifest lands in its own namespace so equal names from different seeds coexist.
fn seed_namespace(file: &str) -> String {
    format!("seed{}", &file[..3])
}

fn seed_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(seeds_dir())
        .expect("seeds dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    v.sort();
    v
}

/// Asserts every field of `want` is present with the same value in `got`.
fn assert_subset(want: &Value, got: &Value, path: &str) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                let p = format!("{path}.{k}");
                let gv = g.get(k).unwrap_or_else(|| panic!("{p} missing in {got}"));
                assert_subset(v, gv, &p);
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{path} length");
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                assert_subset(a, b, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(want, got, "{path}"),
    }
}

#[test]
fn seed_manifests_apply_roundtrip_and_reject_placeholder_mac() {
    let s = Server::start();
    for ns in [
        "seed000",
        "seed001",
        "seed002",
        "seed004",
        "golden-vms",
        "source-ns",
    ] {
        s.create_namespace(ns);
    }
    let files = seed_files();
    assert!(
        files.len() >= 12,
        "expected the seed manifests, found {files:?}"
    );
    for f in &files {
        let path = seeds_dir().join(f);
        let ns = seed_namespace(f);
        let out = s.kubectl(&["apply", "-n", &ns, "-f", path.to_str().unwrap()]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        if f.contains("virtualmachineclone-testclone") {
            // Seed 004's clone carries the placeholder MAC "00-11-22": admission must refuse it
            // and say which field and why.
            assert!(
                !out.status.success(),
                "the placeholder MAC was accepted: {stdout}"
            );
            assert!(stderr.contains("is invalid"), "{stderr}");
            assert!(
                stderr.contains("spec.newMacAddresses[interfaceName]"),
                "{stderr}"
            );
            assert!(stderr.contains("00-11-22"), "{stderr}");
            continue;
        }
        assert!(out.status.success(), "apply {f}: {stderr}");
        assert!(
            stdout.trim_end().ends_with(" created"),
            "apply {f}: {stdout}"
        );
        let again = s.kubectl_ok(&["apply", "-n", &ns, "-f", path.to_str().unwrap()]);
        assert!(
            again.trim_end().ends_with(" unchanged"),
            "second apply {f}: {again}"
        );

        // get -o yaml gives back every field of the manifest.
        let text = std::fs::read_to_string(&path).unwrap();
        let manifest: Value = serde_saphyr::from_str(&text).unwrap();
        let kind = manifest["kind"].as_str().unwrap().to_lowercase();
        let name = manifest["metadata"]["name"].as_str().unwrap();
        let yaml = s.kubectl_ok(&["get", "-n", &ns, &kind, name, "-o", "yaml"]);
        let mut got: Value = serde_saphyr::from_str(&yaml).unwrap();
        // The object comes back in the preferred version; the manifest may use the other.
        got["apiVersion"] = manifest["apiVersion"].clone();
        assert_subset(&manifest, &got, "");
    }
    // A clone with a real MAC is accepted.
    let fixed =
        std::fs::read_to_string(seeds_dir().join("004-03-virtualmachineclone-testclone.yaml"))
            .unwrap()
            .replace("\"00-11-22\"", "\"02-00-00-11-22-33\"");
    let out = s.kubectl_stdin(&["apply", "-n", "seed004", "-f", "-"], Some(&fixed));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn get_table_patch_wait_delete_describe() {
    let s = Server::start();
    s.create_namespace("lab");
    let snap = seeds_dir().join("002-01-virtualmachinesnapshot-snap-larry.yaml");
    s.kubectl_ok(&["apply", "-n", "lab", "-f", snap.to_str().unwrap()]);

    let table = s.kubectl_ok(&["get", "-n", "lab", "vmsnapshot"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SOURCEKIND",
            "SOURCENAME",
            "PHASE",
            "READYTOUSE",
            "CREATIONTIME",
            "ERROR",
            "AGE"
        ]
    );
    assert!(
        table.contains("snap-larry") && table.contains("VirtualMachine") && table.contains("larry"),
        "{table}"
    );

    // Short names, plural and kind all resolve, and -A uses the cluster-wide path.
    let all = s.kubectl_ok(&["get", "vmsnapshots", "-A"]);
    assert!(
        all.lines().next().unwrap().starts_with("NAMESPACE"),
        "{all}"
    );

    s.kubectl_ok(&[
        "patch",
        "-n",
        "lab",
        "vmsnapshot",
        "snap-larry",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"gold"}}}"#,
    ]);
    let labels = s.kubectl_ok(&[
        "get",
        "-n",
        "lab",
        "vmsnapshot",
        "snap-larry",
        "-o",
        "jsonpath={.metadata.labels.tier}",
    ]);
    assert_eq!(labels, "gold");
    let sel = s.kubectl_ok(&[
        "get",
        "-n",
        "lab",
        "vmsnapshot",
        "-l",
        "tier=gold",
        "-o",
        "name",
    ]);
    assert_eq!(
        sel.trim(),
        "virtualmachinesnapshot.snapshot.kubevirt.io/snap-larry"
    );

    // Strategic merge patch (kubectl's default for patch) is refused with 415, clearly.
    let out = s.kubectl(&[
        "patch",
        "-n",
        "lab",
        "vmsnapshot",
        "snap-larry",
        "-p",
        r#"{"metadata":{"labels":{"a":"b"}}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("merge"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // kubectl wait returns as soon as the condition is set through the status subresource.
    let waiter = {
        let kc = s.kubeconfig();
        let cache = s.data_dir().join("kubectl-cache-wait");
        std::thread::spawn(move || {
            let start = Instant::now();
            let out = std::process::Command::new("kubectl")
                .args([
                    "--cache-dir",
                    cache.to_str().unwrap(),
                    "wait",
                    "-n",
                    "lab",
                    "vmsnapshot",
                    "snap-larry",
                    "--for",
                    "condition=Ready",
                    "--timeout=5s",
                ])
                .env("KUBECONFIG", kc)
                .output()
                .unwrap();
            (out, start.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    let c = s.client();
    let res = api::registry::lookup("vmsnapshot").unwrap();
    let set_at = Instant::now();
    for _ in 0..5 {
        let mut cur = c.get(res, "lab", "snap-larry").unwrap();
        cur["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "reason": "Test", "message": "set by the test", "lastTransitionTime": api::meta::now_rfc3339(), "lastProbeTime": null}]);
        cur["status"]["readyToUse"] = json!(true);
        if c.update_status(res, "lab", &cur).is_ok() {
            break;
        }
    }
    let (out, elapsed) = waiter.join().unwrap();
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
    assert!(elapsed < Duration::from_secs(5), "wait took {elapsed:?}");
    assert!(
        set_at.elapsed() < Duration::from_secs(3),
        "wait returned long after the condition was set"
    );

    // The seed's feature-gate command against the KubeVirt object vmsnap creates at start.
    let out = s.kubectl_ok(&[
        "patch",
        "-n",
        "kubevirt",
        "kubevirt",
        "kubevirt",
        "-p",
        r#"{"spec":{"configuration":{"developerConfiguration":{"featureGates":["Snapshot"]}}}}"#,
        "-o",
        "json",
        "--type",
        "merge",
    ]);
    let kv: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        kv["spec"]["configuration"]["developerConfiguration"]["featureGates"],
        json!(["Snapshot"])
    );

    // describe shows the events a controller recorded about the object.
    let start = Instant::now();
    loop {
        let d = s.kubectl_ok(&["describe", "-n", "kubevirt", "kubevirt", "kubevirt"]);
        if d.contains("FeatureGatesChanged") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no event in describe:\n{d}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = s.kubectl_ok(&["delete", "-n", "lab", "-f", snap.to_str().unwrap()]);
    assert!(out.contains("deleted"), "{out}");
    let out = s.kubectl(&["get", "-n", "lab", "vmsnapshot", "snap-larry"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}

fn status_of(c: &client::Client, method: &str, path: &str, ct: &str, body: &[u8]) -> (u16, Value) {
    let (code, bytes) = c.raw(method, path, Some((ct, body)), None).unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[test]
fn bad_input_is_rejected_with_status_and_changes_nothing() {
    let s = Server::start();
    let c = s.client();
    let snaps = "/apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots";
    let good = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": "ok"}, "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}}});
    let (code, _) = status_of(
        &c,
        "POST",
        snaps,
        "application/json",
        good.to_string().as_bytes(),
    );
    assert_eq!(code, 201);
    // Controllers keep writing elsewhere (status, events, pool figures), so "unchanged" is
    // judged on what the requests targeted: every VirtualMachineSnapshot, once the snapshot
    // controller has settled the one that exists.
    let snapshots_state = || -> Vec<(String, String)> {
        let v: Value = s
            .client()
            .request(
                "GET",
                "/apis/snapshot.kubevirt.io/v1beta1/virtualmachinesnapshots",
                None,
            )
            .unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    };
    let mut before = snapshots_state();
    let settle = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = snapshots_state();
        if now == before {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(20),
            "the snapshot never settled"
        );
        before = now;
    }

    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "malformed JSON",
            "{\"apiVersion\": ".into(),
            "application/json",
            400,
            "BadRequest",
        ),
        (
            "malformed YAML",
            "apiVersion: [unclosed\n  kind: : :".into(),
            "application/yaml",
            400,
            "BadRequest",
        ),
        (
            "unknown field",
            {
                let mut b = good.clone();
                b["metadata"]["name"] = json!("unknown-field");
                b["spec"]["bogus"] = json!(1);
                b.to_string()
            },
            "application/json",
            400,
            "BadRequest",
        ),
        (
            "path-like name",
            {
                let mut b = good.clone();
                b["metadata"]["name"] = json!("../../etc");
                b.to_string()
            },
            "application/json",
            422,
            "Invalid",
        ),
        (
            "name too long",
            {
                let mut b = good.clone();
                b["metadata"]["name"] = json!("a".repeat(254));
                b.to_string()
            },
            "application/json",
            422,
            "Invalid",
        ),
    ];
    for (what, body, ct, want_code, want_reason) in cases {
        let path = format!("{snaps}?fieldValidation=Strict");
        let (code, st) = status_of(&c, "POST", &path, ct, body.as_bytes());
        assert_eq!(code, want_code, "{what}: {st}");
        assert_eq!(st["kind"], "Status", "{what}");
        assert_eq!(st["reason"], want_reason, "{what}: {st}");
        assert!(
            st["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        if what == "unknown field" {
            assert!(
                st["message"].as_str().unwrap().contains("spec.bogus"),
                "{st}"
            );
        }
        if want_code == 422 {
            assert_eq!(st["details"]["causes"][0]["field"], "metadata.name", "{st}");
        }
    }
    // A body over the limit.
    let mut big = good.clone();
    big["metadata"]["name"] = json!("big");
    big["metadata"]["annotations"] = json!({"x": "y".repeat(4 * 1024 * 1024)});
    let (code, st) = status_of(
        &c,
        "POST",
        snaps,
        "application/json",
        big.to_string().as_bytes(),
    );
    assert_eq!(code, 413, "{st}");
    assert_eq!(st["kind"], "Status");

    // A stale resourceVersion on PUT is a 409 Conflict.
    let res = api::registry::lookup("vmsnapshot").unwrap();
    let mut cur = c.get(res, "default", "ok").unwrap();
    cur["metadata"]["resourceVersion"] = json!("1");
    cur["metadata"]["labels"] = json!({"changed": "yes"});
    let e = c.replace(res, "default", &cur).unwrap_err();
    assert_eq!(e.kind, api::ErrorKind::Conflict, "{e}");

    // Missing and invalid tokens are 401; health endpoints stay open.
    let anon = client::Client::new(
        &c.server,
        Some(&std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap()),
        "",
        "default",
    )
    .unwrap();
    let (code, body) = anon.raw("GET", snaps, None, None).unwrap();
    assert_eq!(code, 401);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["reason"],
        "Unauthorized"
    );
    let wrong = client::Client::new(
        &c.server,
        Some(&std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap()),
        "not-the-token",
        "default",
    )
    .unwrap();
    let (code, _) = wrong
        .raw(
            "POST",
            snaps,
            Some(("application/json", good.to_string().as_bytes())),
            None,
        )
        .unwrap();
    assert_eq!(code, 401);
    assert_eq!(anon.raw("GET", "/healthz", None, None).unwrap().0, 200);

    // Nothing above changed the store.
    assert_eq!(
        snapshots_state(),
        before,
        "a rejected request changed the store"
    );
    let list = c.list(res, Some("default"), None).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ok"]);
}

#[test]
fn acknowledged_writes_survive_sigkill_and_watch_resumes() {
    // A short event history, so that the test can also push a revision out of it.
    let mut s = Server::start_with(&["--retain-events", "400"]);
    let c = s.client();
    let res = api::registry::lookup("vmsnapshot").unwrap();
    let from = s.revision();
    let mut names = Vec::new();
    for i in 0..50 {
        let name = format!("durable-{i}");
        let obj = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": name, "labels": {"batch": "one"}}, "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}}});
        c.create(res, "default", &obj).expect("create acknowledged");
        names.push(name);
    }
    // Kill right after the last acknowledgement: no graceful shutdown, no flush.
    s.kill9();
    s.spawn();
    let c = s.client();
    let list = c.list(res, Some("default"), Some("batch=one")).unwrap();
    let mut got: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    names.sort();
    assert_eq!(got, names, "acknowledged objects were lost");

    // A watch from a revision before the restart replays exactly the missed creates.
    let mut seen = Vec::new();
    let start = Instant::now();
    c.watch(res, Some("default"), None, &from.to_string(), 3, |ev| {
        if ev["type"] == "ADDED" {
            seen.push(
                ev["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        seen.len() < names.len()
    })
    .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "replay did not arrive promptly"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, names, "the replay differs from the missed events");
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was replayed twice");

    // Once the history moves past `from`, resuming from it gets 410 Expired.
    for i in 0..500 {
        let obj = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": format!("later-{i}")}, "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}}});
        c.create(res, "default", &obj).unwrap();
    }
    let e = c
        .watch(res, Some("default"), None, &from.to_string(), 2, |_| true)
        .unwrap_err();
    assert!(
        e.is(api::ErrorKind::Expired) || e.message.contains("too old"),
        "{e}"
    );
}
