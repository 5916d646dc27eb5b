//! `qcow2`: one qcow2 image per volume, on any filesystem (ext4 included), driven through
//! `qemu-img`. Snapshots are internal qcow2 snapshots: each is independent of the others, so
//! deleting a later snapshot never affects an earlier one and rollback works to any of them.
//! Clones and volumes from snapshots are full (sparse) copies made with `qemu-img convert`,
//! so there are no backing chains to keep consistent: a clone never depends on its source.
//! Because snapshots live inside the volume's file, a volume with snapshots cannot be deleted
//! (FailedPrecondition naming them). In-place updates (snapshot, rollback, resize) are guarded
//! by an intent marker; `recover()` runs `qemu-img check -r all` on volumes left marked.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, tmp_name};
use crate::{
    crash_point, Attachment, Capabilities, Driver, Format, PoolOptions, PoolUsage, Progress,
    RecoveryReport, SnapName, SnapshotInfo, Usage, VolName,
};

const NAME: &str = "qcow2";
const EXT: &str = ".qcow2";
const INTENT: &str = "intent";

pub struct Qcow2Driver {
    root: PathBuf,
    vols: PathBuf,
    opts: PoolOptions,
}

/// One entry of a qcow2 internal snapshot table.
#[derive(Debug, Clone)]
struct QSnap {
    name: String,
    created: SystemTime,
    disk_size: Option<u64>,
}

struct Header {
    virtual_size: u64,
    snapshots: Vec<QSnap>,
}

fn be_u16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

fn be_u32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn be_u64(b: &[u8], o: usize) -> u64 {
    (u64::from(be_u32(b, o)) << 32) | u64::from(be_u32(b, o + 4))
}

/// Reads the qcow2 header and snapshot table directly: `qemu-img info` does not report each
/// snapshot's disk size, which is the size a restore produces.
fn read_header(path: &Path) -> Result<Header> {
    let bad = |why: &str| Error::Tool {
        tool: "qcow2",
        message: format!("{}: {why}", path.display()),
    };
    let mut f = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut h = [0u8; 72];
    f.read_exact(&mut h)
        .ctx(|| format!("read header of {}", path.display()))?;
    if &h[0..4] != b"QFI\xfb" {
        return Err(bad("not a qcow2 image"));
    }
    let virtual_size = be_u64(&h, 24);
    let nb = be_u32(&h, 60) as usize;
    let off = be_u64(&h, 64);
    let mut snapshots = Vec::with_capacity(nb);
    if nb > 0 {
        // The table is at most 64 MiB by the qcow2 spec.
        let len = fs::metadata(path)
            .ctx(|| format!("stat {}", path.display()))?
            .len();
        let want = (len.saturating_sub(off)).min(64 << 20) as usize;
        let mut t = vec![0u8; want];
        f.seek(SeekFrom::Start(off))
            .ctx(|| format!("seek {}", path.display()))?;
        let n = f
            .read(&mut t)
            .ctx(|| format!("read snapshot table of {}", path.display()))?;
        t.truncate(n);
        let mut p = 0usize;
        for _ in 0..nb {
            if p + 40 > t.len() {
                return Err(bad("truncated snapshot table"));
            }
            let id_len = be_u16(&t, p + 12) as usize;
            let name_len = be_u16(&t, p + 14) as usize;
            let sec = be_u32(&t, p + 16);
            let nsec = be_u32(&t, p + 20);
            let extra = be_u32(&t, p + 36) as usize;
            let e = p + 40;
            let end = e + extra + id_len + name_len;
            if end > t.len() {
                return Err(bad("truncated snapshot entry"));
            }
            let disk_size = (extra >= 16).then(|| be_u64(&t, e + 8));
            let name = String::from_utf8_lossy(&t[e + extra + id_len..end]).into_owned();
            snapshots.push(QSnap {
                name,
                created: UNIX_EPOCH + Duration::new(u64::from(sec), nsec.min(999_999_999)),
                disk_size,
            });
            p = (end + 7) & !7;
        }
    }
    Ok(Header {
        virtual_size,
        snapshots,
    })
}

/// Runs qemu-img; a lock failure means a VM has the image open.
fn qemu_img(args: &[&str]) -> Result<String> {
    let out = Command::new("qemu-img")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ctx(|| "run qemu-img (is qemu-utils installed?)".to_string())?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(tool_error(&String::from_utf8_lossy(&out.stderr)))
}

fn tool_error(stderr: &str) -> Error {
    let msg = stderr.trim().to_string();
    if msg.contains("lock") {
        Error::Conflict(format!("volume is in use: {msg}"))
    } else if msg.contains("No space left") {
        Error::NoSpace {
            what: "qemu-img".into(),
            needed: 0,
            available: 0,
            reserve: 0,
        }
    } else {
        Error::Tool {
            tool: "qemu-img",
            message: msg,
        }
    }
}

fn arg(p: &Path) -> &str {
    // Pool paths are built from validated names under a caller-given root.
    p.to_str().unwrap_or_default()
}

/// Runs `qemu-img convert -p`, turning its percentage output into byte progress.
fn convert_with_progress(args: &[&str], total: u64, progress: &dyn Progress) -> Result<()> {
    let mut child = Command::new("qemu-img")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx(|| "run qemu-img (is qemu-utils installed?)".to_string())?;
    let mut stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    if let Some(mut out) = child.stdout.take() {
        let mut buf = [0u8; 256];
        let mut line = Vec::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b == b'\r' || b == b'\n' {
                    if let Some(pct) = parse_pct(&line) {
                        progress.update((total as f64 * pct / 100.0) as u64, total);
                    }
                    line.clear();
                } else {
                    line.push(b);
                }
            }
        }
    }
    let status = child.wait().ctx(|| "wait for qemu-img".to_string())?;
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(tool_error(&stderr));
    }
    progress.update(total, total);
    Ok(())
}

/// Parses "    (45.30/100%)".
fn parse_pct(line: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(line).ok()?.trim();
    let s = s.strip_prefix('(')?;
    let (n, _) = s.split_once('/')?;
    n.parse().ok()
}

impl Qcow2Driver {
    pub fn open(root: &Path, opts: PoolOptions) -> Result<Self> {
        fsutil::init_pool(root, NAME, &["volumes"])?;
        Ok(Qcow2Driver {
            root: root.to_path_buf(),
            vols: root.join("volumes"),
            opts,
        })
    }

    fn vol_path(&self, v: &VolName) -> PathBuf {
        self.vols.join(format!("{v}{EXT}"))
    }

    fn require_vol(&self, v: &VolName) -> Result<PathBuf> {
        let p = self.vol_path(v);
        if !fsutil::exists(&p) {
            return Err(Error::NotFound(format!("volume {v}")));
        }
        Ok(p)
    }

    fn snapshots(&self, v: &VolName) -> Result<(PathBuf, Header)> {
        let p = self.require_vol(v)?;
        let h = read_header(&p)?;
        Ok((p, h))
    }

    fn find_snap(&self, v: &VolName, s: &SnapName) -> Result<(PathBuf, Header, QSnap)> {
        let (p, h) = self.snapshots(v)?;
        let snap = h
            .snapshots
            .iter()
            .find(|q| q.name == s.as_str())
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("snapshot {v}@{s}")))?;
        Ok((p, h, snap))
    }

    /// Runs an in-place update of a volume's image under an intent marker.
    fn in_place(&self, v: &VolName, point: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let marker = self.vols.join(tmp_name(INTENT, v.as_str()));
        fs::write(&marker, b"").ctx(|| format!("write {}", marker.display()))?;
        fsutil::fsync_dir(&self.vols)?;
        let r = f();
        crash_point(point);
        fsutil::remove_file_if_exists(&marker)?;
        r
    }

    /// Bytes a qcow2 copy of `src` (or of one of its snapshots) will need.
    fn measure(&self, src: &Path, snap: Option<&str>) -> Result<u64> {
        let snap_opt = snap.map(|s| format!("snapshot.name={s}"));
        let mut args = vec!["measure", "--output=json", "-O", "qcow2"];
        if let Some(o) = &snap_opt {
            args.extend(["-l", o.as_str()]);
        }
        args.push(arg(src));
        let out = qemu_img(&args)?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Tool {
            tool: "qemu-img",
            message: format!("measure output: {e}"),
        })?;
        Ok(v["required"].as_u64().unwrap_or(0))
    }

    #[allow(clippy::too_many_arguments)]
    fn make_from(
        &self,
        op: &str,
        new: &VolName,
        src: &Path,
        snap: Option<&str>,
        src_size: u64,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let dst = self.vol_path(new);
        if fsutil::exists(&dst) {
            return Err(Error::AlreadyExists(format!("volume {new}")));
        }
        if size < src_size {
            return Err(Error::Invalid(format!(
                "volume {new} would be {size} bytes, smaller than its {src_size}-byte source"
            )));
        }
        self.ensure_space(&format!("{op} {new}"), self.measure(src, snap)?)?;
        let tmp = self.vols.join(tmp_name(op, new.as_str()));
        fsutil::remove_file_if_exists(&tmp)?;
        let snap_opt = snap.map(|s| format!("snapshot.name={s}"));
        let mut args = vec![
            "convert",
            "-p",
            "-f",
            "qcow2",
            "-O",
            "qcow2",
            "-o",
            "lazy_refcounts=off",
        ];
        if let Some(o) = &snap_opt {
            args.extend(["-l", o.as_str()]);
        }
        args.extend([arg(src), arg(&tmp)]);
        let result = (|| {
            convert_with_progress(&args, src_size, progress)?;
            crash_point(&format!("{op}:after-copy"));
            if size > src_size {
                qemu_img(&["resize", "-q", "-f", "qcow2", arg(&tmp), &size.to_string()])?;
            }
            fsutil::fsync_file(&tmp)?;
            fsutil::rename_noreplace(&tmp, &dst)?;
            fsutil::fsync_dir(&self.vols)
        })();
        if result.is_err() {
            let _ = fsutil::remove_file_if_exists(&tmp);
        }
        result
    }
}

impl Driver for Qcow2Driver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            restore_from_snapshot: true,
            cow_clone: false,
            rollback_any: true,
            // qemu-img cannot touch an image a VM holds open.
            live_snapshot: false,
            sparse: true,
            remote: false,
        }
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn options(&self) -> PoolOptions {
        self.opts
    }

    fn create_volume(&self, vol: &VolName, size: u64) -> Result<()> {
        let dst = self.vol_path(vol);
        if fsutil::exists(&dst) {
            return Err(Error::AlreadyExists(format!("volume {vol}")));
        }
        let tmp = self.vols.join(tmp_name("create", vol.as_str()));
        fsutil::remove_file_if_exists(&tmp)?;
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "lazy_refcounts=off",
            arg(&tmp),
            &size.to_string(),
        ])?;
        fsutil::fsync_file(&tmp)?;
        crash_point("create:before-rename");
        fsutil::rename_noreplace(&tmp, &dst)?;
        fsutil::fsync_dir(&self.vols)
    }

    fn delete_volume(&self, vol: &VolName) -> Result<()> {
        let (p, h) = self.snapshots(vol)?;
        if !h.snapshots.is_empty() {
            let names: Vec<&str> = h.snapshots.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::FailedPrecondition(format!(
                "volume {vol} holds internal snapshots that would be lost: {}; delete them first",
                names.join(", ")
            )));
        }
        fs::remove_file(&p).ctx(|| format!("remove {}", p.display()))?;
        fsutil::fsync_dir(&self.vols)
    }

    fn resize_volume(&self, vol: &VolName, size: u64) -> Result<()> {
        let (p, h) = self.snapshots(vol)?;
        if size < h.virtual_size {
            return Err(Error::Invalid(format!(
                "volume {vol} cannot shrink from {} to {size} bytes",
                h.virtual_size
            )));
        }
        if size == h.virtual_size {
            return Ok(());
        }
        self.in_place(vol, "resize:after-update", || {
            qemu_img(&["resize", "-q", "-f", "qcow2", arg(&p), &size.to_string()]).map(|_| ())
        })
    }

    fn usage(&self, vol: &VolName) -> Result<Usage> {
        let (p, h) = self.snapshots(vol)?;
        Ok(Usage {
            size: h.virtual_size,
            allocated: fsutil::allocated_bytes(&p)?,
        })
    }

    fn create_snapshot(&self, vol: &VolName, snap: &SnapName) -> Result<SnapshotInfo> {
        let (p, h) = self.snapshots(vol)?;
        if h.snapshots.iter().any(|s| s.name == snap.as_str()) {
            return Err(Error::AlreadyExists(format!("snapshot {vol}@{snap}")));
        }
        // An internal snapshot copies the L1 table and bumps refcounts: metadata only.
        self.ensure_space(&format!("snapshot {vol}@{snap}"), 0)?;
        self.in_place(vol, "snapshot:before-rename", || {
            qemu_img(&["snapshot", "-q", "-c", snap.as_str(), arg(&p)]).map(|_| ())
        })?;
        let (_, _, s) = self.find_snap(vol, snap)?;
        Ok(SnapshotInfo {
            name: snap.clone(),
            size: s.disk_size.unwrap_or(h.virtual_size),
            created: s.created,
        })
    }

    fn delete_snapshot(&self, vol: &VolName, snap: &SnapName) -> Result<()> {
        let (p, _, _) = self.find_snap(vol, snap)?;
        self.in_place(vol, "delete-snapshot:after-update", || {
            qemu_img(&["snapshot", "-q", "-d", snap.as_str(), arg(&p)]).map(|_| ())
        })
    }

    fn list_snapshots(&self, vol: &VolName) -> Result<Vec<SnapshotInfo>> {
        let (_, h) = self.snapshots(vol)?;
        let mut out: Vec<SnapshotInfo> = h
            .snapshots
            .iter()
            .filter_map(|s| {
                Some(SnapshotInfo {
                    name: SnapName::new(s.name.clone()).ok()?,
                    size: s.disk_size.unwrap_or(h.virtual_size),
                    created: s.created,
                })
            })
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    fn restore_volume(&self, vol: &VolName, snap: &SnapName) -> Result<()> {
        let (p, _, _) = self.find_snap(vol, snap)?;
        self.in_place(vol, "restore:before-rename", || {
            qemu_img(&["snapshot", "-q", "-a", snap.as_str(), arg(&p)]).map(|_| ())
        })
    }

    fn create_volume_from_snapshot(
        &self,
        new: &VolName,
        vol: &VolName,
        snap: &SnapName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (p, h, s) = self.find_snap(vol, snap)?;
        let src_size = s.disk_size.unwrap_or(h.virtual_size);
        self.make_from(
            "fromsnap",
            new,
            &p,
            Some(snap.as_str()),
            src_size,
            size,
            progress,
        )
    }

    fn clone_volume(
        &self,
        new: &VolName,
        src: &VolName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (p, h) = self.snapshots(src)?;
        self.make_from("clone", new, &p, None, h.virtual_size, size, progress)
    }

    fn attachment(&self, vol: &VolName) -> Result<Attachment> {
        Ok(Attachment {
            path: self.require_vol(vol)?,
            format: Format::Qcow2,
        })
    }

    fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let prefix = tmp_name(INTENT, "");
        let mut marked = Vec::new();
        for e in fs::read_dir(&self.vols).ctx(|| format!("read {}", self.vols.display()))? {
            let e = e.ctx(|| format!("read {}", self.vols.display()))?;
            if let Some(v) = e.file_name().to_str().and_then(|n| n.strip_prefix(&prefix)) {
                marked.push((e.path(), v.to_string()));
            }
        }
        for (marker, v) in marked {
            if let Ok(vol) = VolName::new(v) {
                let p = self.vol_path(&vol);
                if p.exists() {
                    // Exit status 0 (clean) or 1/3 (repaired leaks/errors) are all fine after -r.
                    let out = Command::new("qemu-img")
                        .args(["check", "-q", "-r", "all", "-f", "qcow2", arg(&p)])
                        .output()
                        .ctx(|| "run qemu-img check".to_string())?;
                    if out.status.code() == Some(2) {
                        return Err(Error::Tool {
                            tool: "qemu-img",
                            message: format!(
                                "check of {} found unrepairable corruption: {}",
                                p.display(),
                                String::from_utf8_lossy(&out.stderr).trim()
                            ),
                        });
                    }
                    report.repaired.push(fsutil::rel(&self.root, &p));
                }
            }
            fs::remove_file(&marker).ctx(|| format!("remove {}", marker.display()))?;
        }
        let rm = |p: &Path| fs::remove_dir_all(p).ctx(|| format!("remove {}", p.display()));
        fsutil::remove_tmp_entries(&self.root, &self.root, &mut report, rm)?;
        fsutil::remove_tmp_entries(&self.root, &self.vols, &mut report, rm)?;
        Ok(report)
    }

    fn pool_usage(&self) -> Result<PoolUsage> {
        fsutil::pool_usage(&self.root)
    }

    fn list_volumes(&self) -> Result<Vec<VolName>> {
        Ok(fsutil::list_names(&self.vols, EXT)?
            .into_iter()
            .filter_map(|n| VolName::new(n).ok())
            .collect())
    }
}
