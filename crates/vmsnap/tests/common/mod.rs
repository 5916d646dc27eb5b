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
        s.spawn();
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
