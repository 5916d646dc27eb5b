//! Issue 5, acceptance 3: restoring a running VM under each targetReadinessPolicy, a second
//! concurrent restore refused, the InPlace volume policy, and a restore that brings back the
//! snapshot's shape (a later disk gone, a removed disk back, CPU and memory back).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const NS: &str = "default";

fn md5_in_image(h: &VmHost, claim: &str, path: &str) -> String {
    let img = snap_claim_image(h, NS, claim);
    let bytes = snap_debugfs_cat(&img, path).unwrap_or_else(|| panic!("{path} missing in {claim}"));
    md5(&bytes)
}

fn md5(bytes: &[u8]) -> String {
    use std::io::Write;
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

fn claims(vm: &Value) -> Vec<(String, String)> {
    vm["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["persistentVolumeClaim"]["claimName"]
                    .as_str()
                    .or(v["dataVolume"]["name"].as_str())
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn claim_of(vm: &Value, volume: &str) -> String {
    claims(vm)
        .into_iter()
        .find(|(n, _)| n == volume)
        .map(|(_, c)| c)
        .unwrap_or_else(|| panic!("no volume {volume} in {vm}"))
}

fn reason(r: &Value, ty: &str) -> String {
    r["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == ty)
        .and_then(|c| c["reason"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Asserts the restore stays waiting for the target for `d`.
fn assert_waits(h: &VmHost, name: &str, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        let r = snap_get(h, "vmrestore", NS, name);
        assert_ne!(r["status"]["complete"], true, "{r}");
        assert_ne!(api::condition(&r, "Failure"), Some(true), "{r}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = snap_get(h, "vmrestore", NS, name);
    assert_eq!(reason(&r, "Progressing"), "WaitingForTarget", "{r}");
}

fn vmsnap_ok(h: &VmHost, args: &[&str]) {
    let out = h.vmsnap(args);
    assert!(
        out.status.success(),
        "vmsnap {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
}

#[test]
fn vm_restore_readiness_policies_inplace_and_spec_shape() {
    let h = VmHost::start();
    snap_lab_vm(&h, NS, "pol", "Always", None, None);
    let write = "dd if=/dev/urandom of=/data/a bs=1M count=4 2>/dev/null && sync && md5sum /data/a | cut -d' ' -f1";
    let (code, a, _) = h.sh(NS, "pol", write);
    assert_eq!(code, 0);
    let a = a.trim().to_string();

    snap_create(&h, NS, "pol-1", "pol", json!({}));
    let s = snap_wait_done(&h, NS, "pol-1", Duration::from_secs(60));
    assert_eq!(s["status"]["phase"], "Succeeded", "{s}");
    let (code, b, _) = h.sh(NS, "pol", write);
    assert_eq!(code, 0);
    assert_ne!(b.trim(), a);

    // FailImmediate on a running VM fails at once and changes nothing.
    let t = Instant::now();
    snap_restore(
        &h,
        NS,
        "r-fail",
        "pol-1",
        "pol",
        json!({"targetReadinessPolicy": "FailImmediate"}),
    );
    let r = snap_wait_restore(&h, NS, "r-fail", Duration::from_secs(10));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(api::condition(&r, "Failure"), Some(true), "{r}");
    assert_ne!(r["status"]["complete"], true);
    assert!(r.to_string().contains("FailImmediate"), "{r}");
    assert!(
        h.vmi(NS, "pol").is_some(),
        "FailImmediate must not stop the VM"
    );
    assert_eq!(claim_of(&h.vm(NS, "pol"), "datadisk"), "pol-data");

    // WaitEventually waits; meanwhile a second restore of the same VM is refused (409).
    snap_restore(
        &h,
        NS,
        "r-we",
        "pol-1",
        "pol",
        json!({"targetReadinessPolicy": "WaitEventually"}),
    );
    assert_waits(&h, "r-we", Duration::from_secs(3));
    let dup = snap_restore_obj("r-dup", "pol-1", "pol", json!({}));
    let out = h.kubectl_stdin(&["create", "-f", "-", "-v=6"], Some(&dup.to_string()));
    assert!(!out.status.success(), "a second restore was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409"), "{err}");
    assert!(
        err.contains("\"r-we\"") && err.contains("only one restore per target"),
        "{err}"
    );
    h.client()
        .delete(snap_res("vmrestore"), NS, "r-we")
        .unwrap();
    h.wait_for("r-we gone", Duration::from_secs(10), || {
        snap_try_get(&h, "vmrestore", NS, "r-we")
            .is_none()
            .then_some(())
    });

    // WaitGracePeriod (the default) waits, then restores once the VM is stopped; InPlace keeps
    // the original claim names.
    snap_restore(
        &h,
        NS,
        "r-wg",
        "pol-1",
        "pol",
        json!({"volumeRestorePolicy": "InPlace"}),
    );
    assert_waits(&h, "r-wg", Duration::from_secs(3));
    let old_uid = snap_get(&h, "pvc", NS, "pol-data")["metadata"]["uid"].clone();
    vmsnap_ok(&h, &["stop", "pol"]);
    let r = snap_wait_restore(&h, NS, "r-wg", Duration::from_secs(60));
    assert_eq!(r["status"]["complete"], true, "{r}");
    let vm = h.vm(NS, "pol");
    assert_eq!(claim_of(&vm, "rootdisk"), "pol-root", "{vm}");
    assert_eq!(claim_of(&vm, "datadisk"), "pol-data", "{vm}");
    let pvc = snap_get(&h, "pvc", NS, "pol-data");
    assert_ne!(
        pvc["metadata"]["uid"], old_uid,
        "InPlace must make a new claim"
    );
    assert_eq!(pvc["spec"]["dataSource"]["kind"], "VolumeSnapshot", "{pvc}");
    assert_eq!(md5_in_image(&h, "pol-data", "/a"), a, "InPlace data");
    // The DataVolumes that owned the replaced claims are gone too.
    h.wait_for("old DataVolumes deleted", Duration::from_secs(20), || {
        (snap_try_get(&h, "dv", NS, "pol-data").is_none()
            && snap_try_get(&h, "dv", NS, "pol-root").is_none())
        .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        snap_get(&h, "pvc", NS, "pol-data")["metadata"]["uid"],
        pvc["metadata"]["uid"]
    );

    // StopTarget stops a running VM and restores it.
    vmsnap_ok(&h, &["start", "pol"]);
    snap_wait_guest(&h, NS, "pol");
    let (code, got, _) = h.sh(NS, "pol", "md5sum /data/a | cut -d' ' -f1");
    assert_eq!(code, 0);
    assert_eq!(
        got.trim(),
        a,
        "the InPlace restore did not bring the data back"
    );
    let (code, c, _) = h.sh(NS, "pol", write);
    assert_eq!(code, 0);
    assert_ne!(c.trim(), a);
    snap_restore(
        &h,
        NS,
        "r-st",
        "pol-1",
        "pol",
        json!({"targetReadinessPolicy": "StopTarget"}),
    );
    let r = snap_wait_restore(&h, NS, "r-st", Duration::from_secs(90));
    assert_eq!(r["status"]["complete"], true, "{r}");
    assert!(h.vmi(NS, "pol").is_none(), "StopTarget left the VM running");
    let vm = h.vm(NS, "pol");
    assert_eq!(vm["spec"]["runStrategy"], "Halted", "{vm}");
    let data = claim_of(&vm, "datadisk");
    assert!(data.starts_with("restore-"), "{data}");
    assert_eq!(md5_in_image(&h, &data, "/a"), a, "StopTarget data");
    h.wait_for("InPlace claims reclaimed", Duration::from_secs(30), || {
        (snap_try_get(&h, "pvc", NS, "pol-data").is_none()
            && snap_try_get(&h, "pvc", NS, "pol-root").is_none())
        .then_some(())
    });

    // The snapshot's shape comes back: a disk added later goes, a removed one returns, and
    // the CPU and memory are the snapshot's.
    h.apply_json(NS, &json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "pol-extra"},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "64Mi"}}}}
    }));
    let mut vm = h.vm(NS, "pol");
    let tspec = &mut vm["spec"]["template"]["spec"];
    tspec["domain"]["memory"]["guest"] = json!("192Mi");
    tspec["domain"]["cpu"]["cores"] = json!(2);
    tspec["domain"]["devices"]["disks"] = json!([
        {"name": "rootdisk", "disk": {"bus": "virtio"}},
        {"name": "extradisk", "disk": {"bus": "virtio"}},
    ]);
    let root = claim_of(&vm, "rootdisk");
    vm["spec"]["template"]["spec"]["volumes"] = json!([
        {"name": "rootdisk", "persistentVolumeClaim": {"claimName": root}},
        {"name": "extradisk", "dataVolume": {"name": "pol-extra"}},
    ]);
    if let Some(m) = vm["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    if let Some(m) = vm.as_object_mut() {
        m.remove("status");
    }
    h.client()
        .replace(snap_res("vm"), NS, &vm)
        .unwrap_or_else(|e| panic!("edit VM: {e}"));
    h.wait_for("extra disk bound", Duration::from_secs(30), || {
        snap_try_get(&h, "pvc", NS, "pol-extra")
            .filter(|p| p["status"]["phase"] == "Bound")
            .map(|_| ())
    });
    snap_restore(&h, NS, "r-shape", "pol-1", "pol", json!({}));
    let r = snap_wait_restore(&h, NS, "r-shape", Duration::from_secs(60));
    assert_eq!(r["status"]["complete"], true, "{r}");
    let vm = h.vm(NS, "pol");
    let names: Vec<String> = claims(&vm).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["rootdisk", "datadisk"], "{vm}");
    let dom = &vm["spec"]["template"]["spec"]["domain"];
    assert_eq!(dom["memory"]["guest"], "256Mi", "{dom}");
    assert_eq!(dom["cpu"]["cores"], 1, "{dom}");
    let disks: Vec<&str> = dom["devices"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(disks, ["rootdisk", "datadisk"]);
    // The disk added after the snapshot leaves the VM, but its data exists nowhere else: its
    // claim is kept and reported, while the replaced root disk is reclaimed.
    assert_eq!(
        r["status"]["detachedVolumes"],
        json!([{"volumeName": "extradisk", "claimName": "pol-extra"}]),
        "{r}"
    );
    h.wait_for("replaced root reclaimed", Duration::from_secs(30), || {
        snap_try_get(&h, "pvc", NS, &root).is_none().then_some(())
    });
    let extra = snap_get(&h, "pvc", NS, "pol-extra");
    assert!(extra["metadata"]["deletionTimestamp"].is_null(), "{extra}");
    vmsnap_ok(&h, &["start", "pol"]);
    snap_wait_guest(&h, NS, "pol");
    let (code, out, _) = h.sh(
        NS,
        "pol",
        "md5sum /data/a | cut -d' ' -f1; ls /sys/block | grep -c '^vd'; grep -c ^processor /proc/cpuinfo; awk '/MemTotal/ {print $2}' /proc/meminfo",
    );
    assert_eq!(code, 0);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], a, "{out}");
    assert_eq!(l[1], "2", "virtio disks in the guest: {out}");
    assert_eq!(l[2], "1", "vCPUs in the guest: {out}");
    let mem: u64 = l[3].parse().unwrap();
    assert!(mem > 200_000 && mem <= 262_144, "MemTotal {mem} kB");
}
