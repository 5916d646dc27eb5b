//! A loop-backed btrfs pool, as Incus creates by default: when the data dir's filesystem has
//! no copy-on-write (ext4), vmsnap keeps its default pool in a sparse image file formatted
//! btrfs and loop-mounted at the pool directory, so snapshots and clones stay O(1) and live
//! snapshots work on any host.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

fn run(cmd: &mut Command, tool: &'static str) -> Result<()> {
    let out = cmd.output().map_err(io(format!("run {tool}")))?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// True when `dir` is itself a mount point.
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Ok(canon) = dir.canonicalize() else {
        return false;
    };
    let want = canon.to_string_lossy();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp.replace("\\040", " ") == want)
}

/// The image file backing the pool at `dir`.
pub fn image_path(dir: &Path) -> PathBuf {
    let mut p = dir.as_os_str().to_owned();
    p.push(".img");
    PathBuf::from(p)
}

/// Makes sure `dir` is a mounted loop-backed btrfs pool of `size` bytes (sparse). Creates and
/// formats the image the first time, remounts it after a reboot, and does nothing when it is
/// already mounted. Returns false when the host cannot do it (not root, no mkfs.btrfs), so the
/// caller can fall back to a plain directory pool.
pub fn ensure_loop_btrfs(dir: &Path, size: u64) -> Result<bool> {
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    if is_mount_point(dir) {
        return Ok(true);
    }
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let have_mkfs = Command::new("mkfs.btrfs")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !have_mkfs {
        return Ok(false);
    }
    let img = image_path(dir);
    if !img.exists() {
        let tmp = img.with_extension("img.tmp");
        let f = std::fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        f.set_len(size)
            .map_err(io(format!("size {}", tmp.display())))?;
        drop(f);
        run(
            Command::new("mkfs.btrfs").arg("-q").arg("-f").arg(&tmp),
            "mkfs.btrfs",
        )?;
        std::fs::rename(&tmp, &img).map_err(io(format!("rename {}", tmp.display())))?;
    }
    run(
        Command::new("mount")
            .args(["-o", "loop,discard"])
            .arg(&img)
            .arg(dir),
        "mount",
    )?;
    Ok(true)
}

/// Unmounts a loop-backed pool (tests, uninstall). The image stays.
pub fn unmount(dir: &Path) -> Result<()> {
    if is_mount_point(dir) {
        run(Command::new("umount").arg("-l").arg(dir), "umount")?;
    }
    Ok(())
}

/// Prepares the default pool directory the way Incus does on hosts without a copy-on-write
/// filesystem: a loop-backed btrfs image sized to the free space (at most 64 GiB). A pool that
/// already holds volumes on the plain filesystem is left as it is. Returns what was done.
pub fn prepare_default_pool(pool_dir: &Path) -> Result<&'static str> {
    let img = image_path(pool_dir);
    if img.exists() {
        return Ok(if ensure_loop_btrfs(pool_dir, 0)? {
            "mounted"
        } else {
            "unavailable"
        });
    }
    let parent = pool_dir.parent().unwrap_or(pool_dir);
    std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    let in_use = std::fs::read_dir(pool_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if in_use || crate::detect_best(parent) != "qcow2" {
        return Ok("native");
    }
    let free = rustix::fs::statvfs(parent)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(0);
    let size = (free / 10 * 9).min(64 << 30);
    if size < (2 << 30) {
        return Ok("native");
    }
    Ok(if ensure_loop_btrfs(pool_dir, size)? {
        "created"
    } else {
        "unavailable"
    })
}
