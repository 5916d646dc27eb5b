//! One conformance suite, run against every driver on the filesystem it is meant for:
//! btrfs on a loop-mounted btrfs, reflink and zfslike on a loop-mounted xfs (reflink=1),
//! qcow2, dir and snaponly on the host's ext4. Needs root (loop mounts), like CI.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use storage::{
    open_driver, open_driver_with, Driver, ErrorKind, Format, PoolOptions, SnapName, VolName,
};

const MIB: u64 = 1 << 20;

fn v(s: &str) -> VolName {
    VolName::new(s).expect("valid volume name")
}

fn s(n: &str) -> SnapName {
    SnapName::new(n).expect("valid snapshot name")
}

/// Loop-mounted pools from scripts/mkpools.sh, shared by all tests of this binary.
fn pools() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("VMSNAP_TEST_POOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("vmsnap-storage-pools"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mkpools.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("run mkpools.sh");
        assert!(
            out.status.success(),
            "mkpools.sh failed (tests need root, mkfs.btrfs and mkfs.xfs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

/// A fresh pool root for one test, on the filesystem its driver is meant for.
fn fresh_root(driver: &str, test: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = match driver {
        "btrfs" => pools().join("btrfs"),
        "reflink" | "zfslike" => pools().join("xfs"),
        _ => std::env::temp_dir().join("vmsnap-storage-ext4"),
    };
    let root = base.join(format!(
        "{test}-{driver}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&root);
    root
}

fn write_pattern(d: &dyn Driver, vol: &VolName, off: u64, len: u64, pat: u8) {
    let a = d.attachment(vol).expect("attachment");
    match a.format {
        Format::Raw => {
            let f = OpenOptions::new().write(true).open(&a.path).expect("open");
            f.write_all_at(&vec![pat; len as usize], off)
                .expect("write");
            f.sync_all().expect("fsync");
        }
        Format::Qcow2 => {
            let out = Command::new("qemu-io")
                .args(["-f", "qcow2", "-c"])
                .arg(format!("write -P {pat} {off} {len}"))
                .arg(&a.path)
                .output()
                .expect("qemu-io");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// True when `len` bytes at `off` all equal `pat`.
fn has_pattern(d: &dyn Driver, vol: &VolName, off: u64, len: u64, pat: u8) -> bool {
    let a = d.attachment(vol).expect("attachment");
    match a.format {
        Format::Raw => {
            let f = fs::File::open(&a.path).expect("open");
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, off).expect("read");
            buf.iter().all(|b| *b == pat)
        }
        Format::Qcow2 => {
            let out = Command::new("qemu-io")
                .args(["-f", "qcow2", "-r", "-c"])
                .arg(format!("read -P {pat} {off} {len}"))
                .arg(&a.path)
                .output()
                .expect("qemu-io");
            let text = String::from_utf8_lossy(&out.stdout);
            out.status.success() && !text.contains("Pattern verification failed")
        }
    }
}

fn kind<T: std::fmt::Debug>(r: storage::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

/// Every `.tmp-` entry under `root`: leftovers of half-done operations.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(p.clone());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out
}

/// Regular files left in the pool, apart from the driver marker.
fn files_left(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            } else if e.file_name() != ".vmsnap-driver" {
                out.push(p);
            }
        }
    }
    out
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(u64, u64)>>);

impl storage::Progress for Recorder {
    fn update(&self, done: u64, total: u64) {
        self.0.lock().expect("lock").push((done, total));
    }
}

/// The suite. Behaviour is chosen from the capability flags only.
fn conformance(name: &str) {
    let root = fresh_root(name, "conf");
    let d = open_driver(name, &root).expect("open driver");
    assert_eq!(d.name(), name);
    let caps = d.info();
    let report = d.recover().expect("recover on a fresh pool");
    assert!(report.is_empty(), "{report:?}");

    // Create, usage, names.
    let v1 = v("vol-1");
    d.create_volume(&v1, 64 * MIB).expect("create");
    assert_eq!(
        kind(d.create_volume(&v1, 64 * MIB)),
        ErrorKind::AlreadyExists
    );
    assert_eq!(d.list_volumes().expect("list"), vec![v1.clone()]);
    let u = d.usage(&v1).expect("usage");
    assert_eq!(u.size, 64 * MIB);
    assert!(u.allocated < 4 * MIB, "a new volume is thin: {u:?}");
    assert!(has_pattern(&*d, &v1, 0, MIB, 0));

    // Write, usage accounting, resize.
    write_pattern(&*d, &v1, 0, 4 * MIB, 0xa1);
    let u2 = d.usage(&v1).expect("usage");
    assert!(u2.allocated >= u.allocated + 4 * MIB, "{u:?} -> {u2:?}");
    d.resize_volume(&v1, 128 * MIB).expect("grow");
    assert_eq!(d.usage(&v1).expect("usage").size, 128 * MIB);
    assert_eq!(kind(d.resize_volume(&v1, 32 * MIB)), ErrorKind::Invalid);
    assert!(has_pattern(&*d, &v1, 0, 4 * MIB, 0xa1));

    // Not found.
    let ghost = v("ghost");
    assert_eq!(kind(d.usage(&ghost)), ErrorKind::NotFound);
    assert_eq!(kind(d.delete_volume(&ghost)), ErrorKind::NotFound);
    assert_eq!(kind(d.attachment(&ghost)), ErrorKind::NotFound);
    assert_eq!(
        kind(d.clone_volume(&v("x"), &ghost, MIB, &storage::NoProgress)),
        ErrorKind::NotFound
    );

    let pool = d.pool_usage().expect("pool usage");
    assert!(pool.total > 0 && pool.free <= pool.total && pool.used <= pool.total);

    let (s1, s2) = (s("snap-1"), s("snap-2"));
    if caps.snapshots {
        let i1 = d.create_snapshot(&v1, &s1).expect("snapshot 1");
        assert_eq!(i1.size, 128 * MIB);
        assert_eq!(kind(d.create_snapshot(&v1, &s1)), ErrorKind::AlreadyExists);
        assert_eq!(kind(d.create_snapshot(&ghost, &s1)), ErrorKind::NotFound);
        write_pattern(&*d, &v1, 0, 4 * MIB, 0xb2);
        write_pattern(&*d, &v1, 8 * MIB, 4 * MIB, 0xb2);
        d.create_snapshot(&v1, &s2).expect("snapshot 2");
        write_pattern(&*d, &v1, 0, 4 * MIB, 0xc3);
        let names: Vec<String> = d
            .list_snapshots(&v1)
            .expect("list snapshots")
            .into_iter()
            .map(|i| i.name.to_string())
            .collect();
        assert_eq!(names, ["snap-1", "snap-2"]);
        assert_eq!(
            kind(d.delete_snapshot(&v1, &s("nope"))),
            ErrorKind::NotFound
        );
    } else {
        assert_eq!(kind(d.create_snapshot(&v1, &s1)), ErrorKind::Unsupported);
        assert!(d.list_snapshots(&v1).expect("list").is_empty());
        write_pattern(&*d, &v1, 0, 4 * MIB, 0xc3);
    }

    // Rollback in place, where the flags allow it.
    if caps.snapshots && caps.restore_from_snapshot {
        if caps.rollback_any {
            d.restore_volume(&v1, &s1)
                .expect("rollback to the older snapshot");
            assert!(has_pattern(&*d, &v1, 0, 4 * MIB, 0xa1));
            assert!(has_pattern(&*d, &v1, 8 * MIB, 4 * MIB, 0));
            // The newer snapshot survives a rollback past it.
            d.restore_volume(&v1, &s2)
                .expect("rollback to the newer snapshot");
            assert!(has_pattern(&*d, &v1, 0, 4 * MIB, 0xb2));
            assert!(has_pattern(&*d, &v1, 8 * MIB, 4 * MIB, 0xb2));
            d.restore_volume(&v1, &s1).expect("rollback again");
            assert!(has_pattern(&*d, &v1, 0, 4 * MIB, 0xa1));
        } else {
            let e = d.restore_volume(&v1, &s1).expect_err("only the latest");
            assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
            assert!(
                e.to_string().contains("snap-2"),
                "names the newer snapshot: {e}"
            );
            assert!(
                has_pattern(&*d, &v1, 0, 4 * MIB, 0xc3),
                "refusal changed nothing"
            );
            d.restore_volume(&v1, &s2).expect("rollback to the latest");
            assert!(has_pattern(&*d, &v1, 0, 4 * MIB, 0xb2));
        }
        assert_eq!(d.list_snapshots(&v1).expect("list").len(), 2);
        assert_eq!(kind(d.restore_volume(&v1, &s("nope"))), ErrorKind::NotFound);
    } else if caps.snapshots {
        assert_eq!(kind(d.restore_volume(&v1, &s1)), ErrorKind::Unsupported);
        let p = Recorder::default();
        assert_eq!(
            kind(d.create_volume_from_snapshot(&v("r"), &v1, &s1, 128 * MIB, &p)),
            ErrorKind::Unsupported
        );
        assert!(
            has_pattern(&*d, &v1, 0, 4 * MIB, 0xc3),
            "refusal changed nothing"
        );
    }
    let v1_pat = if caps.snapshots && caps.restore_from_snapshot {
        if caps.rollback_any {
            0xa1
        } else {
            0xb2
        }
    } else {
        0xc3
    };

    // Volume from a snapshot.
    let from = v("from-snap");
    if caps.snapshots && caps.restore_from_snapshot {
        assert_eq!(
            kind(d.create_volume_from_snapshot(&from, &v1, &s1, 64 * MIB, &storage::NoProgress)),
            ErrorKind::Invalid,
            "a restore to a smaller size is rejected"
        );
        let p = Recorder::default();
        d.create_volume_from_snapshot(&from, &v1, &s1, 256 * MIB, &p)
            .expect("volume from snapshot");
        assert_eq!(d.usage(&from).expect("usage").size, 256 * MIB);
        assert!(has_pattern(&*d, &from, 0, 4 * MIB, 0xa1));
        assert!(has_pattern(&*d, &from, 8 * MIB, 4 * MIB, 0));
        write_pattern(&*d, &from, 0, MIB, 0xee);
        assert!(
            has_pattern(&*d, &v1, 0, 4 * MIB, v1_pat),
            "source untouched"
        );
        let prog = p.0.lock().expect("lock");
        if let Some(&(done, total)) = prog.last() {
            assert_eq!(done, total, "progress ends complete");
        }
        drop(prog);
        assert_eq!(
            kind(d.create_volume_from_snapshot(&from, &v1, &s1, 256 * MIB, &storage::NoProgress)),
            ErrorKind::AlreadyExists
        );
    }

    // Clone from a volume.
    let c1 = v("clone-1");
    assert_eq!(
        kind(d.clone_volume(&c1, &v1, 64 * MIB, &storage::NoProgress)),
        ErrorKind::Invalid
    );
    let p = Recorder::default();
    d.clone_volume(&c1, &v1, 128 * MIB, &p).expect("clone");
    assert!(has_pattern(&*d, &c1, 0, 4 * MIB, v1_pat));
    write_pattern(&*d, &c1, 0, MIB, 0xdd);
    assert!(
        has_pattern(&*d, &v1, 0, 4 * MIB, v1_pat),
        "source untouched"
    );
    if !caps.cow_clone {
        let prog = p.0.lock().expect("lock");
        assert!(!prog.is_empty(), "host-assisted copies report progress");
        let &(done, total) = prog.last().expect("progress");
        assert_eq!(done, total);
        assert!(total > 0);
    }
    assert_eq!(
        kind(d.clone_volume(&c1, &v1, 128 * MIB, &storage::NoProgress)),
        ErrorKind::AlreadyExists
    );

    // Space: a pool whose reserve swallows all free space refuses up front and leaves nothing.
    {
        let tight = open_driver_with(
            name,
            &root,
            PoolOptions {
                reserve_permille: 1000,
                reserve_min: 0,
            },
        )
        .expect("open with a big reserve");
        let e = tight
            .clone_volume(&v("nospace"), &v1, 128 * MIB, &storage::NoProgress)
            .expect_err("no space");
        assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
        assert!(e.to_string().contains("space"), "{e}");
        if caps.snapshots {
            assert_eq!(
                kind(tight.create_snapshot(&v1, &s("nospace"))),
                ErrorKind::NoSpace
            );
        }
        if caps.restore_from_snapshot {
            assert_eq!(
                kind(tight.create_volume_from_snapshot(
                    &v("nospace"),
                    &v1,
                    &s1,
                    256 * MIB,
                    &storage::NoProgress
                )),
                ErrorKind::NoSpace
            );
        }
        assert!(!d.list_volumes().expect("list").contains(&v("nospace")));
        assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
    }

    // Delete in every order.
    if caps.snapshots {
        match d.delete_volume(&v1) {
            Ok(()) => {
                // Snapshots outlive their volume here: still listed and still usable.
                assert!(!d.list_volumes().expect("list").contains(&v1));
                assert_eq!(d.list_snapshots(&v1).expect("list").len(), 2);
                if caps.restore_from_snapshot {
                    let r = v("after-delete");
                    d.create_volume_from_snapshot(&r, &v1, &s2, 128 * MIB, &storage::NoProgress)
                        .expect("volume from a snapshot of a deleted volume");
                    assert!(has_pattern(&*d, &r, 8 * MIB, 4 * MIB, 0xb2));
                    d.delete_volume(&r).expect("delete");
                }
                // The name is not reusable while its old snapshots exist.
                assert_eq!(kind(d.create_volume(&v1, MIB)), ErrorKind::Conflict);
                d.delete_snapshot(&v1, &s2).expect("delete snapshot 2");
                d.delete_snapshot(&v1, &s1).expect("delete snapshot 1");
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
                assert!(e.to_string().contains("snap-1"), "names the snapshots: {e}");
                assert!(
                    has_pattern(&*d, &v1, 0, 4 * MIB, v1_pat),
                    "refusal changed nothing"
                );
                // Delete the older snapshot first: the newer one must stay intact.
                match d.delete_snapshot(&v1, &s1) {
                    Ok(()) => {}
                    Err(e) => {
                        // A clone pins its origin snapshot (ZFS).
                        assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
                        assert!(e.to_string().contains("from-snap"), "names the clone: {e}");
                        d.delete_volume(&from).expect("delete the clone");
                        d.delete_snapshot(&v1, &s1).expect("delete snapshot 1");
                    }
                }
                let left = d.list_snapshots(&v1).expect("list");
                assert_eq!(left.len(), 1);
                if caps.restore_from_snapshot {
                    d.restore_volume(&v1, &s2)
                        .expect("restore the remaining snapshot");
                    assert!(has_pattern(&*d, &v1, 8 * MIB, 4 * MIB, 0xb2));
                }
                d.delete_snapshot(&v1, &s2).expect("delete snapshot 2");
                d.delete_volume(&v1).expect("delete after its snapshots");
            }
        }
    } else {
        // The source goes first; the copy must not care.
        d.delete_volume(&v1).expect("delete source");
    }
    assert!(
        has_pattern(&*d, &c1, 0, MIB, 0xdd),
        "clone survives its source"
    );
    assert!(has_pattern(&*d, &c1, MIB, 3 * MIB, v1_pat));
    d.delete_volume(&c1).expect("delete clone");
    if d.list_volumes().expect("list").contains(&from) {
        d.delete_volume(&from).expect("delete volume from snapshot");
    }
    assert!(d.list_volumes().expect("list").is_empty());
    assert!(
        files_left(&root).is_empty(),
        "leaked: {:?}",
        files_left(&root)
    );
    assert!(d.recover().expect("recover").is_empty());

    // A pool belongs to one driver.
    let other = if name == "dir" { "qcow2" } else { "dir" };
    if let Err(e) = open_driver(other, &root) {
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    } else {
        panic!("{other} opened a {name} pool");
    }
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn conformance_btrfs() {
    conformance("btrfs");
}

#[test]
fn conformance_reflink() {
    conformance("reflink");
}

#[test]
fn conformance_zfslike() {
    conformance("zfslike");
}

#[test]
fn conformance_qcow2() {
    conformance("qcow2");
}

#[test]
fn conformance_dir() {
    conformance("dir");
}

#[test]
fn conformance_snaponly() {
    conformance("snaponly");
}

// ---------------------------------------------------------------------------------------
// Crash safety: the operation runs in a child process that aborts at a named point, as a
// kill -9 would leave it; the parent then runs recover() and checks all-or-nothing.

const CHILD_ENV: &str = "VMSNAP_STORAGE_CRASH_CHILD";

/// Entry point of the crash child; a no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (name, root, op) = (parts[0], Path::new(parts[1]), parts[2]);
    let d = open_driver(name, root).expect("open");
    let np = &storage::NoProgress;
    let r = match op {
        "create" => d.create_volume(&v("new"), 64 * MIB),
        "clone" => d.clone_volume(&v("new"), &v("src"), 64 * MIB, np),
        "snapshot" => d.create_snapshot(&v("src"), &s("snap-new")).map(|_| ()),
        "fromsnap" => d.create_volume_from_snapshot(&v("new"), &v("src"), &s("base"), 64 * MIB, np),
        "restore" => d.restore_volume(&v("src"), &s("base")),
        "slowclone" => {
            let file = std::env::var("VMSNAP_PROGRESS_FILE").expect("progress file");
            let progress = move |done: u64, total: u64| {
                let _ = fs::write(&file, format!("{done} {total}"));
            };
            d.clone_volume(&v("new"), &v("src"), 2048 * MIB, &progress)
        }
        other => panic!("unknown op {other}"),
    };
    r.expect("op");
    // Reaching here means the crash point was not hit.
    std::process::exit(0);
}

fn spawn_child(name: &str, root: &Path, op: &str, point: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("current exe"));
    c.args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{name}|{}|{op}", root.display()))
        .env("VMSNAP_STORAGE_CRASH_AT", point);
    c
}

fn crash_suite(name: &str) {
    use std::os::unix::process::ExitStatusExt;
    let root = fresh_root(name, "crash");
    let d = open_driver(name, &root).expect("open");
    let caps = d.info();
    let src = v("src");
    d.create_volume(&src, 64 * MIB).expect("create");
    write_pattern(&*d, &src, 0, 4 * MIB, 0xa1);
    if caps.snapshots {
        d.create_snapshot(&src, &s("base")).expect("snapshot");
        write_pattern(&*d, &src, 0, 4 * MIB, 0xb2);
    }
    let mut cases = vec![
        ("create", "create:before-rename"),
        ("clone", "clone:after-copy"),
    ];
    if caps.snapshots {
        cases.push(("snapshot", "snapshot:before-rename"));
    }
    if caps.restore_from_snapshot {
        cases.push(("fromsnap", "fromsnap:after-copy"));
        cases.push(("restore", "restore:before-rename"));
    }
    for (op, point) in cases {
        let before = if caps.snapshots { 0xb2 } else { 0xa1 };
        let status = spawn_child(name, &root, op, point)
            .output()
            .expect("spawn child");
        assert_eq!(
            status.status.signal(),
            Some(libc::SIGABRT),
            "{name} {op}: the child must die at {point}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        // A fresh driver, as after a restart.
        let d = open_driver(name, &root).expect("reopen");
        let report = d.recover().expect("recover");
        assert!(
            !report.is_empty(),
            "{name} {op}: recovery found nothing to do"
        );
        assert!(
            leftovers(&root).is_empty(),
            "{name} {op}: {:?}",
            leftovers(&root)
        );
        let vols = d.list_volumes().expect("list");
        match op {
            "create" | "clone" | "fromsnap" => {
                // Killed before the final rename: no half-made volume, and the op can be redone.
                assert!(
                    !vols.contains(&v("new")),
                    "{name} {op}: half-made volume visible"
                );
                match op {
                    "create" => d.create_volume(&v("new"), 64 * MIB),
                    "clone" => d.clone_volume(&v("new"), &src, 64 * MIB, &storage::NoProgress),
                    _ => d.create_volume_from_snapshot(
                        &v("new"),
                        &src,
                        &s("base"),
                        64 * MIB,
                        &storage::NoProgress,
                    ),
                }
                .expect("redo");
                d.delete_volume(&v("new")).expect("delete");
                assert!(
                    has_pattern(&*d, &src, 0, 4 * MIB, before),
                    "{name} {op}: source"
                );
            }
            "snapshot" => {
                // Either absent, or complete (an in-place qcow2 update that finished).
                let snaps = d.list_snapshots(&src).expect("list");
                if snaps.iter().any(|i| i.name.as_str() == "snap-new") {
                    assert!(!report.repaired.is_empty() || !report.finished.is_empty());
                    d.delete_snapshot(&src, &s("snap-new")).expect("delete");
                }
                assert!(
                    has_pattern(&*d, &src, 0, 4 * MIB, before),
                    "{name} {op}: source"
                );
            }
            "restore" => {
                // The volume holds either the old data or the snapshot's, never a mix.
                let old = has_pattern(&*d, &src, 0, 4 * MIB, before);
                let new = has_pattern(&*d, &src, 0, 4 * MIB, 0xa1);
                assert!(old || new, "{name} restore: torn volume");
                d.restore_volume(&src, &s("base")).expect("redo restore");
                assert!(has_pattern(&*d, &src, 0, 4 * MIB, 0xa1));
                write_pattern(&*d, &src, 0, 4 * MIB, before);
            }
            _ => unreachable!(),
        }
        assert_eq!(d.list_volumes().expect("list"), vec![src.clone()]);
    }
    // Through the driver: read-only btrfs snapshots resist a plain recursive delete.
    if caps.snapshots {
        d.delete_snapshot(&src, &s("base"))
            .expect("delete snapshot");
    }
    d.delete_volume(&src).expect("delete volume");
    assert!(files_left(&root).is_empty(), "{:?}", files_left(&root));
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn crash_btrfs() {
    crash_suite("btrfs");
}

#[test]
fn crash_reflink() {
    crash_suite("reflink");
}

#[test]
fn crash_zfslike() {
    crash_suite("zfslike");
}

#[test]
fn crash_qcow2() {
    crash_suite("qcow2");
}

#[test]
fn crash_dir() {
    crash_suite("dir");
}

#[test]
fn crash_snaponly() {
    crash_suite("snaponly");
}

/// A host-assisted copy killed with SIGKILL mid-way leaves no volume, and recovery cleans up.
#[test]
fn dir_clone_killed_mid_copy() {
    let root = fresh_root("dir", "kill");
    let d = open_driver("dir", &root).expect("open");
    let src = v("src");
    d.create_volume(&src, 2048 * MIB).expect("create");
    {
        let a = d.attachment(&src).expect("attachment");
        let f = OpenOptions::new().write(true).open(&a.path).expect("open");
        let chunk: Vec<u8> = (0..64 * MIB).map(|i| (i % 251) as u8).collect();
        for i in 0..16u64 {
            f.write_all_at(&chunk, i * 128 * MIB).expect("write");
        }
        f.sync_all().expect("fsync");
    }
    let progress_file = root.join("progress");
    let mut child = spawn_child("dir", &root, "slowclone", "none")
        .env("VMSNAP_PROGRESS_FILE", &progress_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let started = std::time::Instant::now();
    let killed_at = loop {
        if let Ok(t) = fs::read_to_string(&progress_file) {
            let mut it = t.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
            let (done, total) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
            if done > 0 && done < total {
                child.kill().expect("kill -9");
                break (done, total);
            }
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "copy finished before it was killed"
        );
        assert!(started.elapsed().as_secs() < 60, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    child.wait().expect("reap");
    fs::remove_file(&progress_file).expect("remove progress file");
    assert!(killed_at.0 < killed_at.1);
    let d = open_driver("dir", &root).expect("reopen");
    assert!(!d.list_volumes().expect("list").contains(&v("new")));
    assert!(
        !leftovers(&root).is_empty(),
        "the partial copy is on disk until recovery"
    );
    let report = d.recover().expect("recover");
    assert_eq!(report.removed, vec!["volumes/.tmp-clone-new".to_string()]);
    assert!(leftovers(&root).is_empty());
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn names_never_become_paths() {
    for bad in ["../etc", "a/b", ".tmp-create-x", "..", "", "Vol", "x..y"] {
        assert_eq!(VolName::new(bad).expect_err(bad).kind(), ErrorKind::Invalid);
        assert_eq!(
            SnapName::new(bad).expect_err(bad).kind(),
            ErrorKind::Invalid
        );
    }
    assert_eq!(
        open_driver("nope", Path::new("/tmp"))
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::Invalid)
    );
}

#[test]
fn detect_best_picks_the_filesystem_driver() {
    assert_eq!(
        storage::detect_best(&pools().join("btrfs").join("detect")),
        "btrfs"
    );
    assert_eq!(
        storage::detect_best(&pools().join("xfs").join("detect")),
        "reflink"
    );
    let ext4 = std::env::temp_dir()
        .join("vmsnap-storage-ext4")
        .join("detect");
    assert_eq!(storage::detect_best(&ext4), "qcow2");
    for p in [
        pools().join("btrfs/detect"),
        pools().join("xfs/detect"),
        ext4,
    ] {
        assert!(leftovers(&p).is_empty());
        let _ = fs::remove_dir_all(p);
    }
}
