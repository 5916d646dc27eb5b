//! Issue 3: a VM boots the real guest under TCG and its agent connects.

mod common;

use common::{guest_vm, VmHost};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn vm_boot_agent_connected_within_30s() {
    let h = VmHost::start();
    let vm = guest_vm(
        "boot",
        "Always",
        json!({"name": "rootdisk", "containerDisk": {"image": "vmsnap.io/guest-rootfs"}}),
    );
    let t0 = Instant::now();
    h.apply_json("default", &vm);
    let vm = h.wait_condition("default", "boot", "AgentConnected", Duration::from_secs(30));
    let took = t0.elapsed();
    eprintln!("boot to AgentConnected: {took:?}");
    assert_eq!(vm["status"]["printableStatus"], "Running");
    assert_eq!(vm["status"]["ready"], true);
    let vmi = h.vmi("default", "boot").expect("vmi");
    assert_eq!(vmi["status"]["phase"], "Running");
    assert_eq!(vmi["status"]["accelerator"], "tcg");
    assert!(vmi["status"]["qemuPid"].as_i64().unwrap_or(0) > 0, "{vmi}");
    assert!(vmi["status"]["nodeName"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(
        vmi["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachine"
    );
    let mac = vmi["status"]["interfaces"][0]["mac"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(mac.starts_with("52:54:00:"), "{vmi}");
    // The guest sees the MAC that the status reports.
    let (code, out, _) = h.sh("default", "boot", "cat /sys/class/net/eth0/address");
    assert_eq!(code, 0);
    assert_eq!(out.trim(), mac);
    // The agent's OS info reached the status.
    let vmi = h.wait_for("guestOSInfo", Duration::from_secs(10), || {
        h.vmi("default", "boot")
            .filter(|v| v["status"]["guestOSInfo"].is_object())
    });
    assert!(
        vmi["status"]["guestOSInfo"]["kernelRelease"]
            .as_str()
            .is_some(),
        "{vmi}"
    );
    // A failing command reports its exit code and output.
    let (code, _, err) = h.sh("default", "boot", "echo oops >&2; exit 7");
    assert_eq!((code, err.trim()), (7, "oops"));
}
