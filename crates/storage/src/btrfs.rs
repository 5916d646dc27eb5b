//! `btrfs`: one subvolume per volume under `volumes/`, holding a raw `disk.img`. Snapshots are
//! read-only subvolume snapshots under `snapshots/<volume>/`; clones and restores are writable
//! snapshots. All of them are single ioctls: O(1) in data size. Snapshots are independent
//! subvolumes, so rollback works to any snapshot and a volume can be deleted while its
//! snapshots live on.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, tmp_name};
use crate::{
    crash_point, Attachment, Capabilities, Driver, Format, PoolOptions, PoolUsage, Progress,
    RecoveryReport, SnapName, SnapshotInfo, Usage, VolName,
};

const NAME: &str = "btrfs";
const DISK: &str = "disk.img";

mod ioctl {
    //! The few btrfs ioctls needed, from linux/btrfs.h.

    use std::io;
    use std::os::fd::RawFd;

    const MAGIC: u32 = 0x94;
    const IOC_WRITE: u32 = 1;

    const fn iow(nr: u32, size: usize) -> libc::c_ulong {
        ((IOC_WRITE << 30) | ((size as u32) << 16) | (MAGIC << 8) | nr) as libc::c_ulong
    }

    #[repr(C)]
    pub struct VolArgs {
        pub fd: i64,
        pub name: [u8; 4088],
    }

    #[repr(C)]
    pub struct VolArgsV2 {
        pub fd: i64,
        pub transid: u64,
        pub flags: u64,
        pub unused: [u64; 4],
        pub name: [u8; 4040],
    }

    const SUBVOL_CREATE: libc::c_ulong = iow(14, std::mem::size_of::<VolArgs>());
    const SNAP_DESTROY: libc::c_ulong = iow(15, std::mem::size_of::<VolArgs>());
    const SNAP_CREATE_V2: libc::c_ulong = iow(23, std::mem::size_of::<VolArgsV2>());
    const SUBVOL_SETFLAGS: libc::c_ulong = iow(26, std::mem::size_of::<u64>());
    const SUBVOL_RDONLY: u64 = 1 << 1;

    fn fill(dst: &mut [u8], name: &str) -> io::Result<()> {
        let b = name.as_bytes();
        if b.len() >= dst.len() || b.contains(&0) || b.contains(&b'/') {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        dst[..b.len()].copy_from_slice(b);
        Ok(())
    }

    fn check(rc: libc::c_int) -> io::Result<()> {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Creates subvolume `name` in directory `dir`.
    pub fn subvol_create(dir: RawFd, name: &str) -> io::Result<()> {
        let mut a = VolArgs {
            fd: 0,
            name: [0; 4088],
        };
        fill(&mut a.name, name)?;
        // SAFETY: `a` is a fully initialised btrfs_ioctl_vol_args that outlives the call.
        check(unsafe { libc::ioctl(dir, SUBVOL_CREATE, &mut a as *mut VolArgs) })
    }

    /// Snapshots subvolume `src` as `name` in directory `dir`.
    pub fn snap_create(dir: RawFd, src: RawFd, name: &str, readonly: bool) -> io::Result<()> {
        let mut a = VolArgsV2 {
            fd: src as i64,
            transid: 0,
            flags: if readonly { SUBVOL_RDONLY } else { 0 },
            unused: [0; 4],
            name: [0; 4040],
        };
        fill(&mut a.name, name)?;
        // SAFETY: `a` is a fully initialised btrfs_ioctl_vol_args_v2 that outlives the call.
        check(unsafe { libc::ioctl(dir, SNAP_CREATE_V2, &mut a as *mut VolArgsV2) })
    }

    /// Deletes subvolume `name` in directory `dir`.
    pub fn snap_destroy(dir: RawFd, name: &str) -> io::Result<()> {
        let mut a = VolArgs {
            fd: 0,
            name: [0; 4088],
        };
        fill(&mut a.name, name)?;
        // SAFETY: as above.
        check(unsafe { libc::ioctl(dir, SNAP_DESTROY, &mut a as *mut VolArgs) })
    }

    /// Makes the subvolume open at `subvol` read-only.
    pub fn set_readonly(subvol: RawFd) -> io::Result<()> {
        let flags: u64 = SUBVOL_RDONLY;
        // SAFETY: the ioctl reads one u64 from the pointer, which stays valid for the call.
        check(unsafe { libc::ioctl(subvol, SUBVOL_SETFLAGS, &flags as *const u64) })
    }
}

pub struct BtrfsDriver {
    root: PathBuf,
    vols: PathBuf,
    snaps: PathBuf,
    opts: PoolOptions,
}

fn open_dir(p: &Path) -> Result<File> {
    File::open(p).ctx(|| format!("open {}", p.display()))
}

fn split(p: &Path) -> (PathBuf, String) {
    let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (parent, name)
}

impl BtrfsDriver {
    pub fn open(root: &Path, opts: PoolOptions) -> Result<Self> {
        fs::create_dir_all(root).ctx(|| format!("create pool {}", root.display()))?;
        if !fsutil::is_btrfs(root) {
            return Err(Error::FailedPrecondition(format!(
                "the btrfs driver needs {} to be on btrfs",
                root.display()
            )));
        }
        fsutil::init_pool(root, NAME, &["volumes", "snapshots"])?;
        Ok(BtrfsDriver {
            root: root.to_path_buf(),
            vols: root.join("volumes"),
            snaps: root.join("snapshots"),
            opts,
        })
    }

    fn vol_dir(&self, v: &VolName) -> PathBuf {
        self.vols.join(v.as_str())
    }

    fn snap_parent(&self, v: &VolName) -> PathBuf {
        self.snaps.join(v.as_str())
    }

    fn snap_dir(&self, v: &VolName, s: &SnapName) -> PathBuf {
        self.snap_parent(v).join(s.as_str())
    }

    fn require_vol(&self, v: &VolName) -> Result<PathBuf> {
        let p = self.vol_dir(v);
        if !p.join(DISK).exists() {
            return Err(Error::NotFound(format!("volume {v}")));
        }
        Ok(p)
    }

    fn require_snap(&self, v: &VolName, s: &SnapName) -> Result<PathBuf> {
        let p = self.snap_dir(v, s);
        if !p.join(DISK).exists() {
            return Err(Error::NotFound(format!("snapshot {v}@{s}")));
        }
        Ok(p)
    }

    fn snapshot_names(&self, v: &VolName) -> Result<Vec<String>> {
        fsutil::list_names(&self.snap_parent(v), "")
    }

    fn require_absent(&self, v: &VolName) -> Result<PathBuf> {
        let p = self.vol_dir(v);
        if fsutil::exists(&p) {
            return Err(Error::AlreadyExists(format!("volume {v}")));
        }
        let left = self.snapshot_names(v)?;
        if !left.is_empty() {
            return Err(Error::Conflict(format!(
                "snapshots of a deleted volume named {v} still exist: {}",
                left.join(", ")
            )));
        }
        Ok(p)
    }

    /// Deletes the subvolume at `p`.
    fn destroy(&self, p: &Path) -> Result<()> {
        let (parent, name) = split(p);
        let d = open_dir(&parent)?;
        ioctl::snap_destroy(d.as_raw_fd(), &name)
            .ctx(|| format!("delete subvolume {}", p.display()))
    }

    /// Snapshots subvolume `src` to the new path `dst`.
    fn snapshot(&self, src: &Path, dst: &Path, readonly: bool) -> Result<()> {
        let (parent, name) = split(dst);
        let s = open_dir(src)?;
        let d = open_dir(&parent)?;
        ioctl::snap_create(d.as_raw_fd(), s.as_raw_fd(), &name, readonly)
            .ctx(|| format!("snapshot {} to {}", src.display(), dst.display()))
    }

    fn destroy_if_exists(&self, p: &Path) -> Result<()> {
        if fsutil::exists(p) {
            self.destroy(p)?;
        }
        Ok(())
    }

    /// Builds a new volume as a writable snapshot of `src` and renames it into place.
    fn make_from(&self, op: &str, new: &VolName, src: &Path, size: u64) -> Result<()> {
        let dst = self.require_absent(new)?;
        let src_size = fsutil::file_len(&src.join(DISK))?;
        if size < src_size {
            return Err(Error::Invalid(format!(
                "volume {new} would be {size} bytes, smaller than its {src_size}-byte source"
            )));
        }
        // Metadata only; the reserve covers it.
        self.ensure_space(&format!("{op} {new}"), 0)?;
        let tmp = self.vols.join(tmp_name(op, new.as_str()));
        self.destroy_if_exists(&tmp)?;
        self.snapshot(src, &tmp, false)?;
        let result = (|| {
            crash_point(&format!("{op}:after-copy"));
            fsutil::grow(&tmp.join(DISK), size)?;
            fsutil::rename_noreplace(&tmp, &dst)?;
            fsutil::fsync_dir(&self.vols)
        })();
        if result.is_err() {
            let _ = self.destroy_if_exists(&tmp);
        }
        result
    }
}

impl Driver for BtrfsDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            restore_from_snapshot: true,
            cow_clone: true,
            rollback_any: true,
            live_snapshot: true,
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
        let dst = self.require_absent(vol)?;
        let tmp = self.vols.join(tmp_name("create", vol.as_str()));
        self.destroy_if_exists(&tmp)?;
        let d = open_dir(&self.vols)?;
        ioctl::subvol_create(d.as_raw_fd(), &tmp_name("create", vol.as_str()))
            .ctx(|| format!("create subvolume {}", tmp.display()))?;
        fsutil::create_sparse(&tmp.join(DISK), size)?;
        crash_point("create:before-rename");
        fsutil::rename_noreplace(&tmp, &dst)?;
        fsutil::fsync_dir(&self.vols)
    }

    fn delete_volume(&self, vol: &VolName) -> Result<()> {
        let p = self.require_vol(vol)?;
        self.destroy(&p)
    }

    fn resize_volume(&self, vol: &VolName, size: u64) -> Result<()> {
        let p = self.require_vol(vol)?.join(DISK);
        let cur = fsutil::file_len(&p)?;
        if size < cur {
            return Err(Error::Invalid(format!(
                "volume {vol} cannot shrink from {cur} to {size} bytes"
            )));
        }
        fsutil::grow(&p, size)
    }

    fn usage(&self, vol: &VolName) -> Result<Usage> {
        let p = self.require_vol(vol)?.join(DISK);
        Ok(Usage {
            size: fsutil::file_len(&p)?,
            allocated: fsutil::allocated_bytes(&p)?,
        })
    }

    fn create_snapshot(&self, vol: &VolName, snap: &SnapName) -> Result<SnapshotInfo> {
        let src = self.require_vol(vol)?;
        let dst = self.snap_dir(vol, snap);
        if fsutil::exists(&dst) {
            return Err(Error::AlreadyExists(format!("snapshot {vol}@{snap}")));
        }
        self.ensure_space(&format!("snapshot {vol}@{snap}"), 0)?;
        let parent = self.snap_parent(vol);
        fs::create_dir_all(&parent).ctx(|| format!("create {}", parent.display()))?;
        // Made writable under a temp name so the creation time can be recorded, then sealed
        // read-only and renamed: a crash leaves only a temp subvolume.
        let tmp = parent.join(tmp_name("snap", snap.as_str()));
        self.destroy_if_exists(&tmp)?;
        self.snapshot(&src, &tmp, false)?;
        let created =
            fsutil::next_created(self.list_snapshots(vol)?.into_iter().map(|i| i.created));
        fsutil::set_created(&tmp, created)?;
        let t = open_dir(&tmp)?;
        ioctl::set_readonly(t.as_raw_fd()).ctx(|| format!("seal {}", tmp.display()))?;
        drop(t);
        crash_point("snapshot:before-rename");
        fsutil::rename_noreplace(&tmp, &dst)?;
        fsutil::fsync_dir(&parent)?;
        Ok(SnapshotInfo {
            name: snap.clone(),
            size: fsutil::file_len(&dst.join(DISK))?,
            created,
        })
    }

    fn delete_snapshot(&self, vol: &VolName, snap: &SnapName) -> Result<()> {
        let p = self.require_snap(vol, snap)?;
        self.destroy(&p)?;
        fsutil::remove_dir_if_empty(&self.snap_parent(vol))
    }

    fn list_snapshots(&self, vol: &VolName) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        for n in self.snapshot_names(vol)? {
            let Ok(name) = SnapName::new(n) else { continue };
            let p = self.snap_dir(vol, &name);
            out.push(SnapshotInfo {
                size: fsutil::file_len(&p.join(DISK))?,
                created: fsutil::get_created(&p)?,
                name,
            });
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// A writable snapshot of the snapshot is swapped with the volume in one
    /// RENAME_EXCHANGE; the old volume, now under the temp name, is then deleted.
    fn restore_volume(&self, vol: &VolName, snap: &SnapName) -> Result<()> {
        let dst = self.require_vol(vol)?;
        let src = self.require_snap(vol, snap)?;
        self.ensure_space(&format!("restore of {vol}@{snap}"), 0)?;
        let tmp = self.vols.join(tmp_name("restore", vol.as_str()));
        self.destroy_if_exists(&tmp)?;
        self.snapshot(&src, &tmp, false)?;
        crash_point("restore:before-rename");
        fsutil::rename_exchange(&tmp, &dst)?;
        fsutil::fsync_dir(&self.vols)?;
        self.destroy(&tmp)
    }

    fn create_volume_from_snapshot(
        &self,
        new: &VolName,
        vol: &VolName,
        snap: &SnapName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let src = self.require_snap(vol, snap)?;
        self.make_from("fromsnap", new, &src, size)?;
        progress.update(size, size);
        Ok(())
    }

    fn clone_volume(
        &self,
        new: &VolName,
        src: &VolName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let p = self.require_vol(src)?;
        self.make_from("clone", new, &p, size)?;
        progress.update(size, size);
        Ok(())
    }

    fn attachment(&self, vol: &VolName) -> Result<Attachment> {
        Ok(Attachment {
            path: self.require_vol(vol)?.join(DISK),
            format: Format::Raw,
        })
    }

    fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let destroy = |p: &Path| match self.destroy(p) {
            Ok(()) => Ok(()),
            // A plain directory (not a subvolume) is removed normally.
            Err(_) => fs::remove_dir_all(p).ctx(|| format!("remove {}", p.display())),
        };
        fsutil::remove_tmp_entries(&self.root, &self.root, &mut report, |p: &Path| {
            fs::remove_dir_all(p).ctx(|| format!("remove {}", p.display()))
        })?;
        fsutil::remove_tmp_entries(&self.root, &self.vols, &mut report, destroy)?;
        for d in fs::read_dir(&self.snaps).ctx(|| format!("read {}", self.snaps.display()))? {
            let p = d.ctx(|| format!("read {}", self.snaps.display()))?.path();
            if p.is_dir() {
                fsutil::remove_tmp_entries(&self.root, &p, &mut report, destroy)?;
                fsutil::remove_dir_if_empty(&p)?;
            }
        }
        Ok(report)
    }

    fn pool_usage(&self) -> Result<PoolUsage> {
        fsutil::pool_usage(&self.root)
    }

    fn list_volumes(&self) -> Result<Vec<VolName>> {
        Ok(fsutil::list_names(&self.vols, "")?
            .into_iter()
            .filter_map(|n| VolName::new(n).ok())
            .collect())
    }
}
