//! The engine shared by the raw-file drivers (reflink, dir, snaponly, zfslike): one sparse raw
//! file per volume under `volumes/`, snapshots as files under `snapshots/<volume>/`.
//! Each driver file decides which of these operations it offers and with what semantics.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{self, tmp_name};
use crate::{
    crash_point, Attachment, Format, PoolOptions, PoolUsage, Progress, RecoveryReport, SnapName,
    SnapshotInfo, Usage, VolName,
};

const IMG: &str = ".img";

/// How data is duplicated for snapshots and copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyMode {
    /// FICLONE only: O(1), shares blocks.
    Reflink,
    /// Sparse host copy.
    Copy,
    /// FICLONE when the filesystem supports it, else a sparse copy.
    ReflinkOrCopy,
}

pub(crate) struct RawPool {
    pub root: PathBuf,
    pub vols: PathBuf,
    pub snaps: PathBuf,
    pub opts: PoolOptions,
    pub reflink_ok: bool,
}

impl RawPool {
    pub fn open(driver: &'static str, root: &Path, opts: PoolOptions) -> Result<Self> {
        fsutil::init_pool(root, driver, &["volumes", "snapshots"])?;
        let vols = root.join("volumes");
        Ok(RawPool {
            root: root.to_path_buf(),
            reflink_ok: fsutil::reflink_works(&vols),
            snaps: root.join("snapshots"),
            vols,
            opts,
        })
    }

    pub fn vol_path(&self, v: &VolName) -> PathBuf {
        self.vols.join(format!("{v}{IMG}"))
    }

    pub fn snap_dir(&self, v: &VolName) -> PathBuf {
        self.snaps.join(v.as_str())
    }

    pub fn snap_path(&self, v: &VolName, s: &SnapName) -> PathBuf {
        self.snap_dir(v).join(format!("{s}{IMG}"))
    }

    pub fn require_vol(&self, v: &VolName) -> Result<PathBuf> {
        let p = self.vol_path(v);
        if !fsutil::exists(&p) {
            return Err(Error::NotFound(format!("volume {v}")));
        }
        Ok(p)
    }

    pub fn require_snap(&self, v: &VolName, s: &SnapName) -> Result<PathBuf> {
        let p = self.snap_path(v, s);
        if !fsutil::exists(&p) {
            return Err(Error::NotFound(format!("snapshot {v}@{s}")));
        }
        Ok(p)
    }

    fn require_absent(&self, v: &VolName) -> Result<PathBuf> {
        let p = self.vol_path(v);
        if fsutil::exists(&p) {
            return Err(Error::AlreadyExists(format!("volume {v}")));
        }
        // Snapshots of an earlier volume with this name would be mistaken for the new one's.
        let left = self.snapshot_names(v)?;
        if !left.is_empty() {
            return Err(Error::Conflict(format!(
                "snapshots of a deleted volume named {v} still exist: {}",
                left.join(", ")
            )));
        }
        Ok(p)
    }

    pub fn ensure_space(&self, what: &str, needed: u64) -> Result<()> {
        crate::check_space(self.pool_usage()?, self.opts, what, needed)
    }

    fn bytes_needed(&self, mode: CopyMode, src: &Path) -> Result<u64> {
        match (mode, self.reflink_ok) {
            (CopyMode::Reflink, _) | (CopyMode::ReflinkOrCopy, true) => Ok(0),
            _ => fsutil::allocated_bytes(src),
        }
    }

    fn copy(&self, mode: CopyMode, src: &Path, dst: &Path, progress: &dyn Progress) -> Result<()> {
        let size = fsutil::file_len(src)?;
        match mode {
            CopyMode::Reflink => fsutil::reflink(src, dst)?,
            CopyMode::ReflinkOrCopy if self.reflink_ok => match fsutil::reflink(src, dst) {
                Ok(()) => {}
                Err(e) if fsutil::is_reflink_unsupported(&e) => {
                    fsutil::sparse_copy(src, dst, progress)?;
                }
                Err(e) => return Err(e),
            },
            CopyMode::Copy | CopyMode::ReflinkOrCopy => {
                fsutil::sparse_copy(src, dst, progress)?;
            }
        }
        progress.update(size, size);
        Ok(())
    }

    pub fn create_volume(&self, v: &VolName, size: u64) -> Result<()> {
        let dst = self.require_absent(v)?;
        let tmp = self.vols.join(tmp_name("create", v.as_str()));
        fsutil::remove_file_if_exists(&tmp)?;
        fsutil::create_sparse(&tmp, size)?;
        crash_point("create:before-rename");
        fsutil::rename_noreplace(&tmp, &dst)?;
        fsutil::fsync_dir(&self.vols)
    }

    pub fn delete_volume(&self, v: &VolName) -> Result<()> {
        let p = self.require_vol(v)?;
        fs::remove_file(&p).map_err(|e| Error::Io {
            context: format!("remove {}", p.display()),
            source: e,
        })?;
        fsutil::fsync_dir(&self.vols)
    }

    pub fn resize_volume(&self, v: &VolName, size: u64) -> Result<()> {
        let p = self.require_vol(v)?;
        let cur = fsutil::file_len(&p)?;
        if size < cur {
            return Err(Error::Invalid(format!(
                "volume {v} cannot shrink from {cur} to {size} bytes"
            )));
        }
        fsutil::grow(&p, size)
    }

    pub fn usage(&self, v: &VolName) -> Result<Usage> {
        let p = self.require_vol(v)?;
        Ok(Usage {
            size: fsutil::file_len(&p)?,
            allocated: fsutil::allocated_bytes(&p)?,
        })
    }

    pub fn snapshot_names(&self, v: &VolName) -> Result<Vec<String>> {
        fsutil::list_names(&self.snap_dir(v), IMG)
    }

    pub fn list_snapshots(&self, v: &VolName) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        for n in self.snapshot_names(v)? {
            let Ok(name) = SnapName::new(n) else { continue };
            let p = self.snap_path(v, &name);
            out.push(SnapshotInfo {
                size: fsutil::file_len(&p)?,
                created: fsutil::get_created(&p)?,
                name,
            });
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    pub fn create_snapshot(
        &self,
        mode: CopyMode,
        v: &VolName,
        s: &SnapName,
    ) -> Result<SnapshotInfo> {
        let src = self.require_vol(v)?;
        let dst = self.snap_path(v, s);
        if fsutil::exists(&dst) {
            return Err(Error::AlreadyExists(format!("snapshot {v}@{s}")));
        }
        self.ensure_space(&format!("snapshot {v}@{s}"), self.bytes_needed(mode, &src)?)?;
        let dir = self.snap_dir(v);
        fs::create_dir_all(&dir).map_err(|e| Error::Io {
            context: format!("create {}", dir.display()),
            source: e,
        })?;
        let tmp = dir.join(tmp_name("snap", s.as_str()));
        fsutil::remove_file_if_exists(&tmp)?;
        self.copy(mode, &src, &tmp, &crate::NoProgress)?;
        let created = fsutil::next_created(self.list_snapshots(v)?.into_iter().map(|i| i.created));
        fsutil::set_created(&tmp, created)?;
        fsutil::fsync_file(&tmp)?;
        crash_point("snapshot:before-rename");
        fsutil::rename_noreplace(&tmp, &dst)?;
        fsutil::fsync_dir(&dir)?;
        Ok(SnapshotInfo {
            name: s.clone(),
            size: fsutil::file_len(&dst)?,
            created: fsutil::get_created(&dst)?,
        })
    }

    pub fn delete_snapshot(&self, v: &VolName, s: &SnapName) -> Result<()> {
        let p = self.require_snap(v, s)?;
        fs::remove_file(&p).map_err(|e| Error::Io {
            context: format!("remove {}", p.display()),
            source: e,
        })?;
        let dir = self.snap_dir(v);
        fsutil::fsync_dir(&dir)?;
        fsutil::remove_dir_if_empty(&dir)
    }

    /// Replaces the volume with a copy of the snapshot: the copy is built aside and renamed
    /// over the volume, so a crash leaves either the old or the restored data.
    pub fn restore_volume(&self, mode: CopyMode, v: &VolName, s: &SnapName) -> Result<()> {
        let dst = self.require_vol(v)?;
        let src = self.require_snap(v, s)?;
        self.ensure_space(
            &format!("restore of {v}@{s}"),
            self.bytes_needed(mode, &src)?,
        )?;
        let tmp = self.vols.join(tmp_name("restore", v.as_str()));
        fsutil::remove_file_if_exists(&tmp)?;
        self.copy(mode, &src, &tmp, &crate::NoProgress)?;
        // The restored file must not carry the snapshot's creation time.
        let _ = rustix::fs::removexattr(&tmp, "user.vmsnap.created");
        if let Some(origin) = fsutil::get_xattr(&dst, ORIGIN_XATTR) {
            fsutil::set_xattr(&tmp, ORIGIN_XATTR, &origin)?;
        }
        fsutil::fsync_file(&tmp)?;
        crash_point("restore:before-rename");
        fsutil::rename(&tmp, &dst)?;
        fsutil::fsync_dir(&self.vols)
    }

    /// Builds a new volume from `src` under a temp name and renames it into place.
    #[allow(clippy::too_many_arguments)]
    fn make_from(
        &self,
        mode: CopyMode,
        op: &str,
        new: &VolName,
        src: &Path,
        size: u64,
        origin: Option<String>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let dst = self.require_absent(new)?;
        let src_size = fsutil::file_len(src)?;
        if size < src_size {
            return Err(Error::Invalid(format!(
                "volume {new} would be {size} bytes, smaller than its {src_size}-byte source"
            )));
        }
        self.ensure_space(&format!("{op} {new}"), self.bytes_needed(mode, src)?)?;
        let tmp = self.vols.join(tmp_name(op, new.as_str()));
        fsutil::remove_file_if_exists(&tmp)?;
        let result = (|| {
            self.copy(mode, src, &tmp, progress)?;
            crash_point(&format!("{op}:after-copy"));
            fsutil::grow(&tmp, size)?;
            let _ = rustix::fs::removexattr(&tmp, "user.vmsnap.created");
            if let Some(o) = &origin {
                fsutil::set_xattr(&tmp, ORIGIN_XATTR, o)?;
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

    #[allow(clippy::too_many_arguments)]
    pub fn create_volume_from_snapshot(
        &self,
        mode: CopyMode,
        new: &VolName,
        v: &VolName,
        s: &SnapName,
        size: u64,
        record_origin: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        let src = self.require_snap(v, s)?;
        let origin = record_origin.then(|| format!("{v}@{s}"));
        self.make_from(mode, "fromsnap", new, &src, size, origin, progress)
    }

    pub fn clone_volume(
        &self,
        mode: CopyMode,
        new: &VolName,
        src: &VolName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let p = self.require_vol(src)?;
        self.make_from(mode, "clone", new, &p, size, None, progress)
    }

    pub fn attachment(&self, v: &VolName) -> Result<Attachment> {
        Ok(Attachment {
            path: self.require_vol(v)?,
            format: Format::Raw,
        })
    }

    /// Every half-done operation here builds under a temp name, so recovery only deletes.
    pub fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let rm_tree = |p: &Path| {
            fs::remove_dir_all(p).map_err(|e| Error::Io {
                context: format!("remove {}", p.display()),
                source: e,
            })
        };
        fsutil::remove_tmp_entries(&self.root, &self.root, &mut report, rm_tree)?;
        fsutil::remove_tmp_entries(&self.root, &self.vols, &mut report, rm_tree)?;
        for d in fs::read_dir(&self.snaps).map_err(|e| Error::Io {
            context: format!("read {}", self.snaps.display()),
            source: e,
        })? {
            let d = d.map_err(|e| Error::Io {
                context: format!("read {}", self.snaps.display()),
                source: e,
            })?;
            let p = d.path();
            if !p.is_dir() {
                continue;
            }
            fsutil::remove_tmp_entries(&self.root, &p, &mut report, rm_tree)?;
            fsutil::remove_dir_if_empty(&p)?;
        }
        Ok(report)
    }

    pub fn pool_usage(&self) -> Result<PoolUsage> {
        fsutil::pool_usage(&self.root)
    }

    pub fn list_volumes(&self) -> Result<Vec<VolName>> {
        Ok(fsutil::list_names(&self.vols, IMG)?
            .into_iter()
            .filter_map(|n| VolName::new(n).ok())
            .collect())
    }

    /// Volumes made from `v@s` (ZFS-style clones that pin their origin snapshot).
    pub fn clones_of(&self, v: &VolName, s: &SnapName) -> Result<Vec<String>> {
        let want = format!("{v}@{s}");
        let mut out = Vec::new();
        for n in self.list_volumes()? {
            if fsutil::get_xattr(&self.vol_path(&n), ORIGIN_XATTR).as_deref() == Some(&want) {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }
}

pub(crate) const ORIGIN_XATTR: &str = "user.vmsnap.origin";
