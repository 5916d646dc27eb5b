//! Issue 5, acceptance 3: rollback to an older snapshot while newer ones stay restorable, on
//! the btrfs default pool and on a reflink pool (a loop-mounted XFS), with every replaced
//! volume reclaimed and no orphan left; and a config-only snapshot when the storage has no
//! snapshots, whose restore keeps the live volume.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NS: &str = "default";
const OFFSET: u64 = 1 << 20;
const LEN: usize = 256 * 1024;

fn pattern(gen: u32) -> Vec<u8> {
    let tag = format!("generation-{gen}-");
    tag.bytes().cycle().take(LEN).collect()
}

fn write_gen(img: &Path, gen: u32) {
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(OFFSET)).unwrap();
    f.write_all(&pattern(gen)).unwrap();
    f.sync_all().unwrap();
}

fn read_gen(img: &Path) -> Option<u32> {
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(OFFSET)).unwrap();
    let mut buf = vec![0u8; LEN];
    f.read_exact(&mut buf).unwrap();
    (1..=9).find(|g| buf == pattern(*g))
}

fn data_claim(h: &VmHost, vm: &str) -> String {
    let v = h.vm(NS, vm);
    let vol = &v["spec"]["template"]["spec"]["volumes"][0];
    vol["persistentVolumeClaim"]["claimName"]
        .as_str()
        .or(vol["dataVolume"]["name"].as_str())
        .unwrap()
        .to_string()
}

/// A stopped VM whose only disk is a blank DataVolume `<name>-disk` on `class`.
fn disk_vm(h: &VmHost, name: &str, class: &str, extra_volume: Option<Value>) {
    h.apply_json(NS, &json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": format!("{name}-disk")},
        "spec": {"source": {"blank": {}}, "storage": {"storageClassName": class, "resources": {"requests": {"storage": "64Mi"}}}}
    }));
    let mut vm = guest_vm(
        name,
        "Halted",
        json!({"name": "rootdisk", "dataVolume": {"name": format!("{name}-disk")}}),
    );
    if let Some(v) = extra_volume {
        let name = v["name"].clone();
        vm["spec"]["template"]["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(v);
        vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "disk": {"bus": "virtio"}}));
    }
    h.apply_json(NS, &vm);
    h.wait_for("disk bound", Duration::from_secs(30), || {
        snap_try_get(h, "pvc", NS, &format!("{name}-disk"))
            .filter(|p| p["status"]["phase"] == "Bound")
            .map(|_| ())
    });
}

fn rollback_on(h: &VmHost, class: &str, pools: &[PathBuf]) {
    let vm = format!("rb-{class}");
    disk_vm(h, &vm, class, None);
    for gen in 1..=3 {
        write_gen(&snap_claim_image(h, NS, &data_claim(h, &vm)), gen);
        let s = format!("{vm}-{gen}");
        snap_create(h, NS, &s, &vm, json!({}));
        let st = snap_wait_done(h, NS, &s, Duration::from_secs(30));
        assert_eq!(st["status"]["phase"], "Succeeded", "{st}");
        assert_eq!(
            st["status"]["snapshotVolumes"]["includedVolumes"],
            json!(["rootdisk"]),
            "{st}"
        );
        assert!(
            !st["status"]["indications"].to_string().contains("Online"),
            "an offline snapshot: {st}"
        );
    }
    write_gen(&snap_claim_image(h, NS, &data_claim(h, &vm)), 4);
    // Back to the oldest, then the newest, the middle one, and the oldest again.
    for (i, gen) in [1u32, 3, 2, 1].into_iter().enumerate() {
        let before = data_claim(h, &vm);
        let r = format!("{vm}-r{i}");
        snap_restore(h, NS, &r, &format!("{vm}-{gen}"), &vm, json!({}));
        let st = snap_wait_restore(h, NS, &r, Duration::from_secs(30));
        assert_eq!(st["status"]["complete"], true, "{st}");
        let now = data_claim(h, &vm);
        assert_ne!(now, before);
        assert_eq!(
            read_gen(&snap_claim_image(h, NS, &now)),
            Some(gen),
            "{class}: restore of generation {gen}"
        );
        h.wait_for("replaced claim reclaimed", Duration::from_secs(30), || {
            snap_try_get(h, "pvc", NS, &before).is_none().then_some(())
        });
    }
    for gen in 1..=3 {
        let s = snap_get(h, "vmsnapshot", NS, &format!("{vm}-{gen}"));
        assert_eq!(s["status"]["readyToUse"], true, "{s}");
    }
    h.wait_for(
        &format!("no orphan on {class}"),
        Duration::from_secs(20),
        || snap_orphans(h, pools).is_empty().then_some(()),
    );
    // Deleting the snapshots frees their storage snapshots.
    for gen in 1..=3 {
        h.client()
            .delete(snap_res("vmsnapshot"), NS, &format!("{vm}-{gen}"))
            .unwrap();
    }
    let start = std::time::Instant::now();
    loop {
        let left: Vec<PathBuf> = pools
            .iter()
            .flat_map(|p| {
                std::fs::read_dir(p.join("snapshots"))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .collect();
        let orphans = snap_orphans(h, pools);
        if left.is_empty() && orphans.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{class}: storage snapshots left after deleting every snapshot: {left:?}, orphans {orphans:?}\nVolumeSnapshots: {:?}\nVolumeSnapshotContents: {:?}\n{}",
            snap_list(h, "volumesnapshot", None),
            snap_list(h, "volumesnapshotcontent", None),
            h.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn vm_snapshot_rollback_btrfs_and_reflink_and_config_only_on_dir() {
    let h = VmHost::start();
    // A reflink pool on a loop-mounted XFS under the data dir (the harness unmounts it).
    let img = h.data_dir().join("xfs.img");
    let mnt = h.data_dir().join("xfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let sh = |cmd: &str| {
        let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&format!(
        "truncate -s 2G {0} && mkfs.xfs -q -f -m reflink=1 {0} && mount -o loop {0} {1}",
        img.display(),
        mnt.display()
    ));
    let pool = mnt.join("pool");
    h.apply_json(
        NS,
        &json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "reflink"},
            "provisioner": "vmsnap.io/reflink",
            "parameters": {"pool": pool.to_string_lossy()},
            "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
        }),
    );
    h.apply_json(
        NS,
        &json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "reflink-snap"},
            "driver": "vmsnap.io/reflink", "deletionPolicy": "Delete",
        }),
    );
    let default_pool = h.data_dir().join("pools/default");
    rollback_on(&h, "vmsnap", std::slice::from_ref(&default_pool));
    rollback_on(&h, "reflink", std::slice::from_ref(&pool));

    // No snapshot support (the dir driver): a config-only snapshot; cloud-init is never
    // snapshotted either.
    disk_vm(
        &h,
        "plain",
        "vmsnap-dir",
        Some(json!({"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config\n"}})),
    );
    snap_create(&h, NS, "plain-1", "plain", json!({}));
    let s = snap_wait_done(&h, NS, "plain-1", Duration::from_secs(30));
    assert_eq!(s["status"]["phase"], "Succeeded", "{s}");
    let vols = &s["status"]["snapshotVolumes"];
    assert!(
        vols["includedVolumes"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{vols}"
    );
    assert_eq!(
        vols["excludedVolumes"],
        json!(["rootdisk", "cloudinit"]),
        "{vols}"
    );
    let vm = h.vm(NS, "plain");
    let st = vm["status"]["volumeSnapshotStatuses"].as_array().unwrap();
    assert_eq!(st.len(), 2, "{vm}");
    for v in st {
        assert_eq!(v["enabled"], false, "{v}");
        assert!(!v["reason"].as_str().unwrap_or("").is_empty(), "{v}");
    }
    let content = snap_get(
        &h,
        "vmsnapshotcontent",
        NS,
        s["status"]["virtualMachineSnapshotContentName"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(content["status"]["readyToUse"], true, "{content}");
    let backups = content["spec"]["volumeBackups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{content}");
    assert!(backups[0]["volumeSnapshotName"].is_null(), "{content}");
    let disk = snap_get(&h, "pvc", NS, "plain-disk");
    // The restore brings the configuration back and keeps the live volume.
    let mut vm = h.vm(NS, "plain");
    vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = json!("192Mi");
    if let Some(m) = vm.as_object_mut() {
        m.remove("status");
    }
    h.client().replace(snap_res("vm"), NS, &vm).unwrap();
    snap_restore(&h, NS, "r-plain", "plain-1", "plain", json!({}));
    let r = snap_wait_restore(&h, NS, "r-plain", Duration::from_secs(30));
    assert_eq!(r["status"]["complete"], true, "{r}");
    assert!(
        r["status"]["restores"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{r}"
    );
    let vm = h.vm(NS, "plain");
    assert_eq!(
        vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"],
        "256Mi"
    );
    assert_eq!(data_claim(&h, "plain"), "plain-disk");
    std::thread::sleep(Duration::from_secs(2));
    let still = snap_get(&h, "pvc", NS, "plain-disk");
    assert_eq!(still["metadata"]["uid"], disk["metadata"]["uid"]);
    assert!(still["metadata"]["deletionTimestamp"].is_null(), "{still}");
}
