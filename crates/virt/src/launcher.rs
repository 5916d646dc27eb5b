//! Starts QEMU daemonized (it must outlive the daemon) and re-attaches to it later.
//!
//! Layout of a VM's run directory:
//! - `qemu.pid`: written by QEMU (`-pidfile`);
//! - `qmp.sock`, `qga.sock`: QMP and guest agent sockets (QEMU listens);
//! - `console.sock`: interactive serial console (one client at a time);
//! - `serial.log`: everything the guest wrote on its serial console;
//! - `qemu.stderr`: QEMU's error output at start-up;
//! - `qemu.args`: the command line, one argument per line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::accel::Accel;
use crate::error::{Error, Result};
use crate::qga::Qga;
use crate::qmp::Qmp;

/// QEMU binary for x86_64 guests.
pub const QEMU: &str = "qemu-system-x86_64";
/// How long QEMU may take to initialise before `launch` gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// sun_path is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

pub const PIDFILE: &str = "qemu.pid";
pub const QMP_SOCKET: &str = "qmp.sock";
pub const QGA_SOCKET: &str = "qga.sock";
pub const CONSOLE_SOCKET: &str = "console.sock";
pub const SERIAL_LOG: &str = "serial.log";
pub const STDERR_LOG: &str = "qemu.stderr";

/// Disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// A virtio-blk disk. The first disk is `/dev/vda` in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub readonly: bool,
    /// Serial number seen by the guest (at most 20 bytes).
    pub serial: Option<String>,
}

/// A user-mode virtio-net interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// `52:54:00:12:34:56` form.
    pub mac: String,
}

/// Direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

impl KernelBoot {
    /// Boot files of the guest image in `guest_dir` (see `scripts/build-guest.sh`).
    pub fn guest(guest_dir: &Path) -> KernelBoot {
        KernelBoot {
            kernel: guest_dir.join("vmlinuz"),
            initrd: Some(guest_dir.join("initrd.img")),
            cmdline: crate::GUEST_CMDLINE.to_string(),
        }
    }
}

/// Everything QEMU needs to run one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// SMBIOS type 1 serial (`/sys/class/dmi/id/product_serial`).
    pub smbios_serial: Option<String>,
    /// SMBIOS and VM UUID.
    pub firmware_uuid: Option<String>,
    pub kernel: Option<KernelBoot>,
    pub accel: Accel,
    /// Adds the virtio-serial port of the guest agent.
    pub agent: bool,
}

impl VmSpec {
    /// The QEMU arguments for this spec, with sockets and logs under `run_dir`.
    pub fn qemu_args(&self, run_dir: &Path) -> Result<Vec<String>> {
        self.validate()?;
        let p = |name: &str| run_dir.join(name).display().to_string();
        for sock in [QMP_SOCKET, QGA_SOCKET, CONSOLE_SOCKET] {
            if p(sock).len() > MAX_SOCKET_PATH {
                return Err(Error::InvalidSpec(format!(
                    "run directory path {} is too long for a unix socket",
                    run_dir.display()
                )));
            }
        }
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["-name", &opt(&self.name)]);
        push(&["-machine", "pc", "-accel", self.accel.as_str()]);
        push(cpu_args(self.accel));
        push(&[
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &format!("{}M", self.memory_mib),
        ]);
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        push(&["-daemonize", "-pidfile", &p(PIDFILE)]);
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", opt(&p(QMP_SOCKET))),
        ]);
        // The console is a socket for interactive use, logged to serial.log; with no client
        // connected the output is still logged.
        push(&[
            "-chardev",
            &format!(
                "socket,id=console0,path={},server=on,wait=off,logfile={},logappend=on",
                opt(&p(CONSOLE_SOCKET)),
                opt(&p(SERIAL_LOG))
            ),
            "-serial",
            "chardev:console0",
        ]);
        if self.agent {
            push(&[
                "-chardev",
                &format!(
                    "socket,id=qga0,path={},server=on,wait=off",
                    opt(&p(QGA_SOCKET))
                ),
                "-device",
                "virtio-serial-pci,id=vserial0",
                "-device",
                "virtserialport,bus=vserial0.0,chardev=qga0,name=org.qemu.guest_agent.0",
            ]);
        }
        if let Some(k) = &self.kernel {
            push(&["-kernel", &k.kernel.display().to_string()]);
            if let Some(initrd) = &k.initrd {
                push(&["-initrd", &initrd.display().to_string()]);
            }
            push(&["-append", &k.cmdline]);
        }
        for (i, d) in self.disks.iter().enumerate() {
            let mut drive = format!(
                "file={},format={},if=none,id=disk{i},cache=writeback,aio=threads,discard=unmap",
                opt(&d.path.display().to_string()),
                d.format.as_str()
            );
            if d.readonly {
                drive.push_str(",readonly=on");
            }
            let mut dev = format!("virtio-blk-pci,drive=disk{i}");
            if let Some(s) = &d.serial {
                dev.push_str(&format!(",serial={}", opt(s)));
            }
            push(&["-drive", &drive, "-device", &dev]);
        }
        for (i, n) in self.nics.iter().enumerate() {
            // romfile= skips the iPXE option ROM: we never network-boot, and it costs boot time.
            push(&[
                "-netdev",
                &format!("user,id=net{i}"),
                "-device",
                &format!("virtio-net-pci,netdev=net{i},mac={},romfile=", n.mac),
            ]);
        }
        let mut smbios = Vec::new();
        if let Some(s) = &self.smbios_serial {
            smbios.push(format!("serial={}", opt(s)));
        }
        if let Some(u) = &self.firmware_uuid {
            smbios.push(format!("uuid={u}"));
            push(&["-uuid", u]);
        }
        if !smbios.is_empty() {
            push(&["-smbios", &format!("type=1,{}", smbios.join(","))]);
        }
        Ok(a)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidSpec(m));
        if self.name.is_empty() {
            return bad("name is empty".into());
        }
        if self.cpus == 0 {
            return bad("cpus must be at least 1".into());
        }
        if self.memory_mib == 0 {
            return bad("memory must be more than 0 MiB".into());
        }
        for d in &self.disks {
            if let Some(s) = &d.serial {
                if s.len() > 20 {
                    return bad(format!("disk serial {s:?} is longer than 20 bytes"));
                }
            }
        }
        for n in &self.nics {
            if !valid_mac(&n.mac) {
                return bad(format!("invalid MAC address {:?}", n.mac));
            }
        }
        if let Some(u) = &self.firmware_uuid {
            if !valid_uuid(u) {
                return bad(format!("invalid firmware UUID {u:?}"));
            }
        }
        Ok(())
    }
}

/// QEMU option values escape commas by doubling them.
fn opt(s: &str) -> String {
    s.replace(',', ",,")
}

/// CPU model arguments; the KVM probe uses the same so that it tests what VMs will run.
pub(crate) fn cpu_args(accel: Accel) -> &'static [&'static str] {
    match accel {
        Accel::Kvm => &["-cpu", "host"],
        Accel::Tcg => &[],
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        // A multicast address cannot be a NIC's.
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

fn valid_uuid(u: &str) -> bool {
    let groups: Vec<&str> = u.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A live QEMU process with its QMP session.
#[derive(Debug)]
pub struct Running {
    run_dir: PathBuf,
    pid: i32,
    qmp: Qmp,
    qga: Qga,
    started: Instant,
}

/// Starts `spec` with its files in `run_dir` and returns once QEMU has initialised and QMP is
/// connected. QEMU is daemonized in its own session, so it outlives this process.
pub async fn launch(spec: &VmSpec, run_dir: &Path) -> Result<Running> {
    let started = Instant::now();
    let args = spec.qemu_args(run_dir)?;
    std::fs::create_dir_all(run_dir)
        .map_err(|e| Error::io(format!("cannot create {}", run_dir.display()), e))?;
    if let Some(pid) = running_pid(run_dir)? {
        return Err(Error::Launch(format!(
            "a QEMU process (pid {pid}) is already running in {}",
            run_dir.display()
        )));
    }
    for f in [PIDFILE, QMP_SOCKET, QGA_SOCKET, CONSOLE_SOCKET] {
        let _ = std::fs::remove_file(run_dir.join(f));
    }
    for d in &spec.disks {
        if !d.path.exists() {
            return Err(Error::InvalidSpec(format!(
                "disk {} does not exist",
                d.path.display()
            )));
        }
    }
    let _ = std::fs::write(run_dir.join("qemu.args"), args.join("\n") + "\n");
    let stderr_path = run_dir.join(STDERR_LOG);
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| Error::io(format!("cannot create {}", stderr_path.display()), e))?;

    // With -daemonize the first process exits once the VM is initialised (0) or failed (non-0),
    // after printing the error.
    let mut child = tokio::process::Command::new(QEMU)
        .args(&args)
        .current_dir(run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("cannot run {QEMU}"), e))?;
    let status = match tokio::time::timeout(START_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(Error::io("cannot wait for QEMU", e)),
        Err(_) => {
            let _ = child.kill().await;
            kill_from_pidfile(run_dir);
            return Err(Error::Launch(format!(
                "QEMU did not finish starting within {START_TIMEOUT:?}"
            )));
        }
    };
    let errors = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    if !status.success() {
        let msg = errors.trim();
        return Err(Error::Launch(if msg.is_empty() {
            format!("QEMU exited with {status}")
        } else {
            msg.lines()
                .filter(|l| !l.contains("warning:"))
                .collect::<Vec<_>>()
                .join("; ")
        }));
    }
    if !errors.trim().is_empty() {
        tracing::warn!(vm = %spec.name, "QEMU: {}", errors.trim());
    }
    let pid = read_pidfile(run_dir)?
        .ok_or_else(|| Error::Launch("QEMU started but wrote no pidfile".into()))?;
    let qmp = match Qmp::connect(run_dir.join(QMP_SOCKET), QMP_CONNECT_TIMEOUT).await {
        Ok(q) => q,
        Err(e) => {
            kill_pid(pid);
            return Err(e);
        }
    };
    Ok(Running {
        run_dir: run_dir.to_path_buf(),
        pid,
        qga: Qga::new(run_dir.join(QGA_SOCKET)),
        qmp,
        started,
    })
}

/// Re-attaches to the QEMU of `run_dir`: `None` when no QEMU of ours runs there.
pub async fn attach(run_dir: &Path) -> Result<Option<Running>> {
    let Some(pid) = running_pid(run_dir)? else {
        return Ok(None);
    };
    let qmp = Qmp::connect(run_dir.join(QMP_SOCKET), QMP_CONNECT_TIMEOUT).await?;
    Ok(Some(Running {
        run_dir: run_dir.to_path_buf(),
        pid,
        qga: Qga::new(run_dir.join(QGA_SOCKET)),
        qmp,
        started: Instant::now(),
    }))
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// The guest agent (connects on first use).
    pub fn qga(&self) -> &Qga {
        &self.qga
    }

    pub fn serial_log(&self) -> PathBuf {
        self.run_dir.join(SERIAL_LOG)
    }

    pub fn console_socket(&self) -> PathBuf {
        self.run_dir.join(CONSOLE_SOCKET)
    }

    /// When `launch` was called, or `attach` for a re-attached VM.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// True while the QEMU process exists (a zombie counts as gone).
    pub fn is_alive(&self) -> bool {
        pid_alive(self.pid)
    }

    /// ACPI power button.
    pub async fn powerdown(&self) -> Result<()> {
        self.qmp.execute("system_powerdown", None).await.map(|_| ())
    }

    /// Pauses the vCPUs (QMP `stop`).
    pub async fn pause(&self) -> Result<()> {
        self.qmp.execute("stop", None).await.map(|_| ())
    }

    /// Resumes the vCPUs (QMP `cont`).
    pub async fn resume(&self) -> Result<()> {
        self.qmp.execute("cont", None).await.map(|_| ())
    }

    /// `query-status` run state.
    pub async fn status(&self) -> Result<String> {
        self.qmp.status().await
    }

    /// Any QMP command.
    pub async fn qmp_execute(&self, command: &str, args: Option<Value>) -> Result<Value> {
        self.qmp.execute(command, args).await
    }

    /// SIGKILL and wait until the process is gone.
    pub async fn kill(&self) -> Result<()> {
        if self.is_alive() {
            kill_pid(self.pid);
        }
        if self.wait_exit(Duration::from_secs(10)).await {
            Ok(())
        } else {
            Err(Error::Guest(format!(
                "QEMU pid {} survived SIGKILL",
                self.pid
            )))
        }
    }

    /// Waits up to `timeout` for QEMU to exit; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if !self.is_alive() {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful stop: ACPI powerdown, then SIGKILL after `grace`. Returns true if the guest
    /// shut down by itself.
    pub async fn shutdown(&self, grace: Duration) -> Result<bool> {
        if !self.is_alive() {
            return Ok(true);
        }
        if let Err(e) = self.powerdown().await {
            tracing::warn!(pid = self.pid, "powerdown failed: {e}");
        }
        if self.wait_exit(grace).await {
            return Ok(true);
        }
        self.kill().await?;
        Ok(false)
    }
}

/// The pid of the live QEMU of `run_dir`, if any.
pub fn running_pid(run_dir: &Path) -> Result<Option<i32>> {
    Ok(read_pidfile(run_dir)?.filter(|&pid| pid_alive(pid) && is_our_qemu(pid, run_dir)))
}

fn read_pidfile(run_dir: &Path) -> Result<Option<i32>> {
    let path = run_dir.join(PIDFILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<i32>()
            .map(Some)
            .map_err(|_| Error::Protocol(format!("{} does not hold a pid", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

fn pid_alive(pid: i32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    if rustix::process::test_kill_process(p).is_err() {
        return false;
    }
    // Not our child: whoever reaps it may be slow, and a zombie is not a running VM.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The pid is a QEMU whose QMP socket is in `run_dir` (guards against pid reuse).
fn is_our_qemu(pid: i32, run_dir: &Path) -> bool {
    let exe_ok = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|exe| {
            exe.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("qemu-system"))
        })
        .unwrap_or(false);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = run_dir.join(QMP_SOCKET).display().to_string();
    exe_ok
        && String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|arg| arg.contains(&opt(&needle)))
}

fn kill_pid(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

fn kill_from_pidfile(run_dir: &Path) {
    if let Ok(Some(pid)) = read_pidfile(run_dir) {
        if is_our_qemu(pid, run_dir) {
            kill_pid(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "t".into(),
            cpus: 1,
            memory_mib: 256,
            disks: vec![Disk {
                path: "/x/a,b.img".into(),
                format: DiskFormat::Raw,
                readonly: false,
                serial: Some("root".into()),
            }],
            nics: vec![Nic {
                mac: "52:54:00:00:00:01".into(),
            }],
            smbios_serial: Some("s1".into()),
            firmware_uuid: Some("6a1e2c2e-0c1b-4f5c-9a7e-0d6f3a1b2c3d".into()),
            kernel: None,
            accel: Accel::Tcg,
            agent: true,
        }
    }

    #[test]
    fn args_escape_commas_and_map_identity() {
        let a = spec().qemu_args(Path::new("/run/vm")).unwrap_or_default();
        let s = a.join(" ");
        assert!(s.contains("file=/x/a,,b.img,format=raw"), "{s}");
        assert!(s.contains("mac=52:54:00:00:00:01"), "{s}");
        assert!(s.contains("type=1,serial=s1,uuid=6a1e2c2e"), "{s}");
        assert!(s.contains("-daemonize -pidfile /run/vm/qemu.pid"), "{s}");
    }

    #[test]
    fn rejects_bad_identity() {
        let mut s = spec();
        s.nics[0].mac = "01:00:00:00:00:01".into();
        assert!(matches!(
            s.qemu_args(Path::new("/r")),
            Err(Error::InvalidSpec(_))
        ));
        let mut s = spec();
        s.firmware_uuid = Some("nope".into());
        assert!(matches!(
            s.qemu_args(Path::new("/r")),
            Err(Error::InvalidSpec(_))
        ));
        let long = PathBuf::from(format!("/{}", "d".repeat(120)));
        assert!(matches!(
            spec().qemu_args(&long),
            Err(Error::InvalidSpec(_))
        ));
    }
}
