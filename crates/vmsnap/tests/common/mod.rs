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
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let needle = dir.to_string_lossy().into_owned();
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("qemu-system") && cmd.contains(&needle) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

/// Loop-mounted pools under a test's data dir are unmounted so loop devices are not leaked.
pub fn unmount_under(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
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
