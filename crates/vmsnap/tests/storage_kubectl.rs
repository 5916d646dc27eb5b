//! Issue 4 acceptance: claims, snapshots, DataVolumes and uploads through a real `vmsnap serve`
//! and the real kubectl, with data checked on disk.

mod common;

use common::{seeds_dir, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn get(s: &Server, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&a)).expect("json")
}

fn apply(s: &Server, ns: &str, doc: &str) {
    let out = s.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], Some(doc));
    assert!(
        out.status.success(),
        "apply failed: {}\n{doc}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `kubectl get` until `pred` holds.
fn wait_for(
    s: &Server,
    args: &[&str],
    what: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let out = s.kubectl(&[&["get"], args, &["-o", "json"]].concat());
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("json");
            if pred(&v) {
                return v;
            }
            if start.elapsed() > Duration::from_secs(secs) {
                panic!(
                    "timed out waiting for {what}: {}\n{}",
                    serde_json::to_string_pretty(&v).unwrap(),
                    events(s)
                );
            }
        } else if start.elapsed() > Duration::from_secs(secs) {
            panic!(
                "timed out waiting for {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn events(s: &Server) -> String {
    String::from_utf8_lossy(&s.kubectl(&["get", "events", "-A"]).stdout).into_owned()
}

fn pvc_doc(name: &str, size: &str, class: Option<&str>, extra: &str) -> String {
    let class = class
        .map(|c| format!("\n  storageClassName: {c}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}{class}\n{extra}"
    )
}

fn wait_bound(s: &Server, ns: &str, name: &str) -> Value {
    wait_for(
        s,
        &["pvc", name, "-n", ns],
        &format!("pvc {ns}/{name} Bound"),
        30,
        |v| v["status"]["phase"] == "Bound",
    )
}

fn wait_dv(s: &Server, ns: &str, name: &str, phase: &str) -> Value {
    wait_for(
        s,
        &["dv", name, "-n", ns],
        &format!("dv {ns}/{name} {phase}"),
        60,
        |v| v["status"]["phase"] == phase,
    )
}

/// The file behind a Bound claim and its format, from what the controller recorded.
fn attachment(pvc: &Value) -> (PathBuf, &'static str) {
    let pool = pvc["metadata"]["annotations"]["vmsnap.io/pool"]
        .as_str()
        .expect("pool annotation");
    let vol = pvc["spec"]["volumeName"].as_str().expect("volumeName");
    let vols = Path::new(pool).join("volumes");
    for (p, fmt) in [
        (vols.join(format!("{vol}.qcow2")), "qcow2"),
        (vols.join(format!("{vol}.img")), "raw"),
        // btrfs: one subvolume per volume, holding the raw image.
        (vols.join(vol).join("disk.img"), "raw"),
    ] {
        if p.exists() {
            return (p, fmt);
        }
    }
    panic!("no volume file for {vol} under {pool}");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a recognizable pattern at a few offsets through the volume's attachment.
fn write_pattern(path: &Path, fmt: &str, seed: u8) {
    for (i, off) in ["0", "3M", "17M"].iter().enumerate() {
        let pat = seed.wrapping_add(i as u8 * 17);
        run(Command::new("qemu-io")
            .args(["-f", fmt, "-c", &format!("write -P {pat} {off} 1M")])
            .arg(path));
    }
}

/// sha256 of the first `mib` MiB of the guest-visible data.
fn checksum(path: &Path, fmt: &str, mib: u64) -> String {
    let tmp = tempfile::NamedTempFile::new().expect("tmp");
    run(Command::new("qemu-img")
        .args([
            "dd",
            "-f",
            fmt,
            "-O",
            "raw",
            "bs=1M",
            &format!("count={mib}"),
        ])
        .arg(format!("if={}", path.display()))
        .arg(format!("of={}", tmp.path().display())));
    run(Command::new("sha256sum").arg(tmp.path()))
        .split_whitespace()
        .next()
        .expect("sum")
        .to_string()
}

/// `qemu-img compare`: the same guest-visible content (a larger target must be zero beyond).
fn same_content(a: &(PathBuf, &str), b: &(PathBuf, &str)) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-q", "-f", a.1, "-F", b.1])
        .arg(&a.0)
        .arg(&b.0)
        .status()
        .expect("qemu-img")
        .success()
}

fn virtual_size(path: &Path) -> u64 {
    let v: Value = serde_json::from_str(&run(Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)))
    .expect("json");
    v["virtual-size"].as_u64().expect("size")
}

#[test]
fn blank_claims_bind_grow_report_usage_and_delete() {
    let s = Server::start();
    let classes = get(&s, &["sc"]);
    let names: Vec<&str> = classes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"vmsnap") && names.contains(&"vmsnap-dir"),
        "{names:?}"
    );
    let def = get(&s, &["sc", "vmsnap"]);
    assert_eq!(
        def["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert_eq!(def["allowVolumeExpansion"], true);
    let provisioner = def["provisioner"].as_str().unwrap().to_string();
    // The VolumeSnapshotClass exists exactly when the default driver can snapshot (all of
    // btrfs, reflink and qcow2 can); the dir class never gets one.
    let vscs = get(&s, &["volumesnapshotclass"]);
    let drivers: Vec<&str> = vscs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["driver"].as_str())
        .collect();
    assert_eq!(drivers, vec![provisioner.as_str()]);

    apply(&s, "default", &pvc_doc("blank", "64Mi", None, ""));
    apply(
        &s,
        "default",
        &pvc_doc("blank-dir", "48Mi", Some("vmsnap-dir"), ""),
    );
    let pvc = wait_bound(&s, "default", "blank");
    assert_eq!(pvc["status"]["capacity"]["storage"], "64Mi");
    assert_eq!(pvc["spec"]["storageClassName"], "vmsnap");
    assert!(pvc["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .starts_with("pvc-"));
    let att = attachment(&pvc);
    assert_eq!(virtual_size(&att.0), 64 << 20);
    let dir = wait_bound(&s, "default", "blank-dir");
    let dir_att = attachment(&dir);
    assert_eq!(dir_att.1, "raw");
    assert_eq!(std::fs::metadata(&dir_att.0).unwrap().len(), 48 << 20);

    // Grow.
    s.kubectl_ok(&[
        "patch",
        "pvc",
        "blank-dir",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"80Mi"}}}}"#,
    ]);
    wait_for(&s, &["pvc", "blank-dir"], "resize", 30, |v| {
        v["status"]["capacity"]["storage"] == "80Mi"
    });
    assert_eq!(std::fs::metadata(&dir_att.0).unwrap().len(), 80 << 20);
    // Shrinking is refused at admission.
    let out = s.kubectl(&[
        "patch",
        "pvc",
        "blank-dir",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"16Mi"}}}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("can not be less than"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Usage: per pool and per volume, through the API.
    run(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=5", "conv=notrunc"])
        .arg(format!("of={}", dir_att.0.display())));
    wait_for(&s, &["pvc", "blank-dir"], "allocated bytes", 30, |v| {
        v["metadata"]["annotations"]["vmsnap.io/allocated-bytes"]
            .as_str()
            .and_then(|a| a.parse::<u64>().ok())
            .is_some_and(|a| a >= 5 << 20)
    });
    let out = s.vmsnap(&["storage", "usage", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let u: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pools = u["pools"].as_array().unwrap();
    assert!(
        pools.iter().any(|p| p["storageClass"] == "vmsnap-dir"
            && p["driver"] == "dir"
            && p["free"].as_u64().unwrap() > 0),
        "{u}"
    );
    let vol = u["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["claim"] == "blank-dir")
        .expect("volume listed")
        .clone();
    assert_eq!(vol["size"], 80u64 << 20);
    assert!(vol["allocated"].as_u64().unwrap() >= 5 << 20);
    let table = s.vmsnap(&["storage", "usage"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("default/blank-dir") && table.contains("DRIVER"),
        "{table}"
    );

    // Delete removes the volume.
    s.kubectl_ok(&["delete", "pvc", "blank", "blank-dir", "--timeout=30s"]);
    assert!(!att.0.exists() && !dir_att.0.exists());

    // WaitForFirstConsumer: Pending until a VM refers to the claim.
    apply(
        &s,
        "default",
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: wffc}\nprovisioner: vmsnap.io/dir\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    apply(&s, "default", &pvc_doc("late", "8Mi", Some("wffc"), ""));
    wait_for(&s, &["pvc", "late"], "WaitForFirstConsumer", 30, |v| {
        v["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "WaitForFirstConsumer"))
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(&s, &["pvc", "late"])["status"]["phase"], "Pending");
    apply(&s, "default", "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: consumer}\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain: {devices: {disks: [{name: d, disk: {bus: virtio}}]}, resources: {requests: {memory: 64M}}}\n      volumes: [{name: d, persistentVolumeClaim: {claimName: late}}]\n");
    wait_bound(&s, "default", "late");

    // A StorageProfile whose class does not exist is left as written (seed 004).
    s.kubectl_ok(&[
        "apply",
        "-f",
        seeds_dir()
            .join("004-05-storageprofile-hostpath-provisioner.yaml")
            .to_str()
            .unwrap(),
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let p = get(&s, &["storageprofile", "hostpath-provisioner"]);
    assert_eq!(p["status"]["cloneStrategy"], "snapshot", "{p}");
    assert_eq!(
        p["status"]["provisioner"], "kubevirt.io/hostpath-provisioner",
        "{p}"
    );

    // An external provisioner leaves the claim Pending with an event.
    s.kubectl_ok(&[
        "apply",
        "-f",
        seeds_dir()
            .join("004-06-storageclass-openebs-zfspv.yaml")
            .to_str()
            .unwrap(),
    ]);
    apply(
        &s,
        "default",
        &pvc_doc("zfs", "1Gi", Some("openebs-zfspv"), ""),
    );
    wait_for(
        &s,
        &["pvc", "zfs"],
        "external provisioning condition",
        30,
        |v| {
            v["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "ExternalProvisioning"))
        },
    );
    assert_eq!(get(&s, &["pvc", "zfs"])["status"]["phase"], "Pending");
    assert!(events(&s).contains("external provisioner"));
}

#[test]
fn snapshot_restore_and_snapshot_errors() {
    let s = Server::start();
    apply(&s, "default", &pvc_doc("src", "64Mi", None, ""));
    let src = wait_bound(&s, "default", "src");
    let src_att = attachment(&src);
    write_pattern(&src_att.0, src_att.1, 0x21);
    let before = checksum(&src_att.0, src_att.1, 20);

    apply(
        &s,
        "default",
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: snap1}\nspec: {source: {persistentVolumeClaimName: src}}\n",
    );
    let vs = wait_for(&s, &["vs", "snap1"], "snapshot ready", 30, |v| {
        v["status"]["readyToUse"] == true
    });
    assert_eq!(vs["status"]["restoreSize"], "64Mi");
    assert!(vs["status"]["creationTime"].is_string());
    assert_eq!(vs["spec"]["volumeSnapshotClassName"], "vmsnap-snapclass");
    let content_name = vs["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        content_name,
        format!("snapcontent-{}", vs["metadata"]["uid"].as_str().unwrap())
    );
    let content = get(&s, &["vsc", &content_name]);
    assert_eq!(content["status"]["readyToUse"], true);
    assert_eq!(content["spec"]["deletionPolicy"], "Delete");

    // Writes after the snapshot must not reach the restore.
    write_pattern(&src_att.0, src_att.1, 0x77);
    assert_ne!(checksum(&src_att.0, src_att.1, 20), before);

    let ds =
        "  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap1}\n";
    apply(&s, "default", &pvc_doc("restored", "96Mi", None, ds));
    let restored = wait_bound(&s, "default", "restored");
    assert_eq!(restored["status"]["capacity"]["storage"], "96Mi");
    let r_att = attachment(&restored);
    assert_eq!(
        checksum(&r_att.0, r_att.1, 20),
        before,
        "restored data differs from the snapshot"
    );

    // A DataVolume from the snapshot.
    apply(&s, "default", "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: from-snap}\nspec:\n  source: {snapshot: {name: snap1, namespace: default}}\n  storage: {}\n");
    wait_dv(&s, "default", "from-snap", "Succeeded");
    let fs_att = attachment(&get(&s, &["pvc", "from-snap"]));
    assert_eq!(checksum(&fs_att.0, fs_att.1, 20), before);

    // Smaller than the restore size: refused with a clear message.
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&pvc_doc("too-small", "32Mi", None, ds)),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("must be at least the restore size 64Mi"),
        "{err}"
    );

    // Clone of a claim in the same class (the driver's own clone).
    apply(
        &s,
        "default",
        &pvc_doc(
            "cloned",
            "64Mi",
            None,
            "  dataSource: {kind: PersistentVolumeClaim, name: src}\n",
        ),
    );
    let cloned = wait_bound(&s, "default", "cloned");
    let c_att = attachment(&cloned);
    assert!(same_content(&src_att, &c_att));

    // A class without a VolumeSnapshotClass: clear error on the snapshot.
    apply(
        &s,
        "default",
        &pvc_doc("plain", "16Mi", Some("vmsnap-dir"), ""),
    );
    wait_bound(&s, "default", "plain");
    apply(
        &s,
        "default",
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: nosnap}\nspec: {source: {persistentVolumeClaimName: plain}}\n",
    );
    let vs = wait_for(&s, &["vs", "nosnap"], "snapshot error", 30, |v| {
        v["status"]["error"]["message"].is_string()
    });
    let msg = vs["status"]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("vmsnap-dir") && msg.contains("no VolumeSnapshotClass"),
        "{msg}"
    );
    assert_eq!(vs["status"]["readyToUse"], false);
    assert!(events(&s).contains("SnapshotCreationFailed"));

    // The source holds a snapshot its driver keeps inside the volume (qcow2) or alongside it:
    // deleting the claim either waits with a warning or succeeds, never leaks silently.
    let _ = s.kubectl(&["delete", "pvc", "src", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(1));
    let still = s.kubectl(&["get", "pvc", "src", "-o", "json"]);
    if still.status.success() {
        assert!(src_att.0.exists());
        wait_for(&s, &["events"], "VolumeDeleteBlocked event", 20, |v| {
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["reason"] == "VolumeDeleteBlocked")
        });
        // Deleting the snapshot lets the claim go, and the volume with it.
        s.kubectl_ok(&["delete", "vs", "snap1", "--timeout=30s"]);
        let start = Instant::now();
        while s.kubectl(&["get", "pvc", "src"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "claim stayed after its snapshot was deleted\n{}",
                events(&s)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(!src_att.0.exists());
    }
    // The snapshot's content follows its Delete policy.
    let _ = s.kubectl(&[
        "delete",
        "vs",
        "snap1",
        "--ignore-not-found",
        "--timeout=30s",
    ]);
    let start = Instant::now();
    while s.kubectl(&["get", "vsc", &content_name]).status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "content {content_name} was not deleted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The restored claim does not depend on the source.
    assert_eq!(checksum(&r_att.0, r_att.1, 20), before);
}

#[test]
fn snaponly_class_snapshots_but_refuses_restore() {
    let s = Server::start();
    let pool = s.data_dir().join("pools/lvm");
    apply(
        &s,
        "default",
        &format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: lvm}}\nprovisioner: vmsnap.io/snaponly\nparameters: {{pool: {}}}\n---\napiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\nmetadata: {{name: lvm-snap}}\ndriver: vmsnap.io/snaponly\ndeletionPolicy: Delete\n",
            pool.display()
        ),
    );
    apply(&s, "default", &pvc_doc("lv", "32Mi", Some("lvm"), ""));
    wait_bound(&s, "default", "lv");
    apply(
        &s,
        "default",
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: lvsnap}\nspec: {source: {persistentVolumeClaimName: lv}}\n",
    );
    wait_for(&s, &["vs", "lvsnap"], "snapshot ready", 30, |v| {
        v["status"]["readyToUse"] == true
    });
    let profile = wait_for(&s, &["storageprofile", "lvm"], "profile", 30, |v| {
        v["status"]["cloneStrategy"].is_string()
    });
    assert_eq!(
        profile["status"]["cloneStrategy"], "copy",
        "snapshots without restore cannot serve clones"
    );
    assert_eq!(profile["status"]["snapshotClass"], "lvm-snap");
    apply(
        &s,
        "default",
        &pvc_doc(
            "lv-restore",
            "32Mi",
            Some("lvm"),
            "  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: lvsnap}\n",
        ),
    );
    let v = wait_for(&s, &["pvc", "lv-restore"], "restore refusal", 30, |v| {
        v["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("cannot create a volume from")
            })
        })
    });
    assert_eq!(v["status"]["phase"], "Pending");
    // A DataVolume clone of the claim falls back to a host-assisted copy.
    apply(
        &s,
        "default",
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: lv-copy}\nspec:\n  source: {pvc: {name: lv}}\n  storage: {storageClassName: lvm}\n",
    );
    wait_dv(&s, "default", "lv-copy", "Succeeded");
    assert_eq!(
        get(&s, &["pvc", "lv-copy"])["metadata"]["annotations"]["cdi.kubevirt.io/cloneType"],
        "copy"
    );
}

#[test]
fn seed_datavolume_clones_succeed_with_identical_data() {
    let s = Server::start();
    let default_class = get(&s, &["sc", "vmsnap"]);
    let provisioner = default_class["provisioner"].as_str().unwrap().to_string();
    let pool = default_class["parameters"]["pool"]
        .as_str()
        .unwrap()
        .to_string();
    // Seed 000: a golden image in another namespace, in a class named as in the seed, backed
    // by the default pool.
    s.create_namespace("golden-vms");
    apply(
        &s,
        "default",
        &format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: ocs-external-storagecluster-ceph-rbd}}\nprovisioner: {provisioner}\nparameters: {{pool: {pool}}}\n"
        ),
    );
    apply(
        &s,
        "golden-vms",
        &pvc_doc(
            "documentroot",
            "1Gi",
            Some("ocs-external-storagecluster-ceph-rbd"),
            "",
        ),
    );
    let golden = wait_bound(&s, "golden-vms", "documentroot");
    let g_att = attachment(&golden);
    write_pattern(&g_att.0, g_att.1, 0x42);
    let sum = checksum(&g_att.0, g_att.1, 20);
    let seed = seeds_dir().join("000-03-datavolume-documentroot-clone1.yaml");
    s.kubectl_ok(&["apply", "-n", "default", "-f", seed.to_str().unwrap()]);
    let dv = wait_dv(&s, "default", "documentroot-clone1", "Succeeded");
    assert_eq!(dv["status"]["progress"], "100.0%");
    assert!(dv["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True"));
    let clone = get(&s, &["pvc", "documentroot-clone1"]);
    assert_eq!(
        clone["metadata"]["ownerReferences"][0]["kind"],
        "DataVolume"
    );
    let c_att = attachment(&clone);
    assert_eq!(checksum(&c_att.0, c_att.1, 20), sum);
    assert!(same_content(&g_att, &c_att));
    // The profile of that class decided the method (snapshot for qcow2, csi-clone for CoW drivers).
    let strategy = get(
        &s,
        &["storageprofile", "ocs-external-storagecluster-ceph-rbd"],
    )["status"]["cloneStrategy"]
        .as_str()
        .unwrap()
        .to_string();
    let clone_type = clone["metadata"]["annotations"]["cdi.kubevirt.io/cloneType"]
        .as_str()
        .unwrap();
    assert_eq!(clone_type, strategy);
    // The temporary snapshot of a smart clone is gone.
    let vs = get(&s, &["vs", "-n", "golden-vms"]);
    assert!(vs["items"].as_array().unwrap().is_empty(), "{vs}");

    // Seed 004: host-assisted clone from a class without snapshots, `storage: {}`.
    s.create_namespace("source-ns");
    apply(
        &s,
        "source-ns",
        &pvc_doc("source-datavolume", "40Mi", Some("vmsnap-dir"), ""),
    );
    let src = wait_bound(&s, "source-ns", "source-datavolume");
    let s_att = attachment(&src);
    write_pattern(&s_att.0, s_att.1, 0x13);
    let src_sum = checksum(&s_att.0, s_att.1, 40);
    let seed = seeds_dir().join("004-04-datavolume-cloned-datavolume.yaml");
    s.kubectl_ok(&["apply", "-n", "default", "-f", seed.to_str().unwrap()]);
    wait_dv(&s, "default", "cloned-datavolume", "Succeeded");
    let cloned = get(&s, &["pvc", "cloned-datavolume"]);
    assert_eq!(
        cloned["spec"]["storageClassName"], "vmsnap",
        "storage: {{}} takes the default class"
    );
    assert_eq!(
        cloned["status"]["capacity"]["storage"], "40Mi",
        "storage: {{}} takes the source's size"
    );
    assert_eq!(
        cloned["metadata"]["annotations"]["cdi.kubevirt.io/cloneType"],
        "copy"
    );
    let cl_att = attachment(&cloned);
    assert_eq!(checksum(&cl_att.0, cl_att.1, 40), src_sum);
    // The same within the dir pool: a sparse host-assisted copy.
    apply(
        &s,
        "default",
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: dir-copy}\nspec:\n  source: {pvc: {name: source-datavolume, namespace: source-ns}}\n  storage: {storageClassName: vmsnap-dir, resources: {requests: {storage: 64Mi}}}\n",
    );
    wait_dv(&s, "default", "dir-copy", "Succeeded");
    let d_att = attachment(&get(&s, &["pvc", "dir-copy"]));
    assert_eq!(checksum(&d_att.0, d_att.1, 40), src_sum);
    assert_eq!(std::fs::metadata(&d_att.0).unwrap().len(), 64 << 20);
    let alloc =
        |p: &Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(p).unwrap()) * 512;
    assert!(
        alloc(&d_att.0) <= alloc(&s_att.0) * 105 / 100 + 65536,
        "the copy is not sparse"
    );
    // The source is untouched.
    assert_eq!(checksum(&s_att.0, s_att.1, 40), src_sum);

    // A user override of the profile's strategy is followed.
    s.kubectl_ok(&[
        "patch",
        "storageprofile",
        "ocs-external-storagecluster-ceph-rbd",
        "--type=merge",
        "-p",
        r#"{"spec":{"cloneStrategy":"copy"}}"#,
    ]);
    wait_for(
        &s,
        &["storageprofile", "ocs-external-storagecluster-ceph-rbd"],
        "override",
        30,
        |v| v["status"]["cloneStrategy"] == "copy",
    );
    apply(&s, "default", "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: forced-copy}\nspec:\n  source: {pvc: {name: documentroot, namespace: golden-vms}}\n  storage: {storageClassName: ocs-external-storagecluster-ceph-rbd}\n");
    wait_dv(&s, "default", "forced-copy", "Succeeded");
    let forced = get(&s, &["pvc", "forced-copy"]);
    assert_eq!(
        forced["metadata"]["annotations"]["cdi.kubevirt.io/cloneType"],
        "copy"
    );
    let f_att = attachment(&forced);
    assert_eq!(checksum(&f_att.0, f_att.1, 20), sum);

    // A running VM's disk is not copied host-assisted.
    apply(
        &s,
        "source-ns",
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: busy}\nspec:\n  domain: {devices: {disks: [{name: d, disk: {bus: virtio}}]}, resources: {requests: {memory: 64M}}}\n  volumes: [{name: d, persistentVolumeClaim: {claimName: source-datavolume}}]\n",
    );
    apply(
        &s,
        "default",
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: busy-copy}\nspec:\n  source: {pvc: {name: source-datavolume, namespace: source-ns}}\n  storage: {storageClassName: vmsnap-dir}\n",
    );
    let v = wait_for(&s, &["dv", "busy-copy"], "in-use refusal", 30, |v| {
        v["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "CloneSourceInUse"))
    });
    assert_ne!(v["status"]["phase"], "Succeeded");
    let msg = v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["reason"] == "CloneSourceInUse")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("in use by the running VirtualMachineInstance source-ns/busy"),
        "{msg}"
    );

    // dataVolumeTemplates of a VM become DataVolumes owned by the VM.
    apply(
        &s,
        "default",
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: tmplvm}\nspec:\n  runStrategy: Halted\n  dataVolumeTemplates:\n  - metadata: {name: tmplvm-root}\n    spec:\n      source: {blank: {}}\n      storage: {resources: {requests: {storage: 16Mi}}}\n  template:\n    spec:\n      domain: {devices: {disks: [{name: root, disk: {bus: virtio}}]}, resources: {requests: {memory: 64M}}}\n      volumes: [{name: root, dataVolume: {name: tmplvm-root}}]\n",
    );
    let dv = wait_dv(&s, "default", "tmplvm-root", "Succeeded");
    assert_eq!(
        dv["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachine"
    );
}

/// A static file server on a free port, for HTTP imports.
struct HttpServer {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl HttpServer {
    fn start() -> HttpServer {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "http server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer { child, port, dir }
    }
    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_dv(name: &str, url: &str, size: &str, class: Option<&str>) -> String {
    let class = class
        .map(|c| format!(", storageClassName: {c}"))
        .unwrap_or_default();
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: {name}}}\nspec:\n  source: {{http: {{url: \"{url}\"}}}}\n  storage: {{resources: {{requests: {{storage: {size}}}}}{class}}}\n"
    )
}

fn failure_message(dv: &Value) -> String {
    dv["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or("")
        .to_string()
}

fn file_sum(p: &Path) -> String {
    run(Command::new("sha256sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn http_import_raw_and_qcow2_and_failures() {
    let s = Server::start();
    let http = HttpServer::start();
    let raw = http.dir.path().join("disk.raw");
    run(Command::new("truncate").args(["-s", "24M"]).arg(&raw));
    write_pattern(&raw, "raw", 0x61);
    let qcow = http.dir.path().join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow));
    let corrupt = http.dir.path().join("corrupt.qcow2");
    let mut bytes = std::fs::read(&qcow).unwrap();
    bytes.truncate(4096);
    bytes[24..32].copy_from_slice(&[0xff; 8]); // cluster_bits and size: nonsense
    bytes[20..24].copy_from_slice(&[0, 0, 0, 99]);
    std::fs::write(&corrupt, &bytes).unwrap();
    let sums: Vec<String> = [&raw, &qcow, &corrupt]
        .iter()
        .map(|p| file_sum(p))
        .collect();

    apply(
        &s,
        "default",
        &http_dv("imp-raw", &http.url("disk.raw"), "32Mi", None),
    );
    apply(
        &s,
        "default",
        &http_dv(
            "imp-qcow2",
            &http.url("disk.qcow2"),
            "32Mi",
            Some("vmsnap-dir"),
        ),
    );
    apply(
        &s,
        "default",
        &http_dv("imp-missing", &http.url("nope.img"), "32Mi", None),
    );
    apply(
        &s,
        "default",
        &http_dv("imp-corrupt", &http.url("corrupt.qcow2"), "32Mi", None),
    );
    apply(
        &s,
        "default",
        &http_dv("imp-toobig", &http.url("disk.qcow2"), "16Mi", None),
    );
    let src = (raw.clone(), "raw");
    for name in ["imp-raw", "imp-qcow2"] {
        let dv = wait_dv(&s, "default", name, "Succeeded");
        assert_eq!(dv["status"]["progress"], "100.0%");
        let att = attachment(&get(&s, &["pvc", name]));
        assert!(same_content(&src, &att), "{name}: imported data differs");
        assert_eq!(checksum(&att.0, att.1, 24), checksum(&raw, "raw", 24));
    }
    let m = failure_message(&wait_dv(&s, "default", "imp-missing", "Failed"));
    assert!(m.contains("404"), "{m}");
    let m = failure_message(&wait_dv(&s, "default", "imp-corrupt", "Failed"));
    assert!(m.contains("not a valid disk image"), "{m}");
    let m = failure_message(&wait_dv(&s, "default", "imp-toobig", "Failed"));
    assert!(m.contains("larger than the volume"), "{m}");
    assert!(events(&s).contains("DataVolumeFailed"));

    // A pool too small for the image: refused up front.
    let small = s.data_dir().join("small-pool");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let big = http.dir.path().join("big.raw");
        run(Command::new("dd")
            .args(["if=/dev/urandom", "bs=1M", "count=30"])
            .arg(format!("of={}", big.display())));
        let big_sum = file_sum(&big);
        apply(
            &s,
            "default",
            &format!(
                "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: small}}\nprovisioner: vmsnap.io/dir\nparameters: {{pool: {}, reserveMin: 2Mi}}\n",
                small.display()
            ),
        );
        apply(
            &s,
            "default",
            &http_dv("imp-nospace", &http.url("big.raw"), "64Mi", Some("small")),
        );
        let m = failure_message(&wait_dv(&s, "default", "imp-nospace", "Failed"));
        let _ = Command::new("umount").arg(&small).status();
        assert!(m.contains("Not enough space"), "{m}");
        assert_eq!(file_sum(&big), big_sum);
        let leftovers: Vec<_> = std::fs::read_dir(&small)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            !leftovers
                .iter()
                .any(|n| n.to_string_lossy().starts_with(".tmp-import")),
            "{leftovers:?}"
        );
    }
    // The images served are untouched, and failed imports left no temp files in the pool.
    let after: Vec<String> = [&raw, &qcow, &corrupt]
        .iter()
        .map(|p| file_sum(p))
        .collect();
    assert_eq!(sums, after);
    let pool = s.data_dir().join("pools/default");
    let tmp: Vec<_> = std::fs::read_dir(&pool)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn image_upload_cli_fills_a_datavolume() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("img.raw");
    run(Command::new("truncate").args(["-s", "20M"]).arg(&raw));
    write_pattern(&raw, "raw", 0x33);
    let qcow = dir.path().join("img.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow));
    let out = s.vmsnap(&[
        "image-upload",
        "dv",
        "up1",
        "--size",
        "32Mi",
        "--image-path",
        qcow.to_str().unwrap(),
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    let dv = get(&s, &["dv", "up1"]);
    assert_eq!(dv["status"]["phase"], "Succeeded");
    let att = attachment(&get(&s, &["pvc", "up1"]));
    assert!(same_content(&(raw.clone(), "raw"), &att));
    // A second upload into a filled DataVolume is refused.
    let out = s.vmsnap(&[
        "image-upload",
        "dv",
        "up1",
        "--no-create",
        "--image-path",
        raw.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    // Raw into the dir class.
    let out = s.vmsnap(&[
        "image-upload",
        "dv",
        "up2",
        "--size",
        "20Mi",
        "--storage-class",
        "vmsnap-dir",
        "--image-path",
        raw.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let att = attachment(&get(&s, &["pvc", "up2"]));
    assert_eq!(checksum(&att.0, att.1, 20), checksum(&raw, "raw", 20));
}
