//! Issue 6: the clone's life cycle around its edges, on one server whose storage snapshot
//! step is slowed (test hook) so that "midway" is a real window: a missing source waits and
//! proceeds, cancelling midway leaves nothing, a deleted snapshot fails the clone, a snapshot
//! source is kept, and sealing gives the clone its own machine-id.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const NS: &str = "default";
const MACHINE_ID: &[u8] = b"aaaabbbbccccddddeeeeffff00001111\n";

fn create_clone(h: &VmHost, name: &str, source: Value, extra: Value) {
    let mut spec = json!({"source": source});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let obj = json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
        "metadata": {"name": name}, "spec": spec});
    h.client()
        .create(api::registry::lookup("vmclone").unwrap(), NS, &obj)
        .unwrap_or_else(|e| panic!("create clone {name}: {e}"));
}

fn vm_source(name: &str) -> Value {
    json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name})
}

fn snap_source(name: &str) -> Value {
    json!({"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot", "name": name})
}

fn wait_phase(h: &VmHost, name: &str, phase: &str) -> Value {
    h.wait_for(
        &format!("clone {name} in {phase}"),
        Duration::from_secs(60),
        || clone_try_get(h, NS, name).filter(|c| c["status"]["phase"] == phase),
    )
}

fn claims_of(vm: &Value) -> Vec<String> {
    vm["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            v["persistentVolumeClaim"]["claimName"]
                .as_str()
                .or(v["dataVolume"]["name"].as_str())
                .map(String::from)
        })
        .collect()
}

fn root_image(h: &VmHost, vm: &str) -> PathBuf {
    snap_claim_image(h, NS, &claims_of(&h.vm(NS, vm))[0])
}

/// Every object kind a clone can make, by name, plus the claims `vmsnap storage usage`
/// accounts for.
fn inventory(h: &VmHost) -> Vec<String> {
    let mut out = Vec::new();
    for kind in [
        "vm",
        "vmsnapshot",
        "vmsnapshotcontent",
        "vmrestore",
        "volumesnapshot",
        "volumesnapshotcontent",
        "pvc",
        "dv",
    ] {
        let mut names = clone_names(h, kind, NS);
        if kind == "volumesnapshotcontent" {
            names = snap_list(h, kind, None)
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
        }
        names.sort();
        out.extend(names.into_iter().map(|n| format!("{kind}/{n}")));
    }
    let usage: Value =
        serde_json::from_str(&clone_vmsnap_ok(h, &["storage", "usage", "-o", "json"])).unwrap();
    for v in usage["volumes"].as_array().unwrap() {
        out.push(format!(
            "usage/{}={}",
            v["claim"].as_str().unwrap(),
            v["volume"].as_str().unwrap_or("")
        ));
    }
    out
}

fn assert_failed_with(h: &VmHost, name: &str, reason: &str) -> Value {
    let c = clone_wait_done(h, NS, name, Duration::from_secs(60));
    assert_eq!(c["status"]["phase"], "Failed", "{c}");
    let (status, r, msg) = clone_condition(&c, "Ready").unwrap();
    assert_eq!((status.as_str(), r.as_str()), ("False", reason), "{c}");
    assert!(!msg.is_empty());
    c
}

#[test]
fn vm_clone_lifecycle_pending_cancel_snapshot_source_deleted_snapshot_and_seal() {
    let t0 = Instant::now();
    let h = VmHost::start_with_env(&[("VMSNAP_TEST_SNAPSHOT_DELAY_MS", "3000")]);
    let pools = vec![h.data_dir().join("pools/default")];

    // A missing source: pending with SourceDoesNotExist, proceeding once it appears.
    create_clone(
        &h,
        "early",
        vm_source("later"),
        json!({"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "later-clone"}}),
    );
    let c = h.wait_for("SourceDoesNotExist", Duration::from_secs(20), || {
        clone_try_get(&h, NS, "early")
            .filter(|c| clone_condition(c, "Ready").is_some_and(|x| x.1 == "SourceDoesNotExist"))
    });
    std::thread::sleep(Duration::from_secs(3));
    let c2 = clone_try_get(&h, NS, "early").unwrap();
    assert!(
        c2["status"]["phase"].as_str().unwrap_or("").is_empty(),
        "a missing source must leave the clone pending: {c2}"
    );
    assert_eq!(
        clone_condition(&c, "Progressing").unwrap().1,
        "SourceDoesNotExist"
    );
    h.apply_json(NS, &json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": "later-disk"},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "64Mi"}}}}
    }));
    h.apply_json(
        NS,
        &guest_vm(
            "later",
            "Halted",
            json!({"name": "rootdisk", "dataVolume": {"name": "later-disk"}}),
        ),
    );
    let c = clone_wait_done(&h, NS, "early", Duration::from_secs(60));
    assert_eq!(c["status"]["phase"], "Succeeded", "{c}\n{}", h.log());
    assert!(h.vm(NS, "later-clone")["spec"]["template"].is_object());

    // The main source: machine-id and data written by the guest, then stopped.
    clone_lab_vm(&h, NS, "msrc", "Always", None, json!({}), json!({}));
    let (code, _, err) = h.sh(
        NS,
        "msrc",
        &format!(
            "printf '{}' > /etc/machine-id && dd if=/dev/urandom of=/data/db bs=1M count=2 2>/dev/null && sync",
            String::from_utf8_lossy(MACHINE_ID).replace('\n', "\\n")
        ),
    );
    assert_eq!(code, 0, "{err}");
    clone_stop(&h, NS, "msrc");
    let src_claims = claims_of(&h.vm(NS, "msrc"));
    let src_root = snap_claim_image(&h, NS, &src_claims[0]);
    let src_data_sum = clone_md5(&snap_claim_image(&h, NS, &src_claims[1]));
    assert_eq!(
        snap_debugfs_cat(&src_root, "/etc/machine-id").as_deref(),
        Some(MACHINE_ID)
    );

    // Cancel midway: delete the clone while its temporary snapshot is in progress.
    let before = inventory(&h);
    assert!(snap_orphans(&h, &pools).is_empty());
    create_clone(&h, "cancel-me", vm_source("msrc"), json!({}));
    let c = wait_phase(&h, "cancel-me", "SnapshotInProgress");
    let uid = c["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(
        snap_try_get(&h, "vmsnapshot", NS, &format!("tmp-snapshot-{uid}")).is_some(),
        "no temporary snapshot to cancel"
    );
    h.kubectl_ok(&["delete", "vmclone", "cancel-me", "--wait=false"]);
    h.wait_for("cancelled clone gone", Duration::from_secs(60), || {
        clone_try_get(&h, NS, "cancel-me").is_none().then_some(())
    });
    h.wait_for(
        "inventory back to where it was",
        Duration::from_secs(30),
        || (inventory(&h) == before).then_some(()),
    );
    let orphans = snap_orphans(&h, &pools);
    assert!(orphans.is_empty(), "{orphans:?}");

    // The temporary snapshot deleted midway: Failed with SnapshotDeleted, nothing left.
    create_clone(&h, "lose-tmp", vm_source("msrc"), json!({}));
    let c = wait_phase(&h, "lose-tmp", "SnapshotInProgress");
    let uid = c["metadata"]["uid"].as_str().unwrap().to_string();
    h.kubectl_ok(&[
        "delete",
        "vmsnapshot",
        &format!("tmp-snapshot-{uid}"),
        "--wait=false",
    ]);
    assert_failed_with(&h, "lose-tmp", "SnapshotDeleted");
    h.kubectl_ok(&["delete", "vmclone", "lose-tmp"]);
    h.wait_for(
        "inventory back after a lost snapshot",
        Duration::from_secs(30),
        || (inventory(&h) == before).then_some(()),
    );

    // A snapshot source deleted midway: SnapshotDeleted.
    snap_create(&h, NS, "s-gone", "msrc", json!({}));
    create_clone(&h, "lose-src", snap_source("s-gone"), json!({}));
    wait_phase(&h, "lose-src", "SnapshotInProgress");
    h.kubectl_ok(&["delete", "vmsnapshot", "s-gone", "--wait=false"]);
    let c = assert_failed_with(&h, "lose-src", "SnapshotDeleted");
    assert!(c["status"]["targetName"].is_string());
    assert!(h
        .client()
        .get(
            api::registry::lookup("vm").unwrap(),
            NS,
            c["status"]["targetName"].as_str().unwrap()
        )
        .is_err());

    // From a snapshot: the snapshot is kept and stays Ready; without sealing the clone has
    // the source's machine-id and data.
    snap_create(&h, NS, "msnap", "msrc", json!({}));
    let s = snap_wait_done(&h, NS, "msnap", Duration::from_secs(60));
    assert_eq!(s["status"]["phase"], "Succeeded", "{s}");
    let out = clone_vmsnap_ok(
        &h,
        &[
            "clone",
            "msrc",
            "--from-snapshot",
            "msnap",
            "--target",
            "fsnap",
            "--name",
            "c-fsnap",
            "--wait",
        ],
    );
    assert!(out.contains("snapshot strategy"), "{out}");
    let c = clone_try_get(&h, NS, "c-fsnap").unwrap();
    assert_eq!(c["status"]["phase"], "Succeeded");
    assert_eq!(c["status"]["snapshotName"], "msnap");
    let s = snap_get(&h, "vmsnapshot", NS, "msnap");
    assert_eq!(s["status"]["readyToUse"], true, "{s}");
    assert_eq!(api::condition(&s, "Ready"), Some(true));
    assert!(!meta_deleting(&s));
    let f_claims = claims_of(&h.vm(NS, "fsnap"));
    assert_eq!(
        snap_debugfs_cat(&snap_claim_image(&h, NS, &f_claims[0]), "/etc/machine-id").as_deref(),
        Some(MACHINE_ID)
    );
    assert_eq!(
        clone_md5(&snap_claim_image(&h, NS, &f_claims[1])),
        src_data_sum
    );

    // Sealed clone (CLI --seal): a new machine-id; the source's is untouched.
    let out = clone_vmsnap_ok(
        &h,
        &[
            "clone", "msrc", "--target", "sealed", "--name", "c-sealed", "--seal", "--wait",
        ],
    );
    assert!(out.contains("sealed:"), "{out}");
    let c = clone_try_get(&h, NS, "c-sealed").unwrap();
    assert_eq!(c["metadata"]["annotations"]["clone.vmsnap.io/seal"], "true");
    let report = c["status"]["sealed"].as_str().unwrap();
    assert!(report.contains("machine-id"), "{c}");
    // The report names the tool; without virt-sysprep it says so rather than pretending.
    let sysprep = std::process::Command::new("sh")
        .args(["-c", "command -v virt-sysprep"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !sysprep {
        assert!(report.contains("virt-sysprep is not installed"), "{report}");
    }
    let sealed_id =
        snap_debugfs_cat(&root_image(&h, "sealed"), "/etc/machine-id").expect("machine-id");
    assert_ne!(sealed_id, MACHINE_ID);
    assert_eq!(
        sealed_id.len(),
        33,
        "{:?}",
        String::from_utf8_lossy(&sealed_id)
    );
    assert!(sealed_id[..32].iter().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        snap_debugfs_cat(&src_root, "/etc/machine-id").as_deref(),
        Some(MACHINE_ID)
    );
    assert_eq!(h.vm(NS, "sealed")["spec"]["runStrategy"], "Halted");

    // `vmsnap seal` on the stopped source.
    let out = clone_vmsnap_ok(&h, &["seal", "msrc"]);
    assert!(out.contains("machine-id"), "{out}");
    let resealed = snap_debugfs_cat(&src_root, "/etc/machine-id").expect("machine-id");
    assert_ne!(resealed, MACHINE_ID);
    assert_ne!(resealed, sealed_id);

    let orphans = snap_orphans(&h, &pools);
    assert!(orphans.is_empty(), "{orphans:?}");
    eprintln!("timings: total {:?}", t0.elapsed());
}

fn meta_deleting(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}
