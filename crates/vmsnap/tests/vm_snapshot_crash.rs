//! Issue 5, acceptance 4: SIGKILL `vmsnap serve` at each step of a snapshot and of a restore
//! (the test hook parks the reconcile there), restart it without the hook, and check that the
//! guest is thawed within 5 s, that no snapshot is Ready without all its data, that the
//! operation completes, and that no orphan volume or storage snapshot remains.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NS: &str = "default";
const SNAPSHOT_STEPS: [&str; 7] = [
    "locked",
    "content-stored",
    "content-created",
    "before-quiesce",
    "quiesced",
    "thawed",
    "published",
];
const RESTORE_STEPS: [&str; 3] = [
    "restore-locked",
    "restore-claims-created",
    "restore-vm-updated",
];

fn claim_of(h: &VmHost, vm: &str, volume: &str) -> String {
    let v = h.vm(NS, vm);
    v["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == volume)
        .and_then(|x| {
            x["persistentVolumeClaim"]["claimName"]
                .as_str()
                .or(x["dataVolume"]["name"].as_str())
        })
        .unwrap_or_else(|| panic!("no volume {volume} in {v}"))
        .to_string()
}

fn md5(bytes: &[u8]) -> String {
    let mut c = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn region(img: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// Restarts serve with the pause hook at `step`, runs `start_op`, waits until the reconcile is
/// parked there, then SIGKILLs serve and starts it again without the hook.
fn crash_at(
    h: &mut VmHost,
    step: &str,
    start_op: impl FnOnce(&VmHost),
    while_parked: impl FnOnce(&VmHost),
) {
    let marker = h.data_dir().join("pause-marker");
    let _ = std::fs::remove_file(&marker);
    h.kill9();
    let m = marker.to_string_lossy().into_owned();
    h.spawn_with_env(&[
        ("VMSNAP_TEST_PAUSE_AT", step),
        ("VMSNAP_TEST_PAUSE_MARKER", &m),
    ]);
    start_op(h);
    h.wait_for(
        &format!("parked at {step}"),
        Duration::from_secs(60),
        || (std::fs::read_to_string(&marker).ok()? == step).then_some(()),
    );
    while_parked(h);
    h.kill9();
    h.spawn();
}

fn pools(h: &VmHost) -> Vec<PathBuf> {
    vec![h.data_dir().join("pools/default")]
}

/// A Ready snapshot has every included volume as a ready VolumeSnapshot over an existing
/// storage snapshot.
fn assert_complete_data(h: &VmHost, s: &Value) {
    let content = snap_get(
        h,
        "vmsnapshotcontent",
        NS,
        s["status"]["virtualMachineSnapshotContentName"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(content["status"]["readyToUse"], true, "{content}");
    let included = s["status"]["snapshotVolumes"]["includedVolumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(included.len(), 2, "{s}");
    for b in content["spec"]["volumeBackups"].as_array().unwrap() {
        let vs = b["volumeSnapshotName"]
            .as_str()
            .unwrap_or_else(|| panic!("{b}"));
        let vso = snap_get(h, "volumesnapshot", NS, vs);
        assert_eq!(vso["status"]["readyToUse"], true, "{vso}");
        let vsc = snap_get(
            h,
            "volumesnapshotcontent",
            "",
            vso["status"]["boundVolumeSnapshotContentName"]
                .as_str()
                .unwrap(),
        );
        let handle = vsc["status"]["snapshotHandle"].as_str().unwrap();
        let (vol, snap) = handle.split_once('@').unwrap();
        let dir = h
            .data_dir()
            .join("pools/default/snapshots")
            .join(vol)
            .join(snap);
        assert!(dir.join("disk.img").is_file(), "{} missing", dir.display());
    }
}

#[test]
fn vm_snapshot_and_restore_survive_sigkill_at_every_step() {
    let mut h = VmHost::start();
    snap_lab_vm(&h, NS, "cr", "Always", None, None);
    let (code, sum, _) = h.sh(
        NS,
        "cr",
        "dd if=/dev/urandom of=/data/db bs=1M count=4 2>/dev/null && sync && md5sum /data/db | cut -d' ' -f1",
    );
    assert_eq!(code, 0);
    let sum = sum.trim().to_string();

    for step in SNAPSHOT_STEPS {
        let name = format!("cr-{step}");
        crash_at(
            &mut h,
            step,
            |h| snap_create(h, NS, &name, "cr", json!({})),
            |h| {
                if step == "quiesced" {
                    assert_eq!(
                        snap_freeze_status(h, NS, "cr"),
                        "frozen",
                        "killed mid-freeze"
                    );
                }
            },
        );
        let t = Instant::now();
        h.wait_for("guest thawed", Duration::from_secs(5), || {
            (snap_freeze_status(&h, NS, "cr") == "thawed").then_some(())
        });
        let thawed = t.elapsed();
        let s = snap_wait_done(&h, NS, &name, Duration::from_secs(60));
        assert_eq!(s["status"]["phase"], "Succeeded", "{step}: {s}");
        assert_complete_data(&h, &s);
        let vm = h.vm(NS, "cr");
        assert!(vm["status"]["snapshotInProgress"].is_null(), "{step}: {vm}");
        let (code, _, _) = h.sh(NS, "cr", "echo ok > /data/ok && sync");
        assert_eq!(code, 0, "{step}: guest not writable");
        eprintln!("snapshot killed at {step}: thawed {thawed:?} after the restart");
    }
    // Every snapshot holds the data: restore each into a new VM and read the file offline.
    for step in SNAPSHOT_STEPS {
        let r = format!("chk-{step}");
        snap_restore(
            &h,
            NS,
            &r,
            &format!("cr-{step}"),
            &format!("chk-{step}"),
            json!({}),
        );
        let st = snap_wait_restore(&h, NS, &r, Duration::from_secs(60));
        assert_eq!(st["status"]["complete"], true, "{st}");
        let img = snap_claim_image(&h, NS, &claim_of(&h, &format!("chk-{step}"), "datadisk"));
        let db = snap_debugfs_cat(&img, "/db").unwrap_or_else(|| panic!("{step}: no /db"));
        assert_eq!(md5(&db), sum, "{step}: data");
        let (code, out) = snap_fsck(&img);
        assert_eq!(code, 0, "{step}: {out}");
    }

    // Restores of a stopped VM, killed at each step.
    h.apply_json(NS, &json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "cold-disk"},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "64Mi"}}}}
    }));
    h.apply_json(
        NS,
        &guest_vm(
            "cold",
            "Halted",
            json!({"name": "rootdisk", "dataVolume": {"name": "cold-disk"}}),
        ),
    );
    h.wait_for("cold disk bound", Duration::from_secs(30), || {
        snap_try_get(&h, "pvc", NS, "cold-disk")
            .filter(|p| p["status"]["phase"] == "Bound")
            .map(|_| ())
    });
    let img = snap_claim_image(&h, NS, "cold-disk");
    let mut data = vec![0u8; 1 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    snap_create(&h, NS, "cold-1", "cold", json!({}));
    let s = snap_wait_done(&h, NS, "cold-1", Duration::from_secs(30));
    assert_eq!(s["status"]["phase"], "Succeeded", "{s}");
    for step in RESTORE_STEPS {
        let before = claim_of(&h, "cold", "rootdisk");
        // Scribble over the live disk so the restore is visible.
        {
            let img = snap_claim_image(&h, NS, &before);
            let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            f.seek(SeekFrom::Start(1 << 20)).unwrap();
            f.write_all(&vec![0x5a; 1 << 20]).unwrap();
        }
        let name = format!("rc-{step}");
        crash_at(
            &mut h,
            step,
            |h| snap_restore(h, NS, &name, "cold-1", "cold", json!({})),
            |h| {
                // While the restore holds the VM, it cannot be started.
                let out = h.vmsnap(&["start", "cold"]);
                assert!(
                    !out.status.success(),
                    "{step}: the VM started during a restore"
                );
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("restore"), "{step}: {err}");
            },
        );
        let r = snap_wait_restore(&h, NS, &name, Duration::from_secs(60));
        assert_eq!(r["status"]["complete"], true, "{step}: {r}");
        let now = claim_of(&h, "cold", "rootdisk");
        assert_ne!(now, before, "{step}");
        assert!(
            region(&snap_claim_image(&h, NS, &now)) == data,
            "{step}: restored data"
        );
        let vm = h.vm(NS, "cold");
        assert!(vm["status"]["restoreInProgress"].is_null(), "{step}: {vm}");
        h.wait_for("replaced claim reclaimed", Duration::from_secs(30), || {
            snap_try_get(&h, "pvc", NS, &before).is_none().then_some(())
        });
    }

    // Nothing on disk that the API does not account for.
    let start = Instant::now();
    loop {
        let o = snap_orphans(&h, &pools(&h));
        if o.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "orphans: {o:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Snapshots that no longer exist leave no storage snapshot behind.
    let all: Vec<String> = SNAPSHOT_STEPS.iter().map(|s| format!("cr-{s}")).collect();
    for n in &all {
        h.client().delete(snap_res("vmsnapshot"), NS, n).unwrap();
    }
    let start = Instant::now();
    loop {
        let o = snap_orphans(&h, &pools(&h));
        let vs = snap_list(&h, "volumesnapshot", Some(NS)).len();
        if o.is_empty() && vs == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "orphans: {o:?}, {vs} volume snapshots (want only cold-1's)"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
