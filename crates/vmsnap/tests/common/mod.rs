//! Test harness: a real `vmsnap serve` on a free port with its own data dir, and the real
//! `kubectl` pointed at it.
#![allow(dead_code)]

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        Self::start_with_env(extra, &[])
    }

    /// Like `start_with`, with extra environment variables for the first `vmsnap serve` (test
    /// hooks). A later `spawn()` restarts without them.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("vmsnap-test-")
            .tempdir()
            .expect("tempdir");
        let mut s = Server {
            dir,
            port: free_port(),
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn_with_env(env);
        s
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Starts (or restarts) the server process on the same data dir and port.
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[])
    }

    /// Starts (or restarts) the server with extra environment variables.
    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_vmsnap"))
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.extra_args)
            .env("VMSNAP_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vmsnap serve");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if self.kubeconfig().exists() {
                if let Ok(c) = client::Client::from_kubeconfig(&self.kubeconfig()) {
                    if let Ok((200, _)) = c.raw("GET", "/readyz", None, None) {
                        return;
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "vmsnap serve did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or clean up, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> client::Client {
        client::Client::from_kubeconfig(&self.kubeconfig()).expect("client")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let cache = self.dir.path().join("kubectl-cache");
        let mut cmd = Command::new("kubectl");
        cmd.arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl on PATH");
        if let Some(s) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(s.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("kubectl")
    }

    /// Runs kubectl and asserts success, returning stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn vmsnap(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vmsnap"))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .expect("vmsnap")
    }

    pub fn create_namespace(&self, ns: &str) {
        let doc = format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{{\"name\":\"{ns}\"}}}}"
        );
        let out = self.kubectl_stdin(&["apply", "-f", "-"], Some(&doc));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The store's global revision, read from a list.
    pub fn revision(&self) -> u64 {
        let v: Value = self
            .client()
            .request("GET", "/api/v1/namespaces", None)
            .expect("list");
        v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("rv")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        kill_qemus_under(self.dir.path());
        unmount_under(self.dir.path());
    }
}

/// QEMU processes outlive the daemon by design; a finished test must stop its own.
pub fn kill_qemus_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let needle = dir.to_string_lossy().into_owned();
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("qemu-system") && cmd.contains(&needle) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

/// Loop-mounted pools under a test's data dir are unmounted so loop devices are not leaked.
pub fn unmount_under(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Ok(base) = dir.canonicalize() else { return };
    let base = base.to_string_lossy().into_owned();
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(|m| m.replace("\\040", " ")))
        .filter(|m| m.starts_with(&base))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).status();
    }
}

pub fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/seeds")
}

// --- VM test helpers (issue 3) ---

/// A server for VM tests (its QEMU processes are killed when the server is dropped).
pub struct VmHost {
    pub server: Server,
}

impl std::ops::Deref for VmHost {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for VmHost {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl VmHost {
    /// A server that runs VMs under TCG (KVM hangs on the test machines).
    pub fn start() -> VmHost {
        let dir = virt_guest_dir();
        for f in ["vmlinuz", "initrd.img", "rootfs.img"] {
            assert!(
                dir.join(f).is_file(),
                "guest image missing: {} (run scripts/build-guest.sh)",
                dir.join(f).display()
            );
        }
        VmHost {
            server: Server::start_with(&["--accel", "tcg"]),
        }
    }

    fn vm_res(kind: &str) -> &'static api::Resource {
        api::registry::by_plural("kubevirt.io", kind).expect("registered")
    }

    pub fn vm(&self, ns: &str, name: &str) -> Value {
        self.client()
            .get(Self::vm_res("virtualmachines"), ns, name)
            .expect("get vm")
    }

    pub fn vmi(&self, ns: &str, name: &str) -> Option<Value> {
        self.client()
            .get(Self::vm_res("virtualmachineinstances"), ns, name)
            .ok()
    }

    /// Calls a `subresources.kubevirt.io` action on a VM.
    pub fn action(&self, ns: &str, name: &str, action: &str, body: Value) -> api::Result<Value> {
        self.client().request(
            "PUT",
            &format!(
                "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/{action}"
            ),
            Some(&body),
        )
    }

    /// Runs `sh -c script` in the guest: (exit code, stdout, stderr).
    pub fn sh(&self, ns: &str, name: &str, script: &str) -> (i64, String, String) {
        let out = self
            .action(
                ns,
                name,
                "guest-exec",
                serde_json::json!({"command": ["/bin/sh", "-c", script], "timeoutSeconds": 60}),
            )
            .unwrap_or_else(|e| panic!("guest-exec {script:?}: {e:?}\n{}", self.log()));
        (
            out["exitCode"].as_i64().unwrap_or(-1),
            out["stdout"].as_str().unwrap_or("").to_string(),
            out["stderr"].as_str().unwrap_or("").to_string(),
        )
    }

    /// Polls `f` until it returns Some, failing with `what` and the server log after `limit`.
    pub fn wait_for<T>(&self, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}\n--- server log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for the VM's condition `ty` to be True; returns the VM.
    pub fn wait_condition(&self, ns: &str, name: &str, ty: &str, limit: Duration) -> Value {
        self.wait_for(&format!("{ns}/{name} {ty}=True"), limit, || {
            let vm = self.vm(ns, name);
            (api::condition(&vm, ty) == Some(true)).then_some(vm)
        })
    }

    pub fn apply_json(&self, ns: &str, obj: &Value) {
        let out = self.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], Some(&obj.to_string()));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The guest image directory the server uses.
pub fn virt_guest_dir() -> PathBuf {
    std::env::var_os("VMSNAP_GUEST_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vmsnap/guest"))
}

/// A VirtualMachine in KubeVirt's dialect booting the guest kernel, with `volume` as its
/// root disk, 1 vCPU and 256 MiB.
pub fn guest_vm(name: &str, run_strategy: &str, volume: Value) -> Value {
    serde_json::json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "runStrategy": run_strategy,
            "template": {
                "metadata": {"labels": {"kubevirt.io/domain": name}},
                "spec": {
                    "domain": {
                        "cpu": {"cores": 1},
                        "memory": {"guest": "256Mi"},
                        "firmware": {
                            "kernelBoot": {
                                "kernelArgs": "console=ttyS0 root=/dev/vda rw quiet",
                                "container": {"image": "vmsnap.io/guest-kernel"}
                            }
                        },
                        "devices": {
                            "disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}],
                            "interfaces": [{"name": "default", "masquerade": {}}]
                        }
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "terminationGracePeriodSeconds": 20,
                    "volumes": [volume]
                }
            }
        }
    })
}

// --- snapshot and restore test helpers (issue 5) ---

impl VmHost {
    /// A TCG VM server whose first `vmsnap serve` gets `env` (test hooks).
    pub fn start_with_env(env: &[(&str, &str)]) -> VmHost {
        VmHost {
            server: Server::start_with_env(&["--accel", "tcg"], env),
        }
    }
}

pub fn snap_res(name: &str) -> &'static api::Resource {
    api::registry::lookup(name).unwrap_or_else(|| panic!("resource {name} registered"))
}

/// The object, or None when it does not exist.
pub fn snap_try_get(h: &Server, kind: &str, ns: &str, name: &str) -> Option<Value> {
    h.client().get(snap_res(kind), ns, name).ok()
}

pub fn snap_get(h: &Server, kind: &str, ns: &str, name: &str) -> Value {
    h.client()
        .get(snap_res(kind), ns, name)
        .unwrap_or_else(|e| panic!("get {kind} {ns}/{name}: {e}\n{}", h.log()))
}

pub fn snap_list(h: &Server, kind: &str, ns: Option<&str>) -> Vec<Value> {
    h.client()
        .list(snap_res(kind), ns, None)
        .unwrap_or_else(|e| panic!("list {kind}: {e}"))["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Uploads the guest's root filesystem into DataVolume `<vm>-root` (on `class`, else the
/// default class) and makes a blank 256Mi DataVolume `<vm>-data` on `data_class`; then applies
/// a 1-vCPU 256Mi VM using both (the data disk is /data in the guest). With `Always`, waits
/// for the agent and /data.
pub fn snap_lab_vm(
    h: &VmHost,
    ns: &str,
    name: &str,
    run_strategy: &str,
    class: Option<&str>,
    data_class: Option<&str>,
) {
    lab_vm_with_meta(
        h,
        ns,
        name,
        run_strategy,
        class,
        data_class,
        Value::Null,
        Value::Null,
    );
}

/// The lab VM of `snap_lab_vm`, with `meta` merged into the VM's metadata and
/// `template_meta` into its template's.
#[allow(clippy::too_many_arguments)]
pub fn lab_vm_with_meta(
    h: &VmHost,
    ns: &str,
    name: &str,
    run_strategy: &str,
    class: Option<&str>,
    data_class: Option<&str>,
    meta: Value,
    template_meta: Value,
) {
    let img = virt_guest_dir().join("rootfs.img");
    let root = format!("{name}-root");
    let mut args = vec![
        "-n",
        ns,
        "image-upload",
        "dv",
        &root,
        "--size",
        "1Gi",
        "--image-path",
        img.to_str().expect("utf-8 path"),
    ];
    if let Some(c) = class {
        args.extend(["--storage-class", c]);
    }
    let out = h.vmsnap(&args);
    assert!(
        out.status.success(),
        "upload: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
    let mut dv = serde_json::json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": format!("{name}-data")},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "256Mi"}}}}
    });
    if let Some(c) = data_class {
        dv["spec"]["storage"]["storageClassName"] = serde_json::json!(c);
    }
    h.apply_json(ns, &dv);
    let mut vm = guest_vm(
        name,
        run_strategy,
        serde_json::json!({"name": "rootdisk", "dataVolume": {"name": root}}),
    );
    for (k, v) in meta.as_object().into_iter().flatten() {
        vm["metadata"][k] = v.clone();
    }
    for (k, v) in template_meta.as_object().into_iter().flatten() {
        vm["spec"]["template"]["metadata"][k] = v.clone();
    }
    let spec = &mut vm["spec"]["template"]["spec"];
    spec["domain"]["devices"]["disks"]
        .as_array_mut()
        .expect("disks")
        .push(serde_json::json!({"name": "datadisk", "disk": {"bus": "virtio"}}));
    spec["volumes"].as_array_mut().expect("volumes").push(
        serde_json::json!({"name": "datadisk", "dataVolume": {"name": format!("{name}-data")}}),
    );
    h.apply_json(ns, &vm);
    if run_strategy == "Always" {
        snap_wait_guest(h, ns, name);
    }
}

/// Waits for the guest agent and the /data mount.
pub fn snap_wait_guest(h: &VmHost, ns: &str, name: &str) {
    h.wait_condition(ns, name, "AgentConnected", Duration::from_secs(120));
    h.wait_for("/data mounted", Duration::from_secs(60), || {
        let (code, _, _) = h.sh(ns, name, "grep -q /data /proc/mounts");
        (code == 0).then_some(())
    });
}

/// Creates a VirtualMachineSnapshot of `vm`; `extra` is merged into its spec.
pub fn snap_create(h: &Server, ns: &str, name: &str, vm: &str, extra: Value) {
    let mut spec = serde_json::json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let obj = serde_json::json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": name, "namespace": ns}, "spec": spec});
    h.client()
        .create(snap_res("vmsnapshot"), ns, &obj)
        .unwrap_or_else(|e| panic!("create snapshot {name}: {e}"));
}

/// Waits until the snapshot's phase is Succeeded or Failed and returns it.
pub fn snap_wait_done(h: &Server, ns: &str, name: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        if let Some(s) = snap_try_get(h, "vmsnapshot", ns, name) {
            if matches!(s["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "snapshot {name} not done after {limit:?}: {s}\n{}",
                h.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The restore object for `snapshot` into `target`; `extra` is merged into its spec.
pub fn snap_restore_obj(name: &str, snapshot: &str, target: &str, extra: Value) -> Value {
    let mut spec = serde_json::json!({
        "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target},
        "virtualMachineSnapshotName": snapshot,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    serde_json::json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore", "metadata": {"name": name}, "spec": spec})
}

pub fn snap_restore(h: &Server, ns: &str, name: &str, snapshot: &str, target: &str, extra: Value) {
    let obj = snap_restore_obj(name, snapshot, target, extra);
    h.client()
        .create(snap_res("vmrestore"), ns, &obj)
        .unwrap_or_else(|e| panic!("create restore {name}: {e}"));
}

/// Waits until the restore is complete (or failed) and returns it.
pub fn snap_wait_restore(h: &Server, ns: &str, name: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let r = snap_get(h, "vmrestore", ns, name);
        if r["status"]["complete"] == true || api::condition(&r, "Failure") == Some(true) {
            return r;
        }
        assert!(
            start.elapsed() < limit,
            "restore {name} not done after {limit:?}: {r}\n{}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The host file holding a bound claim's volume (btrfs: `volumes/<vol>/disk.img`; raw-file
/// drivers: `volumes/<vol>.img`), found through the claim's pool annotation.
pub fn snap_claim_image(h: &Server, ns: &str, claim: &str) -> PathBuf {
    let pvc = snap_get(h, "pvc", ns, claim);
    let vol = pvc["spec"]["volumeName"]
        .as_str()
        .unwrap_or_else(|| panic!("claim {claim} is not bound: {pvc}"));
    let pool = pvc["metadata"]["annotations"]["vmsnap.io/pool"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no pool annotation on {pvc}"));
    for p in [
        pool.join("volumes").join(vol).join("disk.img"),
        pool.join("volumes").join(format!("{vol}.img")),
    ] {
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "no image for claim {claim} (volume {vol}) under {}",
        pool.display()
    )
}

/// A file's bytes read offline from an ext4 image with debugfs (None if absent).
pub fn snap_debugfs_cat(image: &Path, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image)
        .stderr(Stdio::piped())
        .output()
        .expect("debugfs");
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || err.contains("File not found") {
        return None;
    }
    Some(out.stdout)
}

/// `e2fsck -fn` on an image: (exit code, output). 0 means clean.
pub fn snap_fsck(image: &Path) -> (i32, String) {
    let out = Command::new("/sbin/e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .expect("e2fsck");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Volumes and storage snapshots on disk that nothing in the API accounts for: every volume
/// under `<pool>/volumes` must be bound to a claim, every snapshot under `<pool>/snapshots/<vol>/` a
/// VolumeSnapshotContent's handle. Temporary names (`.tmp-*`) count too.
pub fn snap_orphans(h: &Server, pools: &[PathBuf]) -> Vec<String> {
    let pvs: Vec<String> = snap_list(h, "pvc", None)
        .iter()
        .filter_map(|p| p["spec"]["volumeName"].as_str().map(String::from))
        .collect();
    let handles: Vec<String> = snap_list(h, "volumesnapshotcontent", None)
        .iter()
        .filter_map(|c| {
            c["status"]["snapshotHandle"]
                .as_str()
                .or(c["spec"]["source"]["snapshotHandle"].as_str())
                .map(String::from)
        })
        .collect();
    let mut out = Vec::new();
    for pool in pools {
        for e in std::fs::read_dir(pool.join("volumes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            let n = n.strip_suffix(".img").unwrap_or(&n).to_string();
            if !pvs.contains(&n) {
                out.push(format!("volume {}", e.path().display()));
            }
        }
        for d in std::fs::read_dir(pool.join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let vol = d.file_name().to_string_lossy().into_owned();
            for s in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let n = s.file_name().to_string_lossy().into_owned();
                let n = n.strip_suffix(".img").unwrap_or(&n).to_string();
                if !handles.contains(&format!("{vol}@{n}")) {
                    out.push(format!("snapshot {}", s.path().display()));
                }
            }
        }
    }
    out
}

/// The guest's fsfreeze status through the VM action ("thawed" or "frozen").
pub fn snap_freeze_status(h: &VmHost, ns: &str, vm: &str) -> String {
    h.action(ns, vm, "fsfreeze-status", serde_json::json!({}))
        .map(|v| v["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|e| format!("error: {e}"))
}

// --- clone test helpers (issue 6) ---

/// Uploads the guest root filesystem into DataVolume `<vm>-root` and a blank 256Mi
/// DataVolume `<vm>-data`, both on `class` (else the default class), then applies a 1-vCPU
/// 256Mi VM using both, with `meta` merged into its metadata and `template_meta` into its
/// template metadata. With `Always`, waits for the agent and /data.
pub fn clone_lab_vm(
    h: &VmHost,
    ns: &str,
    name: &str,
    run_strategy: &str,
    class: Option<&str>,
    meta: Value,
    template_meta: Value,
) {
    lab_vm_with_meta(h, ns, name, run_strategy, class, class, meta, template_meta);
}

/// Waits for the guest agent and the /data mount (busybox: no `mountpoint`).
pub fn clone_wait_guest(h: &VmHost, ns: &str, name: &str) {
    snap_wait_guest(h, ns, name);
}

/// The VirtualMachineClone, or None.
pub fn clone_try_get(h: &Server, ns: &str, name: &str) -> Option<Value> {
    h.client()
        .get(
            api::registry::lookup("vmclone").expect("registered"),
            ns,
            name,
        )
        .ok()
}

/// Waits until the clone's phase is Succeeded or Failed and returns it.
pub fn clone_wait_done(h: &Server, ns: &str, name: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let c = clone_try_get(h, ns, name);
        if let Some(c) = &c {
            if matches!(c["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
                return c.clone();
            }
        }
        assert!(
            start.elapsed() < limit,
            "clone {name} not done after {limit:?}: {c:?}\n{}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A condition's (status, reason, message) on any object.
pub fn clone_condition(o: &Value, ty: &str) -> Option<(String, String, String)> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
}

/// Names of objects of `kind` in `ns`.
pub fn clone_names(h: &Server, kind: &str, ns: &str) -> Vec<String> {
    h.client()
        .list(
            api::registry::lookup(kind).unwrap_or_else(|| panic!("{kind} registered")),
            Some(ns),
            None,
        )
        .unwrap_or_else(|e| panic!("list {kind}: {e}"))["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
        .collect()
}

/// Runs `vmsnap` and asserts success, returning stdout.
pub fn clone_vmsnap_ok(h: &Server, args: &[&str]) -> String {
    let out = h.vmsnap(args);
    assert!(
        out.status.success(),
        "vmsnap {args:?} failed:\nstdout: {}\nstderr: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops a VM with the CLI and waits for its VMI to go.
pub fn clone_stop(h: &VmHost, ns: &str, name: &str) {
    clone_vmsnap_ok(h, &["-n", ns, "stop", name]);
    h.wait_for("VMI gone", Duration::from_secs(90), || {
        h.vmi(ns, name).is_none().then_some(())
    });
}

/// The md5 of a host file.
pub fn clone_md5(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}
