//! Tests on the real guest image under TCG. They need the image built by
//! `scripts/build-guest.sh` (VMSNAP_GUEST_DIR, or its default directory) and fail if it is
//! missing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use virt::{
    attach, launch, Accel, AccelMode, Disk, DiskFormat, Error, FreezeStatus, KernelBoot, Nic,
    Running, VmSpec,
};

/// TCG guests are CPU-bound and the machines have two cores: bound concurrent VMs so that boot
/// deadlines measure the guest, not the scheduler.
fn vm_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| Semaphore::new(2))
}

fn guest_dir() -> PathBuf {
    let dir = virt::default_guest_dir();
    for f in ["vmlinuz", "initrd.img", "rootfs.img"] {
        assert!(
            dir.join(f).is_file(),
            "guest image missing: {} not found. Build it with `sudo scripts/build-guest.sh` \
             or set VMSNAP_GUEST_DIR to a built image",
            dir.join(f).display()
        );
    }
    dir
}

/// A VM whose QEMU is SIGKILLed when the test ends, however it ends.
struct TestVm {
    vm: Running,
    kill_on_drop: bool,
}

impl TestVm {
    fn new(vm: Running) -> TestVm {
        TestVm {
            vm,
            kill_on_drop: true,
        }
    }

    /// Drops the handle and its connections but leaves QEMU running, as a daemon crash would.
    fn abandon(mut self) {
        self.kill_on_drop = false;
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        if !self.kill_on_drop {
            return;
        }
        if let Some(p) = rustix::process::Pid::from_raw(self.vm.pid()) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

impl std::ops::Deref for TestVm {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.vm
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    guest: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let guest = guest_dir();
        let dir = tempfile::Builder::new()
            .prefix("virt-test-")
            .tempdir()
            .expect("temp dir");
        Fixture { dir, guest }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A private copy of the root disk.
    fn root_disk(&self, name: &str) -> PathBuf {
        let to = self.path(name);
        virt::bench::copy_sparse(&self.guest.join("rootfs.img"), &to).expect("copy rootfs");
        to
    }

    fn spec(&self, name: &str, root: &Path) -> VmSpec {
        VmSpec {
            name: name.into(),
            cpus: 1,
            memory_mib: 384,
            disks: vec![Disk {
                path: root.to_path_buf(),
                format: DiskFormat::Raw,
                readonly: false,
                serial: Some(format!("root-{name}")),
            }],
            nics: vec![Nic {
                mac: "52:54:00:12:00:01".into(),
            }],
            smbios_serial: None,
            firmware_uuid: None,
            kernel: Some(KernelBoot::guest(&self.guest)),
            accel: Accel::Tcg,
            agent: true,
        }
    }
}

async fn start(spec: &VmSpec, run_dir: &Path) -> TestVm {
    TestVm::new(launch(spec, run_dir).await.expect("launch"))
}

async fn slots(n: u32) -> SemaphorePermit<'static> {
    vm_slots().acquire_many(n).await.expect("semaphore")
}

async fn sh(vm: &Running, script: &str) -> String {
    let out = vm
        .qga()
        .with_deadline(Duration::from_secs(30))
        .sh(script)
        .await
        .unwrap_or_else(|e| panic!("guest-exec {script:?}: {e}"));
    assert!(
        out.success(),
        "guest command {script:?} exited {}: {}",
        out.exit_code,
        out.stderr_str()
    );
    out.stdout_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_and_agent_answers_within_30s() {
    let fx = Fixture::new();
    let _slot = slots(1).await;
    let root = fx.root_disk("root.img");
    let vm = start(&fx.spec("boot", &root), &fx.path("run")).await;
    let took = vm
        .qga()
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("guest agent did not answer guest-ping within 30 s");
    eprintln!("agent answered {took:?} after launch");
    assert_eq!(vm.status().await.expect("query-status"), "running");
    let serial = std::fs::read_to_string(vm.serial_log()).expect("serial log");
    assert!(
        serial.contains(virt::GUEST_READY_LINE),
        "serial log: {serial}"
    );
    let info = vm.qga().info().await.expect("guest-info");
    assert!(info.get("version").is_some(), "{info}");

    // ACPI powerdown makes the guest exit by itself.
    let t = Instant::now();
    let graceful = vm
        .shutdown(Duration::from_secs(20))
        .await
        .expect("shutdown");
    assert!(graceful, "guest ignored ACPI powerdown");
    eprintln!("powerdown took {:?}", t.elapsed());
    assert!(vm
        .qmp()
        .events()
        .iter()
        .any(|e| e.name == "SHUTDOWN" || e.name == "POWERDOWN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_written_by_guest_exec_survives_restart() {
    let fx = Fixture::new();
    let _slot = slots(1).await;
    let root = fx.root_disk("root.img");
    let spec = fx.spec("persist", &root);
    let run = fx.path("run");
    let token = format!("token-{}", std::process::id());

    let vm = start(&spec, &run).await;
    vm.qga()
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("agent");
    let out = vm
        .qga()
        .exec(
            "/bin/sh",
            &["-c", "cat > /root/marker && sync && cat /root/marker"],
            Some(token.as_bytes()),
        )
        .await
        .expect("guest-exec");
    assert_eq!(out.exit_code, 0, "stderr: {}", out.stderr_str());
    assert_eq!(out.stdout_str(), token);
    assert!(
        vm.shutdown(Duration::from_secs(20)).await.expect("stop"),
        "guest did not power off on ACPI powerdown"
    );
    assert!(!vm.is_alive());
    drop(vm);

    let vm = start(&spec, &run).await;
    vm.qga()
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("agent after restart");
    assert_eq!(sh(&vm, "cat /root/marker").await, token);
    // Same for the guest's own view of a failing command.
    let out = vm.qga().sh("cat /nonexistent").await.expect("guest-exec");
    assert_ne!(out.exit_code, 0);
    assert!(
        out.stderr_str().contains("nonexistent"),
        "{}",
        out.stderr_str()
    );
}

/// The writer logs BEGIN/END around each write on the serial console, which stays observable
/// while the agent refuses guest-exec during a freeze.
const WRITER: &str = "i=0; while [ $i -lt 1500 ] && [ ! -e /run/stop-writer ]; do \
    i=$((i+1)); echo \"W-BEGIN $i\" > /dev/ttyS0; echo $i > /root/freeze-probe; \
    echo \"W-END $i\" > /dev/ttyS0; sleep 0.2; done";

fn last_marker(log: &str, tag: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| {
            let at = l.find(tag)?;
            l[at + tag.len()..].trim().parse::<u64>().ok()
        })
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_blocks_guest_writes_until_thaw() {
    let fx = Fixture::new();
    let _slot = slots(1).await;
    let root = fx.root_disk("root.img");
    let vm = start(&fx.spec("freeze", &root), &fx.path("run")).await;
    let qga = vm.qga().with_deadline(Duration::from_secs(30));
    qga.wait_ready(Duration::from_secs(30))
        .await
        .expect("agent");
    assert_eq!(
        qga.fsfreeze_status().await.expect("status"),
        FreezeStatus::Thawed
    );

    let writer = qga
        .exec_spawn("/bin/sh", &["-c", WRITER], None)
        .await
        .expect("start writer");
    let log_path = vm.serial_log();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let t = Instant::now();
    while last_marker(&read_log(), "W-END ").unwrap_or(0) < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "writer never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let guard = qga.fsfreeze_freeze().await.expect("freeze");
    assert!(guard.filesystems() >= 1, "nothing was frozen");
    assert_eq!(
        qga.fsfreeze_status().await.expect("status"),
        FreezeStatus::Frozen
    );
    // The agent refuses most commands while frozen.
    let refused = qga.sh("true").await;
    assert!(matches!(refused, Err(Error::Agent { .. })), "{refused:?}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = read_log();
    let begun = last_marker(&log, "W-BEGIN ").expect("writer began");
    let ended = last_marker(&log, "W-END ").expect("writer ended");
    assert_eq!(
        begun,
        ended + 1,
        "a write should be pending while frozen: {log}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log = read_log();
    assert_eq!(
        last_marker(&log, "W-BEGIN "),
        Some(begun),
        "writer progressed while frozen"
    );
    assert_eq!(
        last_marker(&log, "W-END "),
        Some(ended),
        "write completed while frozen"
    );

    let window = guard.thaw().await.expect("thaw");
    assert!(window.window >= Duration::from_millis(2500), "{window:?}");
    eprintln!("freeze window {window:?}");
    let t = Instant::now();
    while last_marker(&read_log(), "W-END ").unwrap_or(0) < begun {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "write did not complete after thaw"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        qga.fsfreeze_status().await.expect("status"),
        FreezeStatus::Thawed
    );
    sh(&vm, "touch /run/stop-writer").await;
    let t = Instant::now();
    loop {
        if let Some(out) = qga.exec_status(writer).await.expect("exec-status") {
            assert_eq!(out.exit_code, 0);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "writer did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let probe = sh(&vm, "cat /root/freeze-probe").await;
    assert!(probe.trim().parse::<u64>().expect("number") >= begun);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_freeze_guard_thaws_and_agent_resyncs_after_timeouts() {
    let fx = Fixture::new();
    let _slot = slots(1).await;
    let root = fx.root_disk("root.img");
    let vm = start(&fx.spec("guard", &root), &fx.path("run")).await;
    let qga = vm.qga().with_deadline(Duration::from_secs(30));
    qga.wait_ready(Duration::from_secs(30))
        .await
        .expect("agent");

    let guard = qga.fsfreeze_freeze().await.expect("freeze");
    assert_eq!(
        qga.fsfreeze_status().await.expect("status"),
        FreezeStatus::Frozen
    );
    drop(guard);
    let t = Instant::now();
    while qga.fsfreeze_status().await.expect("status") != FreezeStatus::Thawed {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "dropped guard did not thaw"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Commands that time out leave late replies behind; the next command must not take them.
    let mut timeouts = 0;
    for _ in 0..3 {
        if let Err(e) = qga.with_deadline(Duration::from_micros(1)).info().await {
            assert!(e.is_timeout(), "{e}");
            timeouts += 1;
        }
    }
    assert!(timeouts > 0, "no command timed out");
    assert_eq!(
        qga.fsfreeze_status().await.expect("status after resync"),
        FreezeStatus::Thawed
    );
    assert_eq!(sh(&vm, "echo in-step").await.trim(), "in-step");

    // Re-attach as a restarted daemon would: the old process's connections are gone (QEMU
    // serves one QMP and one agent client at a time), the VM runs on with the same pid.
    let pid = vm.pid();
    let run = vm.run_dir().to_path_buf();
    drop(qga);
    vm.abandon();
    let again = TestVm::new(attach(&run).await.expect("attach").expect("VM is running"));
    assert_eq!(again.pid(), pid);
    again
        .qga()
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("agent on the re-attached VM");
    again.pause().await.expect("stop");
    assert_eq!(again.status().await.expect("status"), "paused");
    again
        .qmp()
        .wait_event("STOP", Duration::from_secs(5))
        .await
        .expect("STOP event");
    again.resume().await.expect("cont");
    assert_eq!(again.status().await.expect("status"), "running");
    again
        .qmp()
        .wait_event("RESUME", Duration::from_secs(5))
        .await
        .expect("RESUME event");
    // A QMP command abandoned by its deadline leaves the session usable.
    for _ in 0..3 {
        let _ = again
            .qmp()
            .execute_with_timeout("query-status", None, Duration::from_micros(1))
            .await;
    }
    assert_eq!(again.status().await.expect("status"), "running");
    let err = again
        .qmp()
        .execute("no-such-command", None)
        .await
        .expect_err("unknown command");
    assert!(matches!(err, Error::Qmp { .. }), "{err:?}");
    again.kill().await.expect("kill");
    assert!(attach(&run).await.expect("attach").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_have_their_own_mac_serial_uuid_and_data_disk() {
    let fx = Fixture::new();
    let _slots = slots(2).await;
    let mut vms = Vec::new();
    for (i, name) in ["alpha", "beta"].iter().enumerate() {
        let root = fx.root_disk(&format!("{name}.img"));
        let data = fx.path(&format!("{name}-data.img"));
        std::fs::File::create(&data)
            .and_then(|f| f.set_len(64 << 20))
            .expect("data disk");
        let mut spec = fx.spec(name, &root);
        spec.disks.push(Disk {
            path: data,
            format: DiskFormat::Raw,
            readonly: false,
            serial: Some(format!("data-{name}")),
        });
        spec.nics[0].mac = format!("52:54:00:ab:cd:{:02x}", i + 1);
        spec.smbios_serial = Some(format!("vmsnap-serial-{name}"));
        spec.firmware_uuid = Some(format!("6a1e2c2e-0c1b-4f5c-9a7e-0d6f3a1b2c{:02x}", i + 1));
        vms.push((
            spec.clone(),
            start(&spec, &fx.path(&format!("run-{name}"))).await,
        ));
    }
    for (spec, vm) in &vms {
        vm.qga()
            .wait_ready(Duration::from_secs(45))
            .await
            .expect("agent");
        let out = sh(
            vm,
            "cat /sys/class/net/eth0/address /sys/class/dmi/id/product_serial \
             /sys/class/dmi/id/product_uuid /sys/block/vdb/serial; echo; grep ' /data ' /proc/mounts",
        )
        .await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], spec.nics[0].mac, "{out}");
        assert_eq!(
            lines[1],
            spec.smbios_serial.as_deref().unwrap_or_default(),
            "{out}"
        );
        assert_eq!(
            lines[2].to_ascii_lowercase(),
            spec.firmware_uuid.as_deref().unwrap_or_default(),
            "{out}"
        );
        assert_eq!(lines[3], format!("data-{}", spec.name), "{out}");
        assert!(lines[4].starts_with("/dev/vdb /data ext4"), "{out}");
    }
}

#[tokio::test]
async fn bad_memory_size_fails_quickly_with_qemu_error() {
    let fx = Fixture::new();
    let root = fx.root_disk("root.img");
    let mut spec = fx.spec("badmem", &root);
    spec.memory_mib = 1 << 40;
    let t = Instant::now();
    let err = launch(&spec, &fx.path("run"))
        .await
        .expect_err("QEMU must refuse a 1 EiB guest");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    match &err {
        Error::Launch(msg) => assert!(msg.contains("memory") || msg.contains("ram"), "{msg}"),
        other => panic!("expected a launch error, got {other:?}"),
    }
    assert!(attach(&fx.path("run")).await.expect("attach").is_none());

    let mut spec = fx.spec("nodisk", &fx.path("missing.img"));
    spec.memory_mib = 256;
    assert!(matches!(
        launch(&spec, &fx.path("run2")).await,
        Err(Error::InvalidSpec(_))
    ));
}

#[tokio::test]
async fn accelerator_probe_decides_quickly_and_caches() {
    let _ = guest_dir();
    let t = Instant::now();
    let first = virt::accel::probe_detailed(AccelMode::Auto, Duration::from_secs(8)).await;
    let took = t.elapsed();
    eprintln!("probe: {first:?} in {took:?}");
    assert!(took < Duration::from_secs(15), "probe took {took:?}");
    if first.accel == Accel::Kvm {
        assert!(first.reason.contains("booted"), "{}", first.reason);
    }
    let t = Instant::now();
    let second = virt::accel::probe_detailed(AccelMode::Auto, Duration::from_secs(8)).await;
    assert_eq!(second, first);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "probe is not cached"
    );
    assert_eq!(
        virt::accel::probe(AccelMode::Tcg, Duration::from_secs(1)).await,
        Accel::Tcg
    );
    let none = virt::accel::probe_kvm(
        Some(Path::new("/nonexistent/vmlinuz")),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(none.accel, Accel::Tcg);
}
