//! Filesystem helpers shared by the drivers: sparse copies, reflinks, space accounting and
//! the temp-name protocol.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::SeekFrom;

use crate::error::{Error, IoContext, Result};
use crate::{PoolUsage, Progress, RecoveryReport};

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
const TMP_PREFIX: &str = ".tmp-";
const CREATED_XATTR: &str = "user.vmsnap.created";
const DRIVER_MARKER: &str = ".vmsnap-driver";

/// What [`sparse_copy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CopyStats {
    /// Apparent size of the file.
    pub size: u64,
    /// Bytes of data copied (holes skipped).
    pub data_bytes: u64,
    /// Number of data extents found.
    pub extents: u64,
    pub elapsed: Duration,
}

/// Copies `src` to `dst` (created or truncated), skipping holes: only the ranges that
/// SEEK_DATA/SEEK_HOLE report as data are copied, with copy_file_range, so the copy is as
/// sparse as the source. Reports progress in data bytes.
pub fn sparse_copy(src: &Path, dst: &Path, progress: &dyn Progress) -> Result<CopyStats> {
    let input = File::open(src).ctx(|| format!("open {}", src.display()))?;
    let output = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .ctx(|| format!("create {}", dst.display()))?;
    sparse_copy_file(&input, &output, progress)
        .map_err(|e| io_err(e, || format!("copy {} to {}", src.display(), dst.display())))
}

fn io_err(e: io::Error, ctx: impl FnOnce() -> String) -> Error {
    Error::Io {
        context: ctx(),
        source: e,
    }
}

/// Data ranges of a file, as (start, end) pairs.
fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            // Filesystems without SEEK_DATA: the whole file is data.
            Err(rustix::io::Errno::INVAL) if pos == 0 => return Ok(vec![(0, size)]),
            Err(e) => return Err(e.into()),
        };
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

pub(crate) fn sparse_copy_file(
    input: &File,
    output: &File,
    progress: &dyn Progress,
) -> io::Result<CopyStats> {
    let started = Instant::now();
    let size = input.metadata()?.len();
    output.set_len(size)?;
    let extents = data_extents(input, size)?;
    let total: u64 = extents.iter().map(|(s, e)| e - s).sum();
    progress.update(0, total);
    let mut done = 0u64;
    let mut use_cfr = true;
    const CHUNK: u64 = 64 << 20;
    let mut buf = Vec::new();
    for &(start, end) in &extents {
        let mut off = start;
        while off < end {
            let want = (end - off).min(CHUNK);
            let n = if use_cfr {
                let mut in_off = off;
                let mut out_off = off;
                match rustix::fs::copy_file_range(
                    input,
                    Some(&mut in_off),
                    output,
                    Some(&mut out_off),
                    want as usize,
                ) {
                    Ok(n) => n as u64,
                    Err(
                        rustix::io::Errno::XDEV
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::OPNOTSUPP
                        | rustix::io::Errno::INVAL,
                    ) => {
                        use_cfr = false;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                buf.resize(want.min(8 << 20) as usize, 0);
                let n = input.read_at(&mut buf, off)?;
                output.write_all_at(&buf[..n], off)?;
                n as u64
            };
            if n == 0 {
                // The source shrank under us; what is there has been copied.
                break;
            }
            off += n;
            done += n;
            progress.update(done, total);
        }
    }
    Ok(CopyStats {
        size,
        data_bytes: done,
        extents: extents.len() as u64,
        elapsed: started.elapsed(),
    })
}

/// Makes `dst` (which must not exist) a reflink of `src`.
pub(crate) fn reflink(src: &Path, dst: &Path) -> Result<()> {
    let input = File::open(src).ctx(|| format!("open {}", src.display()))?;
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .ctx(|| format!("create {}", dst.display()))?;
    if let Err(e) = rustix::fs::ioctl_ficlone(&output, &input) {
        let _ = fs::remove_file(dst);
        return Err(e).ctx(|| format!("reflink {} to {}", src.display(), dst.display()));
    }
    Ok(())
}

/// True when the error means the filesystem cannot reflink.
pub(crate) fn is_reflink_unsupported(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY)
        ),
        _ => false,
    }
}

// f_type's width differs between architectures.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn is_btrfs(path: &Path) -> bool {
    rustix::fs::statfs(path)
        .map(|s| s.f_type as i64 == BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Probes FICLONE in `dir` with two scratch files.
pub(crate) fn reflink_works(dir: &Path) -> bool {
    let id = uuid::Uuid::new_v4();
    let a = dir.join(format!("{TMP_PREFIX}probe-{id}-a"));
    let b = dir.join(format!("{TMP_PREFIX}probe-{id}-b"));
    let ok = fs::write(&a, b"reflink probe").is_ok() && reflink(&a, &b).is_ok();
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    ok
}

/// Bytes allocated on the host for a file, or for everything under a directory.
pub fn allocated_bytes(path: &Path) -> Result<u64> {
    let md = fs::symlink_metadata(path).ctx(|| format!("stat {}", path.display()))?;
    if md.is_dir() {
        let mut sum = 0;
        for e in fs::read_dir(path).ctx(|| format!("read {}", path.display()))? {
            let e = e.ctx(|| format!("read {}", path.display()))?;
            sum += allocated_bytes(&e.path())?;
        }
        Ok(sum)
    } else {
        Ok(md.blocks() * 512)
    }
}

pub(crate) fn pool_usage(root: &Path) -> Result<PoolUsage> {
    let s = rustix::fs::statvfs(root).ctx(|| format!("statvfs {}", root.display()))?;
    let total = s.f_blocks * s.f_frsize;
    let free = s.f_bavail * s.f_frsize;
    let used = (s.f_blocks - s.f_bfree) * s.f_frsize;
    Ok(PoolUsage { total, free, used })
}

pub(crate) fn tmp_name(op: &str, name: &str) -> String {
    format!("{TMP_PREFIX}{op}-{name}")
}

pub(crate) fn is_tmp(name: &str) -> bool {
    name.starts_with(TMP_PREFIX)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync {}", dir.display()))
}

pub(crate) fn fsync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("fsync {}", path.display()))
}

/// Renames `from` to `to`, failing with AlreadyExists rather than replacing `to`.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(Error::AlreadyExists(to.display().to_string())),
        Err(e) => Err(e).ctx(|| format!("rename {} to {}", from.display(), to.display())),
    }
}

/// Atomically swaps two paths (both must exist).
pub(crate) fn rename_exchange(a: &Path, b: &Path) -> Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .ctx(|| format!("exchange {} and {}", a.display(), b.display()))
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).ctx(|| format!("rename {} to {}", from.display(), to.display()))
}

pub(crate) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Records a creation time on a file. Kernel timestamps are too coarse to order snapshots
/// taken in the same millisecond, so the time travels in an xattr.
pub(crate) fn set_created(path: &Path, created: SystemTime) -> Result<()> {
    let v = nanos(created).to_string();
    match rustix::fs::setxattr(
        path,
        CREATED_XATTR,
        v.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    ) {
        Ok(()) => Ok(()),
        // Without user xattrs the mtime has to do.
        Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(e).ctx(|| format!("set creation time on {}", path.display())),
    }
}

pub(crate) fn get_created(path: &Path) -> Result<SystemTime> {
    let mut buf = [0u8; 32];
    if let Ok(n) = rustix::fs::getxattr(path, CREATED_XATTR, &mut buf[..]) {
        if let Some(ns) = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            return Ok(UNIX_EPOCH + Duration::from_nanos(ns));
        }
    }
    let md = fs::metadata(path).ctx(|| format!("stat {}", path.display()))?;
    md.modified().ctx(|| format!("stat {}", path.display()))
}

pub(crate) fn set_xattr(path: &Path, name: &str, value: &str) -> Result<()> {
    rustix::fs::setxattr(
        path,
        name,
        value.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )
    .ctx(|| format!("set {name} on {}", path.display()))
}

pub(crate) fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    let n = rustix::fs::getxattr(path, name, &mut buf[..]).ok()?;
    String::from_utf8(buf[..n].to_vec()).ok()
}

/// A creation time strictly after every time in `existing`, so snapshot order is total.
pub(crate) fn next_created(existing: impl Iterator<Item = SystemTime>) -> SystemTime {
    let now = SystemTime::now();
    match existing.max() {
        Some(last) if last >= now => last + Duration::from_nanos(1),
        _ => now,
    }
}

/// Claims `root` for `driver`: a pool used by one driver must not be opened by another.
pub(crate) fn init_pool(root: &Path, driver: &str, subdirs: &[&str]) -> Result<()> {
    fs::create_dir_all(root).ctx(|| format!("create pool {}", root.display()))?;
    let marker = root.join(DRIVER_MARKER);
    match fs::read_to_string(&marker) {
        Ok(existing) if existing.trim() == driver => {}
        Ok(existing) => {
            return Err(Error::FailedPrecondition(format!(
                "pool {} belongs to the {} driver, not {driver}",
                root.display(),
                existing.trim()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let tmp = root.join(tmp_name("init", "driver"));
            fs::write(&tmp, driver).ctx(|| format!("write {}", tmp.display()))?;
            rename(&tmp, &marker)?;
        }
        Err(e) => return Err(e).ctx(|| format!("read {}", marker.display())),
    }
    for d in subdirs {
        let p = root.join(d);
        fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
    }
    Ok(())
}

/// Removes `.tmp-*` entries (files or plain directory trees) from `dir`, recording them
/// relative to `root`.
pub(crate) fn remove_tmp_entries(
    root: &Path,
    dir: &Path,
    report: &mut RecoveryReport,
    mut remove_dir: impl FnMut(&Path) -> Result<()>,
) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("read {}", dir.display())),
    };
    for e in rd {
        let e = e.ctx(|| format!("read {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_tmp(name) {
            continue;
        }
        let p = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            remove_dir(&p)?;
        } else {
            fs::remove_file(&p).ctx(|| format!("remove {}", p.display()))?;
        }
        report.removed.push(rel(root, &p));
    }
    Ok(())
}

pub(crate) fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Names of non-temporary entries in `dir` with the given suffix (suffix stripped).
pub(crate) fn list_names(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx(|| format!("read {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.ctx(|| format!("read {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_tmp(name) || name.starts_with('.') {
            continue;
        }
        if let Some(stem) = name.strip_suffix(suffix) {
            out.push(stem.to_string());
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Creates a sparse file of `size` bytes at `path` (which must not exist) and fsyncs it.
pub(crate) fn create_sparse(path: &Path, size: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("create {}", path.display()))?;
    f.set_len(size)
        .ctx(|| format!("size {} to {size}", path.display()))?;
    f.sync_all().ctx(|| format!("fsync {}", path.display()))
}

pub(crate) fn grow(path: &Path, size: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .ctx(|| format!("open {}", path.display()))?;
    let cur = f
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    if size > cur {
        f.set_len(size)
            .ctx(|| format!("grow {} to {size}", path.display()))?;
    }
    Ok(())
}

pub(crate) fn file_len(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .ctx(|| format!("stat {}", path.display()))?
        .len())
}

pub(crate) fn remove_file_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(|| format!("remove {}", p.display())),
    }
}

/// Removes `dir` if it is empty; other errors than "not empty" and "missing" are reported.
pub(crate) fn remove_dir_if_empty(dir: &Path) -> Result<()> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTEMPTY)
                || e.raw_os_error() == Some(libc::EEXIST) =>
        {
            Ok(())
        }
        Err(e) => Err(e).ctx(|| format!("remove {}", dir.display())),
    }
}
