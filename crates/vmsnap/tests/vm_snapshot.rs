//! Issue 5: VM snapshot and restore on the real guest, through real kubectl.

mod common;

use common::{guest_vm, virt_guest_dir, VmHost};
use serde_json::{json, Value};
use std::time::Duration;

const NS: &str = "default";

fn res(name: &str) -> &'static api::Resource {
    api::registry::lookup(name).expect("registered")
}

/// A running VM with a root disk (the guest image, uploaded) and a blank data disk at /data,
/// both DataVolumes on the default class.
fn lab_vm(h: &VmHost, name: &str) {
    let img = virt_guest_dir().join("rootfs.img");
    let out = h.vmsnap(&[
        "image-upload",
        "dv",
        &format!("{name}-root"),
        "--size",
        "1Gi",
        "--image-path",
        img.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "upload: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
    h.apply_json(NS, &json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": format!("{name}-data")},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "256Mi"}}}}
    }));
    let mut vm = guest_vm(
        name,
        "Always",
        json!({"name": "rootdisk", "dataVolume": {"name": format!("{name}-root")}}),
    );
    let spec = &mut vm["spec"]["template"]["spec"];
    spec["domain"]["devices"]["disks"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "datadisk", "disk": {"bus": "virtio"}}));
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "datadisk", "dataVolume": {"name": format!("{name}-data")}}));
    h.apply_json(NS, &vm);
    h.wait_condition(NS, name, "AgentConnected", Duration::from_secs(60));
    // /data is mounted once the data disk is formatted by the guest's init.
    h.wait_for("/data mounted", Duration::from_secs(30), || {
        let (code, _, _) = h.sh(NS, name, "grep -q /data /proc/mounts");
        (code == 0).then_some(())
    });
}

fn kubectl_ok(h: &VmHost, args: &[&str]) -> String {
    let out = h.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stop(h: &VmHost, name: &str) {
    let out = h.vmsnap(&["stop", name]);
    assert!(
        out.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.wait_for("VMI gone", Duration::from_secs(60), || {
        h.vmi(NS, name).is_none().then_some(())
    });
}

fn start(h: &VmHost, name: &str) {
    let out = h.vmsnap(&["start", name]);
    assert!(
        out.status.success(),
        "start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.wait_condition(NS, name, "AgentConnected", Duration::from_secs(60));
    h.wait_for("/data mounted", Duration::from_secs(30), || {
        let (code, _, _) = h.sh(NS, name, "grep -q /data /proc/mounts");
        (code == 0).then_some(())
    });
}

fn get(h: &VmHost, kind: &str, name: &str) -> Value {
    h.client()
        .get(res(kind), NS, name)
        .unwrap_or_else(|e| panic!("get {kind} {name}: {e}"))
}

#[test]
fn vm_snapshot_seed001_lab_online_snapshot_then_restore_brings_data_back() {
    let h = VmHost::start();
    lab_vm(&h, "lab");
    let (code, sum, err) = h.sh(NS, "lab", "dd if=/dev/urandom of=/data/db bs=1M count=8 2>/dev/null && echo root-marker > /marker && sync && md5sum /data/db | cut -d' ' -f1");
    assert_eq!(code, 0, "{err}");

    // Seed 001's snapshot manifest shape, applied with kubectl.
    let snap = "apiVersion: snapshot.kubevirt.io/v1alpha1\nkind: VirtualMachineSnapshot\nmetadata:\n  name: my-vmsnapshot\nspec:\n  source:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: lab\n";
    let out = h.kubectl_stdin(&["apply", "-f", "-"], Some(snap));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl_ok(
        &h,
        &[
            "wait",
            "vmsnapshot",
            "my-vmsnapshot",
            "--for",
            "condition=Ready",
            "--timeout=60s",
        ],
    );
    let s = get(&h, "vmsnapshot", "my-vmsnapshot");
    assert_eq!(s["status"]["phase"], "Succeeded", "{s}");
    assert_eq!(s["status"]["readyToUse"], true);
    let inds: Vec<&str> = s["status"]["indications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        inds.contains(&"Online") && inds.contains(&"GuestAgent"),
        "{inds:?}"
    );
    let window = s["status"]["quiesce"]["windowMillis"]
        .as_f64()
        .expect("freeze window recorded");
    assert!(window > 0.0 && window < 5000.0, "{window}");
    assert_eq!(s["status"]["quiesce"]["method"], "freeze");
    assert_eq!(
        s["status"]["snapshotVolumes"]["includedVolumes"],
        json!(["rootdisk", "datadisk"])
    );
    // The guest was thawed: writes work.
    let (code, _, _) = h.sh(NS, "lab", "echo after > /data/after && sync");
    assert_eq!(code, 0);
    let vm = get(&h, "vm", "lab");
    assert!(
        vm["status"]["snapshotInProgress"].is_null(),
        "lock not released: {vm}"
    );
    // The content holds the spec and one volume snapshot per disk.
    let content = get(
        &h,
        "vmsnapshotcontent",
        s["status"]["virtualMachineSnapshotContentName"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(content["status"]["readyToUse"], true);
    for b in content["spec"]["volumeBackups"].as_array().unwrap() {
        let vs = get(
            &h,
            "volumesnapshot",
            b["volumeSnapshotName"].as_str().unwrap(),
        );
        assert_eq!(vs["status"]["readyToUse"], true, "{vs}");
    }
    // Metrics publish the freeze window.
    let metrics =
        String::from_utf8(h.client().raw("GET", "/metrics", None, None).unwrap().1).unwrap();
    assert!(
        metrics.contains("vmsnap_freeze_window_seconds"),
        "{metrics}"
    );

    // Destroy the data, stop, restore (seed 001's flow).
    let (code, _, _) = h.sh(NS, "lab", "rm -f /data/db /marker && sync");
    assert_eq!(code, 0);
    stop(&h, "lab");
    let restore = "apiVersion: snapshot.kubevirt.io/v1alpha1\nkind: VirtualMachineRestore\nmetadata:\n  name: restore-lab\nspec:\n  target:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: lab\n  virtualMachineSnapshotName: my-vmsnapshot\n";
    let out = h.kubectl_stdin(&["apply", "-f", "-"], Some(restore));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl_ok(
        &h,
        &[
            "wait",
            "vmrestore",
            "restore-lab",
            "--for",
            "condition=Ready",
            "--timeout=60s",
        ],
    );
    let r = get(&h, "vmrestore", "restore-lab");
    assert_eq!(r["status"]["complete"], true, "{r}");
    let restored: Vec<String> = r["status"]["restores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["persistentVolumeClaim"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(restored.len(), 2);
    for c in &restored {
        assert!(c.starts_with("restore-"), "{c}");
    }
    start(&h, "lab");
    let (code, sum2, _) = h.sh(
        NS,
        "lab",
        "md5sum /data/db | cut -d' ' -f1; cat /marker; test ! -e /data/after && echo no-after",
    );
    assert_eq!(code, 0);
    let mut lines = sum2.lines();
    assert_eq!(lines.next(), Some(sum.trim()), "data not restored");
    assert_eq!(lines.next(), Some("root-marker"));
    assert_eq!(lines.next(), Some("no-after"));

    // No orphans: the replaced DataVolumes and claims are deleted once unreferenced.
    h.wait_for(
        "replaced volumes reclaimed",
        Duration::from_secs(30),
        || {
            let gone = ["lab-root", "lab-data"]
                .iter()
                .all(|c| h.client().get(res("pvc"), NS, c).is_err());
            gone.then_some(())
        },
    );
    let r = get(&h, "vmrestore", "restore-lab");
    for x in r["status"]["replacedVolumes"].as_array().unwrap() {
        assert_eq!(x["reclaimed"], true, "{r}");
    }
    // The snapshot stays usable after its source volumes are gone: restore it again.
    stop(&h, "lab");
    h.apply_json(NS, &json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore", "metadata": {"name": "restore-lab-2"}, "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "lab"}, "virtualMachineSnapshotName": "my-vmsnapshot"}}));
    kubectl_ok(
        &h,
        &[
            "wait",
            "vmrestore",
            "restore-lab-2",
            "--for",
            "condition=Ready",
            "--timeout=60s",
        ],
    );
    start(&h, "lab");
    let (_, sum3, _) = h.sh(NS, "lab", "md5sum /data/db | cut -d' ' -f1");
    assert_eq!(sum3.trim(), sum.trim());
}
