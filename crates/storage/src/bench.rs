//! Benchmarks behind `cargo bench -p storage`, callable from code as [`run`].
//!
//! (a) Sparse copy throughput against `cp --sparse=always` on the same 20 GiB file holding
//!     300 MiB of data, interleaved in one run on the pools directory's own filesystem.
//! (b) Snapshot and clone times on btrfs and reflink for 1 GiB and 32 GiB volumes written at
//!     the same density, to show they do not grow with volume size.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::{allocated_bytes, open_driver, sparse_copy, NoProgress, SnapName, VolName};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Sparse copy against cp.
#[derive(Debug, Clone)]
pub struct CopyBench {
    pub size: u64,
    pub source_allocated: u64,
    pub ours_allocated: u64,
    pub cp_allocated: u64,
    pub ours: Vec<Duration>,
    pub cp: Vec<Duration>,
}

impl CopyBench {
    /// Our throughput relative to cp's (median times); >= 0.9 is the goal.
    pub fn relative_throughput(&self) -> f64 {
        median(&self.cp).as_secs_f64() / median(&self.ours).as_secs_f64()
    }
}

/// Snapshot and clone times for one driver and volume size.
#[derive(Debug, Clone)]
pub struct O1Bench {
    pub driver: &'static str,
    /// "same data": 128 MiB in the first GiB whatever the size; "same density": 1 MiB of
    /// every 8 MiB over the whole volume, so data and extent count grow with size.
    pub layout: &'static str,
    pub volume_size: u64,
    pub data: u64,
    pub snapshot: Duration,
    pub clone: Duration,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub copy: CopyBench,
    pub o1: Vec<O1Bench>,
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.copy;
        writeln!(
            f,
            "sparse copy of a {} GiB file with {} MiB allocated:",
            c.size / GIB,
            c.source_allocated / MIB
        )?;
        writeln!(
            f,
            "  ours                 median {:8.1} ms  runs {:?}  allocated {:.3}x",
            ms(median(&c.ours)),
            c.ours.iter().map(|d| ms(*d).round()).collect::<Vec<_>>(),
            c.ours_allocated as f64 / c.source_allocated as f64
        )?;
        writeln!(
            f,
            "  cp --sparse=always   median {:8.1} ms  runs {:?}  allocated {:.3}x",
            ms(median(&c.cp)),
            c.cp.iter().map(|d| ms(*d).round()).collect::<Vec<_>>(),
            c.cp_allocated as f64 / c.source_allocated as f64
        )?;
        writeln!(
            f,
            "  throughput ours/cp   {:.2}x (goal >= 0.9)",
            c.relative_throughput()
        )?;
        writeln!(f, "snapshot and clone times (median of runs):")?;
        for o in &self.o1 {
            writeln!(
                f,
                "  {:8} {:12} {:3} GiB volume ({:5} MiB data)  snapshot {:7.2} ms  clone {:7.2} ms",
                o.driver,
                o.layout,
                o.volume_size / GIB,
                o.data / MIB,
                ms(o.snapshot),
                ms(o.clone)
            )?;
        }
        for (driver, layout) in [
            ("btrfs", "same data"),
            ("btrfs", "same density"),
            ("reflink", "same data"),
            ("reflink", "same density"),
        ] {
            let rows: Vec<&O1Bench> = self
                .o1
                .iter()
                .filter(|o| o.driver == driver && o.layout == layout)
                .collect();
            if let [small, big] = rows[..] {
                writeln!(
                    f,
                    "  {driver:8} {layout:12} 32 GiB / 1 GiB: snapshot {:.2}x  clone {:.2}x (goal <= 1.5)",
                    ms(big.snapshot) / ms(small.snapshot),
                    ms(big.clone) / ms(small.clone)
                )?;
            }
        }
        Ok(())
    }
}

fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Writes `chunk` bytes of non-zero data every `stride` bytes of a file, up to `size`.
fn fill(path: &Path, size: u64, chunk: u64, stride: u64) -> Result<u64> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .ctx(|| format!("open {}", path.display()))?;
    let buf: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8 + 1).collect();
    let mut off = 0;
    let mut written = 0;
    while off + chunk <= size {
        f.write_all_at(&buf, off)
            .ctx(|| format!("write {}", path.display()))?;
        off += stride;
        written += chunk;
    }
    f.sync_all().ctx(|| format!("fsync {}", path.display()))?;
    Ok(written)
}

fn copy_bench(dir: &Path) -> Result<CopyBench> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    let src = dir.join("src.img");
    let size = 20 * GIB;
    fs::File::create(&src)
        .and_then(|f| f.set_len(size))
        .ctx(|| format!("create {}", src.display()))?;
    // 300 MiB in 60 extents of 5 MiB.
    fill(&src, size, 5 * MIB, size / 60 / MIB * MIB)?;
    let source_allocated = allocated_bytes(&src)?;
    let (ours_dst, cp_dst) = (dir.join("ours.img"), dir.join("cp.img"));
    let (mut ours, mut cp) = (Vec::new(), Vec::new());
    let (mut ours_allocated, mut cp_allocated) = (0, 0);
    // Round 0 warms the page cache and is not counted.
    for round in 0..7 {
        for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let _ = fs::remove_file(&ours_dst);
            let _ = fs::remove_file(&cp_dst);
            sync();
            let t = Instant::now();
            if which == 0 {
                sparse_copy(&src, &ours_dst, &NoProgress)?;
                if round > 0 {
                    ours.push(t.elapsed());
                }
                ours_allocated = allocated_bytes(&ours_dst)?;
            } else {
                let st = Command::new("cp")
                    .arg("--sparse=always")
                    .arg(&src)
                    .arg(&cp_dst)
                    .status()
                    .ctx(|| "run cp".to_string())?;
                if round > 0 {
                    cp.push(t.elapsed());
                }
                if !st.success() {
                    return Err(Error::Tool {
                        tool: "cp",
                        message: format!("exit {st}"),
                    });
                }
                cp_allocated = allocated_bytes(&cp_dst)?;
            }
        }
    }
    let _ = fs::remove_dir_all(dir);
    Ok(CopyBench {
        size,
        source_allocated,
        ours_allocated,
        cp_allocated,
        ours,
        cp,
    })
}

fn o1_bench(driver: &'static str, root: &Path, gib: u64, layout: &'static str) -> Result<O1Bench> {
    let _ = fs::remove_dir_all(root);
    let d = open_driver(driver, root)?;
    let vol = VolName::new(format!("bench-{gib}g"))?;
    let size = gib * GIB;
    d.create_volume(&vol, size)?;
    let limit = if layout == "same data" { GIB } else { size };
    let data = fill(&d.attachment(&vol)?.path, limit, MIB, 8 * MIB)?;
    let runs = 7;
    let (mut snaps, mut clones) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let s = SnapName::new(format!("s{i}"))?;
        // Flushing first keeps one run's writeback from being billed to the next.
        sync();
        let t = Instant::now();
        d.create_snapshot(&vol, &s)?;
        snaps.push(t.elapsed());
        let c = VolName::new(format!("clone-{gib}g-{i}"))?;
        sync();
        let t = Instant::now();
        d.clone_volume(&c, &vol, size, &NoProgress)?;
        clones.push(t.elapsed());
    }
    for i in 0..runs {
        d.delete_volume(&VolName::new(format!("clone-{gib}g-{i}"))?)?;
        d.delete_snapshot(&vol, &SnapName::new(format!("s{i}"))?)?;
    }
    d.delete_volume(&vol)?;
    let _ = fs::remove_dir_all(root);
    Ok(O1Bench {
        driver,
        layout,
        volume_size: size,
        data,
        snapshot: median(&snaps),
        clone: median(&clones),
    })
}

/// Runs both benchmarks. `pools_dir` is a directory prepared by `scripts/mkpools.sh`
/// (with `btrfs/` and `xfs/` mounted); the copy benchmark runs on `pools_dir`'s own
/// filesystem, where FICLONE is not available so both tools really copy.
pub fn run(pools_dir: &Path) -> Result<BenchReport> {
    let copy = copy_bench(&pools_dir.join("copy-bench"))?;
    let mut o1 = Vec::new();
    for (driver, fs) in [("btrfs", "btrfs"), ("reflink", "xfs")] {
        for layout in ["same data", "same density"] {
            for gib in [1, 32] {
                o1.push(o1_bench(
                    driver,
                    &pools_dir.join(fs).join("o1-bench"),
                    gib,
                    layout,
                )?);
            }
        }
    }
    Ok(BenchReport { copy, o1 })
}
