//! VM verbs: `demo`, `start`, `stop`, `restart`, `console`, `guest-exec`.

use api::registry::{by_plural, Resource};
use api::Error;
use clap::Subcommand;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum VmCmd {
    /// Build the guest image if needed, then create and start a VM with the guest agent and a
    /// root disk on the default StorageClass.
    Demo {
        #[arg(long, default_value = "demo")]
        name: String,
        /// How long to wait for the guest agent.
        #[arg(long, default_value = "180s")]
        timeout: String,
    },
    /// Start a VM and wait until it runs.
    Start {
        vm: String,
        #[arg(long, default_value = "120s")]
        timeout: String,
    },
    /// Stop a VM gracefully (ACPI power button) and wait until it is stopped.
    Stop {
        vm: String,
        #[arg(long, default_value = "120s")]
        timeout: String,
    },
    /// Restart a VM and wait until it runs again.
    Restart {
        vm: String,
        #[arg(long, default_value = "180s")]
        timeout: String,
    },
    /// Show the serial console, following it while the VM runs (Ctrl-C to leave).
    Console {
        vm: String,
        /// Print what is there and exit instead of following.
        #[arg(long)]
        no_follow: bool,
    },
    /// Run a command in the guest through the guest agent; exits with its exit code.
    GuestExec {
        vm: String,
        /// Text to feed the command's standard input.
        #[arg(long)]
        stdin: Option<String>,
        #[arg(long, default_value = "60")]
        timeout_seconds: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn vm_res() -> &'static Resource {
    by_plural("kubevirt.io", "virtualmachines").expect("registered")
}

fn vmi_res() -> &'static Resource {
    by_plural("kubevirt.io", "virtualmachineinstances").expect("registered")
}

fn timeout(s: &str) -> api::Result<Duration> {
    api::types::parse_duration(s)
        .ok_or_else(|| Error::bad_request(format!("invalid timeout {s:?} (e.g. 90s, 2m)")))
}

fn action_path(ns: &str, resource: &str, name: &str, action: &str) -> String {
    format!("/apis/subresources.kubevirt.io/v1/namespaces/{ns}/{resource}/{name}/{action}")
}

/// Calls a VM action.
pub fn vm_action(c: &client::Client, name: &str, action: &str, body: &Value) -> api::Result<Value> {
    c.request(
        "PUT",
        &action_path(&c.namespace, "virtualmachines", name, action),
        Some(body),
    )
}

fn condition(obj: &Value, ty: &str) -> Option<bool> {
    api::condition(obj, ty)
}

/// Polls the VM until `done` says so; fails with the last status after `limit`.
fn wait_vm(
    c: &client::Client,
    name: &str,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&Value, Option<&Value>) -> bool,
) -> api::Result<Value> {
    let start = Instant::now();
    loop {
        let vm = c.get(vm_res(), &c.namespace, name)?;
        let vmi = c.get(vmi_res(), &c.namespace, name).ok();
        if done(&vm, vmi.as_ref()) {
            return Ok(vm);
        }
        if start.elapsed() > limit {
            let ready = vm["status"]["conditions"]
                .as_array()
                .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or("")
                .to_string();
            return Err(Error::new(
                api::ErrorKind::Timeout,
                format!(
                    "VirtualMachine {name} did not become {what} within {limit:?}: it is {} ({ready})",
                    vm["status"]["printableStatus"].as_str().unwrap_or("unknown")
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn printable(vm: &Value) -> &str {
    vm["status"]["printableStatus"]
        .as_str()
        .unwrap_or("Unknown")
}

pub fn run(c: &client::Client, cmd: VmCmd) -> api::Result<()> {
    match cmd {
        VmCmd::Demo { name, timeout: t } => demo(c, &name, timeout(&t)?),
        VmCmd::Start { vm, timeout: t } => {
            vm_action(c, &vm, "start", &json!({}))?;
            let v = wait_vm(c, &vm, timeout(&t)?, "Running", |v, _| {
                printable(v) == "Running"
            })?;
            println!("virtualmachine.kubevirt.io/{vm} {}", printable(&v));
            Ok(())
        }
        VmCmd::Stop { vm, timeout: t } => {
            vm_action(c, &vm, "stop", &json!({}))?;
            let v = wait_vm(c, &vm, timeout(&t)?, "Stopped", |v, vmi| {
                vmi.is_none_or(|i| {
                    matches!(i["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                }) && printable(v) == "Stopped"
            })?;
            println!("virtualmachine.kubevirt.io/{vm} {}", printable(&v));
            Ok(())
        }
        VmCmd::Restart { vm, timeout: t } => {
            let old = c
                .get(vmi_res(), &c.namespace, &vm)
                .map(|v| api::meta::uid(&v).to_string())
                .unwrap_or_default();
            vm_action(c, &vm, "restart", &json!({}))?;
            let v = wait_vm(c, &vm, timeout(&t)?, "Running again", |v, vmi| {
                printable(v) == "Running" && vmi.is_some_and(|i| api::meta::uid(i) != old)
            })?;
            println!("virtualmachine.kubevirt.io/{vm} {}", printable(&v));
            Ok(())
        }
        VmCmd::Console { vm, no_follow } => console(c, &vm, !no_follow),
        VmCmd::GuestExec {
            vm,
            stdin,
            timeout_seconds,
            command,
        } => {
            let mut body = json!({"command": command, "timeoutSeconds": timeout_seconds});
            if let Some(s) = stdin {
                body["stdin"] = json!(s);
            }
            let out = vm_action(c, &vm, "guest-exec", &body)?;
            print!("{}", out["stdout"].as_str().unwrap_or(""));
            eprint!("{}", out["stderr"].as_str().unwrap_or(""));
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            let code = out["exitCode"].as_i64().unwrap_or(1) as i32;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

fn console(c: &client::Client, vm: &str, follow: bool) -> api::Result<()> {
    let mut offset = 0u64;
    let mut out = std::io::stdout();
    loop {
        let r = c.request(
            "PUT",
            &action_path(&c.namespace, "virtualmachines", vm, "console-log"),
            Some(&json!({"offset": offset})),
        )?;
        let data = r["data"].as_str().unwrap_or("");
        let next = r["offset"].as_u64().unwrap_or(offset);
        let _ = out.write_all(data.as_bytes());
        let _ = out.flush();
        let moved = next != offset;
        offset = next;
        if !moved {
            if !follow || !r["running"].as_bool().unwrap_or(false) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The repository checkout that holds `scripts/build-guest.sh`: `$VMSNAP_REPO`, else the
/// ancestors of this executable (`<repo>/target/<profile>/vmsnap`), else the current directory
/// and its ancestors.
fn find_build_script() -> Option<PathBuf> {
    let script = |d: &Path| d.join("scripts").join("build-guest.sh");
    if let Some(r) = std::env::var_os("VMSNAP_REPO").filter(|v| !v.is_empty()) {
        return Some(script(Path::new(&r))).filter(|p| p.is_file());
    }
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    starts
        .iter()
        .flat_map(|s| s.ancestors())
        .map(script)
        .find(|p| p.is_file())
}

/// Builds the guest image with `scripts/build-guest.sh` unless it is already there.
pub fn ensure_guest_image() -> api::Result<PathBuf> {
    let dir = controllers::vm::default_guest_dir();
    let complete = ["vmlinuz", "initrd.img", "rootfs.img"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if complete {
        return Ok(dir);
    }
    let script = find_build_script().ok_or_else(|| {
        Error::precondition(format!(
            "no guest image in {} and no scripts/build-guest.sh to build it: set VMSNAP_REPO to the vmsnap checkout (or VMSNAP_GUEST_DIR to a built image)",
            dir.display()
        ))
    })?;
    eprintln!("building the guest image with {} ...", script.display());
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .status()
        .map_err(|e| Error::internal(format!("cannot run {}: {e}", script.display())))?;
    if !status.success() {
        return Err(Error::internal(format!(
            "{} failed with {status}",
            script.display()
        )));
    }
    Ok(dir)
}

/// The demo VM: 1 vCPU, 256 MiB, the guest kernel, its root disk on a DataVolume.
pub fn demo_vm(name: &str, root_dv: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": {"kubevirt.io/domain": name}},
                "spec": {
                    "domain": {
                        "cpu": {"cores": 1},
                        "memory": {"guest": "256Mi"},
                        "firmware": {
                            "serial": format!("{name}-serial"),
                            "kernelBoot": {
                                "kernelArgs": "console=ttyS0 root=/dev/vda rw quiet",
                                "container": {"image": controllers::vm::GUEST_KERNEL_IMAGE}
                            }
                        },
                        "devices": {
                            "disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}],
                            "interfaces": [{"name": "default", "masquerade": {}}]
                        }
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "terminationGracePeriodSeconds": 30,
                    "volumes": [{"name": "rootdisk", "dataVolume": {"name": root_dv}}]
                }
            }
        }
    })
}

fn demo(c: &client::Client, name: &str, limit: Duration) -> api::Result<()> {
    let guest = ensure_guest_image()?;
    let ns = c.namespace.clone();
    let root = format!("{name}-root");
    let exists = match c.get(vm_res(), &ns, name) {
        Ok(_) => true,
        Err(e) if e.is(api::ErrorKind::NotFound) => false,
        Err(e) => return Err(e),
    };
    if !exists {
        let dv_res = by_plural("cdi.kubevirt.io", "datavolumes").expect("registered");
        match c.get(dv_res, &ns, &root) {
            Ok(_) => eprintln!("datavolume {ns}/{root} exists; reusing it"),
            Err(e) if e.is(api::ErrorKind::NotFound) => {
                let image = guest.join("rootfs.img");
                let size = std::fs::metadata(&image)
                    .map_err(|e| Error::internal(format!("{}: {e}", image.display())))?
                    .len();
                eprintln!(
                    "uploading {} into datavolume {ns}/{root} ...",
                    image.display()
                );
                upload_root(c, &ns, &root, size, &image)?;
            }
            Err(e) => return Err(e),
        }
        c.create(vm_res(), &ns, &demo_vm(name, &root))?;
        eprintln!("virtualmachine.kubevirt.io/{name} created");
    } else {
        let vm = c.get(vm_res(), &ns, name)?;
        if printable(&vm) == "Stopped" {
            vm_action(c, name, "start", &json!({}))?;
        }
    }
    eprintln!("waiting for the guest agent of {name} ...");
    let started = Instant::now();
    wait_vm(c, name, limit, "AgentConnected", |v, _| {
        condition(v, "AgentConnected") == Some(true)
    })?;
    let vmi = c.get(vmi_res(), &ns, name)?;
    println!(
        "VM {name} is running (accelerator {}, QEMU pid {}); its guest agent answered after {:.1} s.",
        vmi["status"]["accelerator"].as_str().unwrap_or("?"),
        vmi["status"]["qemuPid"],
        started.elapsed().as_secs_f64()
    );
    println!("Try:");
    println!("  vmsnap guest-exec {name} -- uname -a");
    println!("  vmsnap guest-exec {name} -- sh -c 'echo hello > /root/hello; sync'");
    println!("  vmsnap console {name} --no-follow");
    println!("  vmsnap restart {name}");
    println!("  kubectl get vm,vmi {name}");
    Ok(())
}

/// Uploads the guest root filesystem into a new DataVolume on the default StorageClass.
fn upload_root(c: &client::Client, ns: &str, dv: &str, size: u64, image: &Path) -> api::Result<()> {
    let size = format!("{}Mi", size.div_ceil(1 << 20).max(1));
    crate::storage_cli::upload_image(c, ns, dv, &size, image, None)
}
