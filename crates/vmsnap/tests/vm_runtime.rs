//! Issue 3: freeze and thaw, daemon restarts, crashes, and two VMs side by side, on the real
//! guest under TCG.

mod common;

use common::{guest_vm, VmHost};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ephemeral_root() -> Value {
    json!({"name": "rootdisk", "containerDisk": {"image": "vmsnap.io/guest-rootfs"}})
}

fn boot(h: &VmHost, name: &str, strategy: &str) -> Value {
    h.apply_json("default", &guest_vm(name, strategy, ephemeral_root()));
    h.wait_condition("default", name, "AgentConnected", Duration::from_secs(60));
    h.vmi("default", name).expect("vmi")
}

fn qemu_pid(vmi: &Value) -> i64 {
    vmi["status"]["qemuPid"].as_i64().unwrap_or(0)
}

/// Consecutive differences of the guest timestamps in `/root/ticks`.
fn tick_gaps(h: &VmHost, name: &str) -> Vec<f64> {
    let (code, out, _) = h.sh("default", name, "cat /root/ticks");
    assert_eq!(code, 0);
    let ticks: Vec<f64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    ticks.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn vm_freeze_blocks_guest_writes_until_thaw() {
    let h = VmHost::start();
    boot(&h, "fz", "Always");
    // A writer that appends the guest's uptime to a file on the root disk five times a second.
    let (code, _, err) = h.sh(
        "default",
        "fz",
        "(while true; do read up idle < /proc/uptime; echo $up >> /root/ticks; sync; sleep 0.2; done) >/dev/null 2>&1 &",
    );
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_secs(2));

    let out = h
        .action(
            "default",
            "fz",
            "freeze",
            json!({"unfreezeTimeoutSeconds": 60}),
        )
        .expect("freeze");
    assert!(out["frozen"].as_u64().unwrap_or(0) >= 1, "{out}");
    let frozen_at = Instant::now();
    let st = h
        .action("default", "fz", "fsfreeze-status", json!({}))
        .expect("status");
    assert_eq!(st["status"], "frozen");
    assert_eq!(
        h.vmi("default", "fz").expect("vmi")["status"]["fsFreezeStatus"],
        "frozen"
    );
    // The agent refuses guest-exec while frozen; the writer is blocked in the kernel.
    std::thread::sleep(Duration::from_secs(4));
    h.action("default", "fz", "unfreeze", json!({}))
        .expect("thaw");
    let frozen_for = frozen_at.elapsed().as_secs_f64();
    let st = h
        .action("default", "fz", "fsfreeze-status", json!({}))
        .expect("status");
    assert_eq!(st["status"], "thawed");
    assert!(h.vmi("default", "fz").expect("vmi")["status"]["fsFreezeStatus"].is_null());

    // The blocked write completed after the thaw and the writer went on.
    std::thread::sleep(Duration::from_secs(2));
    let gaps = tick_gaps(&h, "fz");
    let longest = gaps.iter().cloned().fold(0.0, f64::max);
    let after = gaps.iter().rev().take_while(|g| **g < 3.0).count();
    assert!(
        longest >= 3.0 && longest <= frozen_for + 3.0,
        "expected one gap of about {frozen_for:.1} s in the guest's writes, got {gaps:?}"
    );
    assert!(
        after >= 2,
        "the writer did not resume after the thaw: {gaps:?}"
    );
}

#[test]
fn vm_survives_daemon_sigkill_and_thaws_on_restart() {
    let mut h = VmHost::start();
    let vmi = boot(&h, "keep", "Always");
    let pid = qemu_pid(&vmi);
    assert!(pid > 0);
    // Leave the guest frozen, then kill the daemon: the store says frozen.
    h.action("default", "keep", "freeze", json!({}))
        .expect("freeze");
    h.kill9();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU died with the daemon"
    );
    let restarted = Instant::now();
    h.spawn();
    let st = h.wait_for("thaw after restart", Duration::from_secs(10), || {
        let v = h.vmi("default", "keep")?;
        v["status"]["fsFreezeStatus"].is_null().then_some(v)
    });
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "thaw took {:?}",
        restarted.elapsed()
    );
    assert_eq!(qemu_pid(&st), pid, "the VM was restarted: {st}");
    let fs = h
        .action("default", "keep", "fsfreeze-status", json!({}))
        .expect("status");
    assert_eq!(fs["status"], "thawed");
    let vm = h.vm("default", "keep");
    assert_eq!(vm["status"]["printableStatus"], "Running", "{vm}");
    assert_eq!(api::condition(&vm, "AgentConnected"), Some(true), "{vm}");
    let (code, out, _) = h.sh("default", "keep", "echo alive");
    assert_eq!((code, out.trim()), (0, "alive"));
    assert_eq!(qemu_pid(&h.vmi("default", "keep").expect("vmi")), pid);
}

#[test]
fn vm_crash_is_reported_and_rerun_on_failure_restarts() {
    let h = VmHost::start();
    let vmi = boot(&h, "crashy", "RerunOnFailure");
    let (pid, uid) = (qemu_pid(&vmi), api::meta::uid(&vmi).to_string());
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    // The failure is recorded on the VM, with the VMI that failed.
    let vm = h.wait_for("startFailure", Duration::from_secs(20), || {
        let vm = h.vm("default", "crashy");
        (vm["status"]["startFailure"]["lastFailedVMIUID"] == uid.as_str()).then_some(vm)
    });
    let msg = vm["status"]["startFailure"]["message"]
        .as_str()
        .unwrap_or("");
    assert!(msg.contains("exited unexpectedly"), "{vm}");
    let events = h.kubectl_ok(&["get", "events", "-n", "default", "-o", "json"]);
    assert!(events.contains("Crashed"), "no Crashed event: {events}");
    // And a new VMI runs with a new QEMU.
    let vm = h.wait_condition(
        "default",
        "crashy",
        "AgentConnected",
        Duration::from_secs(60),
    );
    assert_eq!(vm["status"]["printableStatus"], "Running");
    let vmi = h.vmi("default", "crashy").expect("vmi");
    assert_ne!(api::meta::uid(&vmi), uid);
    assert_ne!(qemu_pid(&vmi), pid);
}

#[test]
fn vm_two_side_by_side_have_their_own_identity() {
    let h = VmHost::start();
    let mut a = guest_vm("id-a", "Always", ephemeral_root());
    a["spec"]["template"]["spec"]["domain"]["firmware"]["serial"] = json!("serial-aaa");
    a["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] =
        json!("02:00:00:aa:00:01");
    let mut b = guest_vm("id-b", "Always", ephemeral_root());
    b["spec"]["template"]["spec"]["domain"]["firmware"]["serial"] = json!("serial-bbb");
    h.apply_json("default", &a);
    h.apply_json("default", &b);
    for n in ["id-a", "id-b"] {
        h.wait_condition("default", n, "AgentConnected", Duration::from_secs(90));
    }
    let look = |n: &str| {
        let (code, out, err) = h.sh(
            "default",
            n,
            "cat /sys/class/net/eth0/address; cat /sys/class/dmi/id/product_serial; cat /sys/class/dmi/id/product_uuid",
        );
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| l.trim().to_lowercase())
            .collect::<Vec<_>>()
    };
    let (ia, ib) = (look("id-a"), look("id-b"));
    assert_eq!(ia[0], "02:00:00:aa:00:01");
    assert_eq!(ia[1], "serial-aaa");
    assert_eq!(ib[1], "serial-bbb");
    assert_ne!(ia[0], ib[0]);
    assert_ne!(ia[2], ib[2], "firmware UUIDs must differ");
    let vmi_b = h.vmi("default", "id-b").expect("vmi");
    assert_eq!(
        vmi_b["status"]["interfaces"][0]["mac"].as_str(),
        Some(ib[0].as_str())
    );
    // The generated identity is stable across a restart of the VM.
    let old_uid = api::meta::uid(&vmi_b).to_string();
    h.action("default", "id-b", "restart", json!({}))
        .expect("restart");
    h.wait_for("restarted id-b", Duration::from_secs(90), || {
        let vm = h.vm("default", "id-b");
        let vmi = h.vmi("default", "id-b")?;
        (api::meta::uid(&vmi) != old_uid && api::condition(&vm, "AgentConnected") == Some(true))
            .then_some(())
    });
    assert_eq!(look("id-b"), ib);
}
