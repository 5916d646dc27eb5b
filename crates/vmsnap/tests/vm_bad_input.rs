//! Issue 3, bad input: a missing volume keeps the VM stopped with a clear condition; a QEMU
//! that cannot start gives a clear status instead of a hang.

mod common;

use common::{guest_vm, VmHost};
use serde_json::json;
use std::time::Duration;

fn ready_condition(vm: &serde_json::Value) -> serde_json::Value {
    vm["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn vm_missing_pvc_stays_stopped_with_clear_condition() {
    let h = VmHost::start();
    h.apply_json(
        "default",
        &guest_vm(
            "orphan",
            "Always",
            json!({"name": "rootdisk", "persistentVolumeClaim": {"claimName": "no-such-claim"}}),
        ),
    );
    let vm = h.wait_for("FailedPvcNotFound", Duration::from_secs(15), || {
        let vm = h.vm("default", "orphan");
        (ready_condition(&vm)["reason"] == "FailedPvcNotFound").then_some(vm)
    });
    let c = ready_condition(&vm);
    assert_eq!(c["status"], "False");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or("")
            .contains("no-such-claim"),
        "{c}"
    );
    // It stays that way: no VMI, no QEMU.
    std::thread::sleep(Duration::from_secs(3));
    let vm = h.vm("default", "orphan");
    assert_eq!(vm["status"]["printableStatus"], "Stopped", "{vm}");
    assert_eq!(vm["status"]["created"], false);
    assert!(h.vmi("default", "orphan").is_none());
    let described = h.kubectl_ok(&["describe", "vm", "orphan"]);
    assert!(described.contains("no-such-claim"), "{described}");
}

#[test]
fn vm_bad_memory_size_fails_clearly() {
    let h = VmHost::start();
    let mut vm = guest_vm(
        "huge",
        "Always",
        json!({"name": "rootdisk", "containerDisk": {"image": "vmsnap.io/guest-rootfs"}}),
    );
    vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = json!("4Ti");
    h.apply_json("default", &vm);
    let vm = h.wait_for("a launch failure", Duration::from_secs(30), || {
        let vm = h.vm("default", "huge");
        let msg = ready_condition(&vm)["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        msg.contains("memory").then_some(vm)
    });
    let c = ready_condition(&vm);
    assert_eq!(c["status"], "False");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or("")
            .contains("QEMU failed to start"),
        "{c}"
    );
    assert_eq!(api::condition(&vm, "Failure"), Some(true), "{vm}");
    // It keeps retrying with a backoff, as KubeVirt's CrashLoopBackOff.
    let vm = h.wait_for("CrashLoopBackOff", Duration::from_secs(30), || {
        let vm = h.vm("default", "huge");
        (vm["status"]["printableStatus"] == "CrashLoopBackOff").then_some(vm)
    });
    assert!(
        vm["status"]["startFailure"]["retries"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{vm}"
    );
}
