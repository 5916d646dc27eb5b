//! Issue 6, seed 004's "Kubevirt CDI" fallback: a VM on the `vmsnap-dir` class (no
//! snapshots) is cloned by host-assisted copies with the same API. A running source is
//! refused with a message telling to stop it; a stopped one is copied volume by volume with
//! progress in the status, the strategy recorded, and the data identical.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const NS: &str = "default";

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

fn events_for(h: &VmHost, name: &str) -> Vec<Value> {
    let out = h.kubectl_ok(&["get", "events", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .cloned()
        .collect()
}

#[test]
fn vm_clone_copy_fallback_on_dir_storage_refuses_running_then_copies_stopped() {
    let t0 = Instant::now();
    let h = VmHost::start();
    clone_lab_vm(
        &h,
        NS,
        "dsrc",
        "Always",
        Some("vmsnap-dir"),
        json!({"labels": {"app": "web", "drop.example.com/x": "1"}}),
        json!({}),
    );
    let (code, sum, err) = h.sh(
        NS,
        "dsrc",
        "dd if=/dev/urandom of=/data/db bs=1M count=4 2>/dev/null && sync && md5sum /data/db | cut -d' ' -f1",
    );
    assert_eq!(code, 0, "{err}");

    // Running: refused, with a message that says to stop it; nothing is left behind.
    let out = h.vmsnap(&[
        "clone",
        "dsrc",
        "--target",
        "dcopy",
        "--name",
        "c-running",
        "--wait",
    ]);
    assert!(!out.status.success(), "a running source was copied");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stop"), "{err}");
    let c = clone_try_get(&h, NS, "c-running").expect("clone object");
    assert_eq!(c["status"]["phase"], "Failed", "{c}");
    let (_, reason, msg) = clone_condition(&c, "Ready").unwrap();
    assert_eq!(reason, "SourceRunning");
    assert!(
        msg.contains("running") && msg.contains("stop it") && msg.contains("dsrc"),
        "{msg}"
    );
    assert_eq!(c["status"]["strategy"], "copy");
    assert!(h
        .client()
        .get(api::registry::lookup("vm").unwrap(), NS, "dcopy")
        .is_err());
    let dvs = clone_names(&h, "dv", NS);
    assert_eq!(dvs.len(), 2, "{dvs:?}");
    assert!(h.vmi(NS, "dsrc").is_some(), "the source was stopped");

    // Stopped: copied, with per-volume progress while it runs.
    clone_stop(&h, NS, "dsrc");
    let src = h.vm(NS, "dsrc");
    let src_claims = claims_of(&src);
    let src_sums: Vec<String> = src_claims
        .iter()
        .map(|c| clone_md5(&snap_claim_image(&h, NS, c)))
        .collect();
    let kubeconfig = h.kubeconfig();
    let bin = env!("CARGO_BIN_EXE_vmsnap");
    let t = Instant::now();
    let cli = std::thread::spawn(move || {
        std::process::Command::new(bin)
            .args([
                "clone",
                "dsrc",
                "--target",
                "dcopy",
                "--name",
                "c-copy",
                "--new-mac",
                "default=02:aa:bb:cc:dd:ee",
                "--serial",
                "copy-serial",
                "--label",
                "env=test",
                "--wait",
            ])
            .env("KUBECONFIG", kubeconfig)
            .output()
            .expect("vmsnap clone")
    });
    let mut seen_progress = Vec::new();
    loop {
        if let Some(c) = clone_try_get(&h, NS, "c-copy") {
            if c["status"]["phase"] == "RestoreInProgress" {
                if let Some(p) = c["status"]["volumeProgress"].as_array() {
                    seen_progress.push(Value::Array(p.clone()));
                }
            }
            if matches!(c["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "copy clone not done\n{}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = cli.join().unwrap();
    let copy_time = t.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("copy strategy"), "{stdout}");
    assert!(stdout.contains("labels set on dcopy"), "{stdout}");
    // Progress was published per volume while the copy ran.
    assert!(!seen_progress.is_empty(), "no progress seen in the status");
    let first = seen_progress[0].as_array().unwrap();
    let vols: Vec<&str> = first
        .iter()
        .map(|p| p["volumeName"].as_str().unwrap())
        .collect();
    assert_eq!(vols, ["rootdisk", "datadisk"], "{first:?}");
    for p in first {
        assert!(
            p["progress"].is_string() && p["dataVolume"].is_string(),
            "{p}"
        );
    }

    let c = clone_try_get(&h, NS, "c-copy").unwrap();
    assert_eq!(c["status"]["phase"], "Succeeded", "{c}");
    assert_eq!(c["status"]["strategy"], "copy");
    assert_eq!(c["status"]["targetName"], "dcopy");
    for p in c["status"]["volumeProgress"].as_array().unwrap() {
        assert_eq!(p["phase"], "Succeeded", "{p}");
        assert_eq!(p["progress"], "100.0%", "{p}");
    }
    let ev = events_for(&h, "c-copy");
    let strategy_ev = ev
        .iter()
        .find(|e| e["reason"] == "CloneStrategy")
        .unwrap_or_else(|| panic!("no CloneStrategy event: {ev:?}"));
    let m = strategy_ev["message"].as_str().unwrap();
    assert!(
        m.contains("host-assisted copy") && m.contains("rootdisk"),
        "{m}"
    );
    assert!(ev.iter().any(
        |e| e["reason"] == "CloneSucceeded" && e["message"].as_str().unwrap().contains("copy")
    ));

    // The new VM: its own copies, the requested identity, a fresh firmware UUID, the label.
    let target = h.vm(NS, "dcopy");
    let d = &target["spec"]["template"]["spec"]["domain"];
    assert_eq!(
        d["devices"]["interfaces"][0]["macAddress"],
        "02:aa:bb:cc:dd:ee"
    );
    assert_eq!(d["firmware"]["serial"], "copy-serial");
    assert!(d["firmware"]["uuid"].is_string());
    assert_eq!(target["metadata"]["labels"]["env"], "test");
    assert_eq!(target["metadata"]["labels"]["app"], "web");
    assert_eq!(target["spec"]["runStrategy"], "Halted");
    let tgt_claims = claims_of(&target);
    assert_eq!(tgt_claims.len(), 2);
    for (s, t) in src_claims.iter().zip(&tgt_claims) {
        assert_ne!(s, t);
    }
    let tgt_sums: Vec<String> = tgt_claims
        .iter()
        .map(|c| clone_md5(&snap_claim_image(&h, NS, c)))
        .collect();
    assert_eq!(src_sums, tgt_sums, "the copies differ from the source");
    for c in &tgt_claims {
        let pvc = snap_get(&h, "pvc", NS, c);
        assert_eq!(pvc["spec"]["storageClassName"], "vmsnap-dir");
    }

    // The copy boots with the source's data.
    clone_vmsnap_ok(&h, &["start", "dcopy"]);
    clone_wait_guest(&h, NS, "dcopy");
    let (_, out, _) = h.sh(
        NS,
        "dcopy",
        "md5sum /data/db | cut -d' ' -f1; cat /sys/class/net/eth0/address",
    );
    let mut l = out.lines();
    assert_eq!(l.next(), Some(sum.trim()));
    assert_eq!(l.next(), Some("02:aa:bb:cc:dd:ee"));
    eprintln!(
        "timings: copy clone of 1Gi+256Mi {copy_time:?}, total {:?}",
        t0.elapsed()
    );
}
