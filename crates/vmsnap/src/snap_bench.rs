//! `vmsnap bench snapshot|clone`: the issue figures for snapshots, restores and clones,
//! measured on a private `vmsnap serve` (its own data dir, loop-backed btrfs pool, real guest
//! under the probed accelerator) through the public API, as a user would see them.

use api::registry::lookup;
use api::{Error, Result};
use client::Client;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct PrivateServer {
    child: Child,
    dir: PathBuf,
    client: Client,
}

impl PrivateServer {
    fn start(dir: &Path) -> Result<PrivateServer> {
        let data = dir.join("server");
        std::fs::create_dir_all(&data).map_err(|e| Error::internal(e.to_string()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::internal(e.to_string()))?
            .port();
        let exe = std::env::current_exe().map_err(|e| Error::internal(e.to_string()))?;
        let log = std::fs::File::create(dir.join("serve.log"))
            .map_err(|e| Error::internal(e.to_string()))?;
        let child = Command::new(exe)
            .args(["serve", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--accel",
                &std::env::var("VMSNAP_ACCEL").unwrap_or_else(|_| "auto".into()),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::internal(format!("cannot start vmsnap serve: {e}")))?;
        let kc = data.join("kubeconfig");
        let start = Instant::now();
        loop {
            if let Ok(c) = Client::from_kubeconfig(&kc) {
                if matches!(c.raw("GET", "/readyz", None, None), Ok((200, _))) {
                    return Ok(PrivateServer {
                        child,
                        dir: data,
                        client: c,
                    });
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(Error::internal("the private server did not start"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // QEMU outlives the daemon by design; the bench stops its own guests and pools.
        let needle = self.dir.to_string_lossy().into_owned();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let pid = e.file_name().to_string_lossy().into_owned();
                if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                    let cmd = String::from_utf8_lossy(&cmd);
                    if cmd.contains("qemu-system") && cmd.contains(&needle) {
                        let _ = Command::new("kill").args(["-9", &pid]).status();
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = storage::looppool::unmount(&self.dir.join("pools/default"));
    }
}

fn pct(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if samples.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (samples.len() as f64 - 1.0)).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

fn wait(c: &Client, kind: &str, name: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    let res = lookup(kind).expect("registered");
    crate::kubectl::wait_for(c, res, &c.namespace, name, Duration::from_secs(300), done)
}

fn guest_exec(c: &Client, vm: &str, script: &str) -> Result<Value> {
    let body = json!({"command": ["/bin/sh", "-c", script], "timeoutSeconds": 120});
    crate::vm_cli::vm_action(c, vm, "guest-exec", &body)
}

fn vm_action(c: &Client, vm: &str, action: &str) -> Result<Value> {
    crate::vm_cli::vm_action(c, vm, action, &json!({}))
}

/// A VM with the guest image as root disk and a blank data disk of `data_size`, on `class`.
fn make_vm(c: &Client, name: &str, data_size: &str, class: Option<&str>, run: bool) -> Result<()> {
    let guest = crate::vm_cli::ensure_guest_image()?;
    crate::storage_cli::upload_image(
        c,
        &c.namespace,
        &format!("{name}-root"),
        "1Gi",
        &guest.join("rootfs.img"),
        class,
    )?;
    let mut storage = json!({"resources": {"requests": {"storage": data_size}}});
    if let Some(cl) = class {
        storage["storageClassName"] = json!(cl);
    }
    let dv = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": format!("{name}-data")}, "spec": {"source": {"blank": {}}, "storage": storage}});
    c.create(lookup("dv").expect("registered"), &c.namespace, &dv)?;
    wait(c, "dv", &format!("{name}-data"), |d| {
        d["status"]["phase"] == "Succeeded"
    })?;
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
        "spec": {"runStrategy": if run { "Always" } else { "Halted" }, "template": {"spec": {
            "domain": {
                "cpu": {"cores": 1}, "memory": {"guest": "256Mi"},
                "firmware": {"kernelBoot": {"kernelArgs": "console=ttyS0 root=/dev/vda rw quiet", "container": {"image": "vmsnap.io/guest-kernel"}}},
                "devices": {"disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}, {"name": "datadisk", "disk": {"bus": "virtio"}}],
                            "interfaces": [{"name": "default", "masquerade": {}}]}
            },
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [{"name": "rootdisk", "dataVolume": {"name": format!("{name}-root")}}, {"name": "datadisk", "dataVolume": {"name": format!("{name}-data")}}]
        }}}
    });
    c.create(lookup("vm").expect("registered"), &c.namespace, &vm)?;
    if run {
        wait(c, "vm", name, |v| {
            api::condition(v, "AgentConnected") == Some(true)
        })?;
        let start = Instant::now();
        while guest_exec(c, name, "grep -q /data /proc/mounts")?["exitCode"] != 0 {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(Error::internal("the data disk was not mounted"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        guest_exec(
            c,
            name,
            "dd if=/dev/urandom of=/data/fill bs=1M count=64 2>/dev/null; sync",
        )?;
    }
    Ok(())
}

fn stop_vm(c: &Client, name: &str) -> Result<()> {
    vm_action(c, name, "stop")?;
    let vmi = lookup("vmi").expect("registered");
    let start = Instant::now();
    while c.get(vmi, &c.namespace, name).is_ok() {
        if start.elapsed() > Duration::from_secs(120) {
            return Err(Error::internal("the VM did not stop"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn snapshot_obj(name: &str, vm: &str) -> Value {
    json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": name}, "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm}}})
}

fn delete_and_wait(c: &Client, kind: &str, name: &str) -> Result<()> {
    let res = lookup(kind).expect("registered");
    c.delete(res, &c.namespace, name)?;
    let start = Instant::now();
    while c.get(res, &c.namespace, name).is_ok() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

struct Row {
    what: String,
    samples: Vec<f64>,
}

fn print_rows(title: &str, rows: &mut [Row]) {
    println!("{title}");
    println!(
        "  {:<44} {:>6} {:>10} {:>10}",
        "measure", "n", "median", "p95"
    );
    for r in rows.iter_mut() {
        let n = r.samples.len();
        let med = pct(&mut r.samples, 50.0);
        let p95 = pct(&mut r.samples, 95.0);
        println!("  {:<44} {:>6} {:>8.1}ms {:>8.1}ms", r.what, n, med, p95);
    }
}

pub fn snapshot(dir: &Path, runs: usize) -> Result<()> {
    let srv = PrivateServer::start(dir)?;
    let c = &srv.client;
    let mut rows = Vec::new();
    for size in ["1Gi", "32Gi"] {
        let vm = format!("bench-{}", size.to_lowercase());
        make_vm(c, &vm, size, None, true)?;
        let res = lookup("vmsnapshot").expect("registered");
        let (mut window, mut ready) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let name = format!("{vm}-s{i}");
            let t = Instant::now();
            c.create(res, &c.namespace, &snapshot_obj(&name, &vm))?;
            let s = wait(c, "vmsnapshot", &name, |s| {
                s["status"]["phase"] == "Succeeded" || s["status"]["phase"] == "Failed"
            })?;
            ready.push(t.elapsed().as_secs_f64() * 1000.0);
            if s["status"]["phase"] != "Succeeded" {
                return Err(Error::internal(format!(
                    "snapshot {name} failed: {}",
                    s["status"]["error"]
                )));
            }
            window.push(
                s["status"]["quiesce"]["windowMillis"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
            delete_and_wait(c, "vmsnapshot", &name)?;
        }
        rows.push(Row {
            what: format!("freeze window, 2-disk VM, data disk {size}"),
            samples: window,
        });
        rows.push(Row {
            what: format!("snapshot create->Ready, data disk {size}"),
            samples: ready,
        });
        // Restores of the stopped VM from one snapshot, each replacing the previous volumes.
        let base = format!("{vm}-base");
        c.create(res, &c.namespace, &snapshot_obj(&base, &vm))?;
        wait(c, "vmsnapshot", &base, |s| {
            s["status"]["phase"] == "Succeeded"
        })?;
        stop_vm(c, &vm)?;
        let rres = lookup("vmrestore").expect("registered");
        let mut restore = Vec::new();
        for i in 0..runs {
            let name = format!("{vm}-r{i}");
            let obj = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore", "metadata": {"name": name}, "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm}, "virtualMachineSnapshotName": base}});
            let t = Instant::now();
            c.create(rres, &c.namespace, &obj)?;
            let r = wait(c, "vmrestore", &name, |r| {
                api::condition(r, "Ready") == Some(true)
                    || api::condition(r, "Failure") == Some(true)
            })?;
            restore.push(t.elapsed().as_secs_f64() * 1000.0);
            if api::condition(&r, "Ready") != Some(true) {
                return Err(Error::internal(format!(
                    "restore {name} failed: {}",
                    r["status"]["conditions"]
                )));
            }
        }
        rows.push(Row {
            what: format!("restore (VM stopped) create->Ready, {size}"),
            samples: restore,
        });
    }
    print_rows(
        &format!("vmsnap bench snapshot ({runs} runs each; pool: loop-backed btrfs)"),
        &mut rows,
    );
    Ok(())
}

fn file_md5(p: &Path) -> String {
    Command::new("md5sum")
        .arg(p)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

fn image_of(c: &Client, data: &Path, claim: &str) -> Result<PathBuf> {
    let pvc = c.get(lookup("pvc").expect("registered"), &c.namespace, claim)?;
    let vol = pvc["spec"]["volumeName"].as_str().unwrap_or("").to_string();
    let pools = data.join("pools");
    for entry in std::fs::read_dir(&pools)
        .map_err(|e| Error::internal(e.to_string()))?
        .flatten()
    {
        let v = entry.path().join("volumes");
        for cand in [
            v.join(&vol).join("disk.img"),
            v.join(format!("{vol}.img")),
            v.join(format!("{vol}.qcow2")),
        ] {
            if cand.exists() {
                return Ok(cand);
            }
        }
    }
    Err(Error::not_found(format!("no image for claim {claim}")))
}

pub fn clone(dir: &Path, runs: usize) -> Result<()> {
    let srv = PrivateServer::start(dir)?;
    let c = &srv.client;
    let mut rows = Vec::new();
    let cres = lookup("vmclone").expect("registered");
    for size in ["1Gi", "32Gi"] {
        let vm = format!("src-{}", size.to_lowercase());
        make_vm(c, &vm, size, None, false)?;
        let mut took = Vec::new();
        for i in 0..runs {
            let name = format!("{vm}-c{i}");
            let obj = json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone", "metadata": {"name": name}, "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm}, "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": format!("{name}-vm")}}});
            let t = Instant::now();
            c.create(cres, &c.namespace, &obj)?;
            let o = wait(c, "vmclone", &name, |o| {
                matches!(o["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
            })?;
            took.push(t.elapsed().as_secs_f64() * 1000.0);
            if o["status"]["phase"] != "Succeeded" {
                return Err(Error::internal(format!(
                    "clone {name} failed: {}",
                    o["status"]["conditions"]
                )));
            }
        }
        rows.push(Row {
            what: format!("clone create->Succeeded (btrfs), data disk {size}"),
            samples: took,
        });
    }
    print_rows(&format!("vmsnap bench clone ({runs} runs each)"), &mut rows);

    // Copy fallback: a VM on the dir class (no snapshots) cloned by host-assisted copy, and
    // `cp --sparse=always` of the same image, side by side.
    make_vm(c, "copysrc", "1Gi", Some("vmsnap-dir"), false)?;
    let root = image_of(c, &srv.dir, "copysrc-root")?;
    // 300 MiB of data in three extents, holes between, as a used data disk would have.
    let data_img = image_of(c, &srv.dir, "copysrc-data")?;
    for seek in [0u64, 400, 800] {
        let ok = Command::new("dd")
            .args([
                "if=/dev/urandom",
                "bs=1M",
                "count=100",
                "conv=notrunc,fsync",
                "status=none",
            ])
            .arg(format!("of={}", data_img.display()))
            .arg(format!("seek={seek}"))
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(Error::internal("could not fill the copy source"));
        }
    }
    let data_bytes = storage::allocated_bytes(&root).unwrap_or(0)
        + storage::allocated_bytes(&image_of(c, &srv.dir, "copysrc-data")?).unwrap_or(0);
    let mut ours = Vec::new();
    let mut cp = Vec::new();
    for i in 0..3 {
        let name = format!("copy-c{i}");
        let obj = json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone", "metadata": {"name": name}, "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "copysrc"}, "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": format!("{name}-vm")}}});
        let t = Instant::now();
        c.create(cres, &c.namespace, &obj)?;
        let o = wait(c, "vmclone", &name, |o| {
            matches!(o["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })?;
        ours.push(t.elapsed().as_secs_f64());
        if o["status"]["phase"] != "Succeeded" || o["status"]["strategy"] != "copy" {
            return Err(Error::internal(format!(
                "copy clone {name}: {}",
                o["status"]
            )));
        }
        let target = format!("{name}-vm");
        let tvm = c.get(lookup("vm").expect("registered"), &c.namespace, &target)?;
        let claim = tvm["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
            ["claimName"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if i == 0 && file_md5(&image_of(c, &srv.dir, &claim)?) != file_md5(&root) {
            return Err(Error::internal("the copy differs from its source"));
        }
        let t = Instant::now();
        let d1 = srv.dir.join(format!("cp-root-{i}.img"));
        let d2 = srv.dir.join(format!("cp-data-{i}.img"));
        let ok = Command::new("cp")
            .arg("--sparse=always")
            .arg(&root)
            .arg(&d1)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("cp")
                .arg("--sparse=always")
                .arg(image_of(c, &srv.dir, "copysrc-data")?)
                .arg(&d2)
                .status()
                .is_ok_and(|s| s.success());
        let _ = Command::new("sync").status();
        cp.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&d1);
        let _ = std::fs::remove_file(&d2);
        if !ok {
            return Err(Error::internal("cp failed"));
        }
    }
    let mb = data_bytes as f64 / 1e6;
    let med = |v: &mut Vec<f64>| pct(v, 50.0);
    let (o, p) = (med(&mut ours), med(&mut cp));
    println!("copy fallback (dir class, 2 disks, {mb:.0} MB allocated), median of 3:");
    println!(
        "  vmsnap clone (API create->Succeeded): {:.2} s = {:.0} MB/s",
        o,
        mb / o
    );
    println!(
        "  cp --sparse=always (same images):     {:.2} s = {:.0} MB/s",
        p,
        mb / p
    );
    println!("  ratio vmsnap/cp throughput: {:.2}", p / o);
    Ok(())
}
