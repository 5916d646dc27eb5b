//! Issue 5, acceptance 3: a snapshot whose storage step is slow (test hook) fails at its
//! deadline with the guest thawed and nothing left behind; deleting a snapshot while the guest
//! is frozen thaws it at once; Retain keeps the content of a deleted snapshot.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const NS: &str = "default";

fn assert_unlocked(h: &VmHost, vm: &str) {
    h.wait_for("VM unlocked", Duration::from_secs(10), || {
        let v = h.vm(NS, vm);
        let fin = v["metadata"]["finalizers"].to_string();
        (v["status"]["snapshotInProgress"].is_null()
            && !fin.contains("snapshot.kubevirt.io/snapshot-source-protection"))
        .then_some(())
    });
}

fn pools(h: &VmHost) -> Vec<std::path::PathBuf> {
    vec![h.data_dir().join("pools/default")]
}

#[test]
fn vm_snapshot_deadline_and_deletion_mid_freeze_thaw_the_guest() {
    let h = VmHost::start_with_env(&[("VMSNAP_TEST_SNAPSHOT_DELAY_MS", "6000")]);
    snap_lab_vm(&h, NS, "dl", "Always", None, None);

    // Deadline 2s with a 6s storage step: Failed, thawed, no content, unlocked.
    let t = Instant::now();
    snap_create(&h, NS, "dl-1", "dl", json!({"failureDeadline": "2s"}));
    let s = snap_wait_done(&h, NS, "dl-1", Duration::from_secs(30));
    let took = t.elapsed();
    assert_eq!(s["status"]["phase"], "Failed", "{s}");
    assert!(took < Duration::from_secs(5), "failed after {took:?}");
    let failure = s["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failure")
        .cloned()
        .unwrap_or_else(|| panic!("no Failure condition: {s}"));
    assert_eq!(failure["status"], "True");
    assert_eq!(
        failure["message"], "snapshot deadline exceeded",
        "{failure}"
    );
    assert_eq!(
        s["status"]["error"]["message"],
        "snapshot deadline exceeded"
    );
    assert_eq!(s["status"]["readyToUse"], false);
    assert_eq!(api::condition(&s, "Ready"), Some(false));
    assert_eq!(snap_freeze_status(&h, NS, "dl"), "thawed");
    let (code, _, _) = h.sh(NS, "dl", "echo w > /data/w && sync");
    assert_eq!(code, 0, "guest not writable after the deadline");
    let cname = format!(
        "vmsnapshot-content-{}",
        s["metadata"]["uid"].as_str().unwrap()
    );
    h.wait_for("content deleted", Duration::from_secs(10), || {
        snap_try_get(&h, "vmsnapshotcontent", NS, &cname)
            .is_none()
            .then_some(())
    });
    assert_unlocked(&h, "dl");
    h.wait_for("no storage snapshot left", Duration::from_secs(10), || {
        (snap_list(&h, "volumesnapshot", Some(NS)).is_empty()
            && snap_orphans(&h, &pools(&h)).is_empty())
        .then_some(())
    });
    let snaps_dir = h.data_dir().join("pools/default/snapshots");
    for d in std::fs::read_dir(&snaps_dir).unwrap().flatten() {
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "storage snapshots left: {left:?}");
    }
    // The failed snapshot object stays until deleted.
    assert!(snap_try_get(&h, "vmsnapshot", NS, "dl-1").is_some());

    // Deleting a snapshot while the guest is frozen thaws it promptly.
    snap_create(&h, NS, "dl-2", "dl", json!({"failureDeadline": "0s"}));
    h.wait_for("guest frozen", Duration::from_secs(30), || {
        (snap_freeze_status(&h, NS, "dl") == "frozen").then_some(())
    });
    let t = Instant::now();
    h.client()
        .delete(snap_res("vmsnapshot"), NS, "dl-2")
        .expect("delete");
    h.wait_for("guest thawed", Duration::from_secs(10), || {
        (snap_freeze_status(&h, NS, "dl") == "thawed").then_some(())
    });
    let thaw = t.elapsed();
    assert!(
        thaw < Duration::from_secs(2),
        "thawed {thaw:?} after the deletion"
    );
    eprintln!("thawed {thaw:?} after the deletion");
    h.wait_for("snapshot gone", Duration::from_secs(10), || {
        snap_try_get(&h, "vmsnapshot", NS, "dl-2")
            .is_none()
            .then_some(())
    });
    assert_unlocked(&h, "dl");
    h.wait_for("nothing left", Duration::from_secs(10), || {
        (snap_list(&h, "vmsnapshotcontent", Some(NS)).is_empty()
            && snap_list(&h, "volumesnapshot", Some(NS)).is_empty()
            && snap_orphans(&h, &pools(&h)).is_empty())
        .then_some(())
    });

    // Retain: the content and its volume snapshots outlive the snapshot.
    snap_create(&h, NS, "dl-3", "dl", json!({"deletionPolicy": "Retain"}));
    let s = snap_wait_done(&h, NS, "dl-3", Duration::from_secs(60));
    assert_eq!(s["status"]["phase"], "Succeeded", "{s}");
    let cname = s["status"]["virtualMachineSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    h.client()
        .delete(snap_res("vmsnapshot"), NS, "dl-3")
        .expect("delete");
    h.wait_for("snapshot gone", Duration::from_secs(10), || {
        snap_try_get(&h, "vmsnapshot", NS, "dl-3")
            .is_none()
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let c = snap_get(&h, "vmsnapshotcontent", NS, &cname);
    assert!(c["metadata"]["deletionTimestamp"].is_null(), "{c}");
    for b in c["spec"]["volumeBackups"].as_array().unwrap() {
        let vs = snap_get(
            &h,
            "volumesnapshot",
            NS,
            b["volumeSnapshotName"].as_str().unwrap(),
        );
        assert_eq!(vs["status"]["readyToUse"], true, "{vs}");
    }
    assert_eq!(snap_freeze_status(&h, NS, "dl"), "thawed");
}
