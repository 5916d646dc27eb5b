//! Issue 3: VMs on real volumes: the demo verb, persistence across stop and start, the CLI
//! verbs, and `kubectl apply` + `kubectl wait` of a KubeVirt-style manifest.

mod common;

use common::{virt_guest_dir, VmHost};
use std::time::Duration;

fn out(o: &std::process::Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn vm_demo_cli_and_root_disk_persists_across_stop_start() {
    let h = VmHost::start();
    let (code, stdout, stderr) = out(&h.vmsnap(&["demo", "--name", "d1", "--timeout", "90s"]));
    assert_eq!(code, 0, "demo failed: {stdout}\n{stderr}\n{}", h.log());
    assert!(stdout.contains("vmsnap guest-exec d1"), "{stdout}");
    let vm = h.vm("default", "d1");
    assert_eq!(api::condition(&vm, "AgentConnected"), Some(true), "{vm}");
    let vmi = h.vmi("default", "d1").expect("vmi");
    assert_eq!(vmi["spec"]["volumes"][0]["dataVolume"]["name"], "d1-root");

    // Write on the root disk through the CLI, stop, start, read it back.
    let (code, _, err) = out(&h.vmsnap(&[
        "guest-exec",
        "d1",
        "--",
        "sh",
        "-c",
        "echo persisted-42 > /root/keep; sync",
    ]));
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = out(&h.vmsnap(&["stop", "d1"]));
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("Stopped"), "{stdout}");
    assert!(
        h.vmi("default", "d1").is_none(),
        "the VMI should be gone after stop"
    );
    // The console stream of a stopped VM is its whole serial log, and it ends.
    let (status, body) = h
        .client()
        .raw(
            "GET",
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/d1/console",
            None,
            None,
        )
        .expect("console");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("VMSNAP-GUEST-READY"));
    let (code, stdout, err) = out(&h.vmsnap(&["start", "d1"]));
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("Running"), "{stdout}");
    h.wait_condition("default", "d1", "AgentConnected", Duration::from_secs(60));
    let (code, stdout, err) = out(&h.vmsnap(&["guest-exec", "d1", "--", "cat", "/root/keep"]));
    assert_eq!((code, stdout.trim()), (0, "persisted-42"), "{err}");

    // The guest's exit code becomes the CLI's; stderr goes to stderr.
    let (code, _, err) =
        out(&h.vmsnap(&["guest-exec", "d1", "--", "sh", "-c", "echo bad >&2; exit 3"]));
    assert_eq!((code, err.trim()), (3, "bad"));
    // The serial console has the guest's boot messages.
    let (code, stdout, _) = out(&h.vmsnap(&["console", "d1", "--no-follow"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("VMSNAP-GUEST-READY"), "{stdout}");
    // Starting a running VM is refused with a clear message.
    let (code, _, err) = out(&h.vmsnap(&["start", "d1"]));
    assert_ne!(code, 0);
    assert!(err.contains("already running"), "{err}");
}

#[test]
fn vm_kubectl_apply_manifest_then_wait_ready() {
    let h = VmHost::start();
    let image = virt_guest_dir().join("rootfs.img");
    let (code, stdout, err) = out(&h.vmsnap(&[
        "image-upload",
        "dv",
        "golden",
        "--size",
        "1Gi",
        "--image-path",
        image.to_str().unwrap(),
        "--wait",
    ]));
    assert_eq!(code, 0, "upload failed: {stdout}\n{err}");
    let manifest = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: larry
  labels:
    kubevirt.io/vm: larry
spec:
  running: true
  dataVolumeTemplates:
  - metadata:
      name: larry-rootdisk
    spec:
      source:
        pvc:
          namespace: default
          name: golden
      storage:
        resources:
          requests:
            storage: 1Gi
  template:
    metadata:
      labels:
        kubevirt.io/vm: larry
    spec:
      domain:
        cpu:
          cores: 1
        resources:
          requests:
            memory: 256Mi
        firmware:
          serial: larry-0001
          kernelBoot:
            kernelArgs: console=ttyS0 root=/dev/vda rw quiet
            container:
              image: vmsnap.io/guest-kernel
        devices:
          disks:
          - name: rootdisk
            disk:
              bus: virtio
          interfaces:
          - name: default
            masquerade: {}
      networks:
      - name: default
        pod: {}
      terminationGracePeriodSeconds: 30
      volumes:
      - name: rootdisk
        dataVolume:
          name: larry-rootdisk
"#;
    let o = h.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = h.kubectl(&[
        "wait",
        "vm",
        "larry",
        "--for",
        "condition=Ready",
        "--timeout=120s",
    ]);
    assert!(
        o.status.success(),
        "kubectl wait: {}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        h.log()
    );
    let table = h.kubectl_ok(&["get", "vm", "larry"]);
    assert!(table.contains("Running"), "{table}");
    h.wait_condition(
        "default",
        "larry",
        "AgentConnected",
        Duration::from_secs(60),
    );
    let (code, stdout, _) = h.sh("default", "larry", "cat /sys/class/dmi/id/product_serial");
    assert_eq!((code, stdout.trim()), (0, "larry-0001"));
}
