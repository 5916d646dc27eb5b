//! Boot-to-agent time and freeze/thaw round trips on the real guest image.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::accel::Accel;
use crate::error::{Error, Result};
use crate::launcher::{launch, Disk, DiskFormat, KernelBoot, Nic, VmSpec};

/// Freeze/thaw round trips measured per run.
pub const FREEZES: usize = 20;

/// Figures of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub accel: Accel,
    /// From `launch` to the first answered guest-ping.
    pub boot_to_agent: Duration,
    /// From `launch` to the ready line on the serial console.
    pub boot_to_ready_line: Option<Duration>,
    /// Freeze command sent to thaw answered, one per round trip.
    pub round_trips: Vec<Duration>,
    pub freeze_only: Vec<Duration>,
    pub thaw_only: Vec<Duration>,
    /// A lone guest-ping, for comparison with the agent's own cost.
    pub ping: Vec<Duration>,
}

impl BenchReport {
    pub fn round_trip_median(&self) -> Duration {
        percentile(&self.round_trips, 50)
    }

    pub fn round_trip_p95(&self) -> Duration {
        percentile(&self.round_trips, 95)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        writeln!(f, "accelerator:              {}", self.accel)?;
        writeln!(f, "boot to agent:            {}", ms(self.boot_to_agent))?;
        if let Some(d) = self.boot_to_ready_line {
            writeln!(f, "boot to ready line:       {}", ms(d))?;
        }
        let n = self.round_trips.len();
        writeln!(
            f,
            "freeze+thaw round trip:   median {}, p95 {} (n={n})",
            ms(percentile(&self.round_trips, 50)),
            ms(percentile(&self.round_trips, 95))
        )?;
        writeln!(
            f,
            "  freeze alone:           median {}, p95 {}",
            ms(percentile(&self.freeze_only, 50)),
            ms(percentile(&self.freeze_only, 95))
        )?;
        writeln!(
            f,
            "  thaw alone:             median {}, p95 {}",
            ms(percentile(&self.thaw_only, 50)),
            ms(percentile(&self.thaw_only, 95))
        )?;
        write!(
            f,
            "guest-ping:               median {}, p95 {}",
            ms(percentile(&self.ping, 50)),
            ms(percentile(&self.ping, 95))
        )
    }
}

/// Nearest-rank percentile; zero for no samples.
pub fn percentile(samples: &[Duration], pct: usize) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut s = samples.to_vec();
    s.sort();
    let rank = (pct * s.len()).div_ceil(100).clamp(1, s.len());
    s[rank - 1]
}

/// Copies `guest_dir/rootfs.img` into `work_dir`, boots it under `accel`, and measures
/// boot-to-agent and [`FREEZES`] freeze/thaw round trips. Prints and returns the report.
pub async fn run(guest_dir: &Path, work_dir: &Path) -> Result<BenchReport> {
    run_with(guest_dir, work_dir, Accel::Tcg).await
}

/// [`run`] with a chosen accelerator.
pub async fn run_with(guest_dir: &Path, work_dir: &Path, accel: Accel) -> Result<BenchReport> {
    let rootfs = guest_dir.join("rootfs.img");
    if !rootfs.is_file() {
        return Err(Error::InvalidSpec(format!(
            "no guest image at {}: run scripts/build-guest.sh",
            rootfs.display()
        )));
    }
    std::fs::create_dir_all(work_dir)
        .map_err(|e| Error::io(format!("cannot create {}", work_dir.display()), e))?;
    let disk = work_dir.join("bench-root.img");
    copy_sparse(&rootfs, &disk)?;
    let run_dir = work_dir.join("run");
    let spec = VmSpec {
        name: "bench".into(),
        cpus: 1,
        memory_mib: 512,
        disks: vec![Disk {
            path: disk,
            format: DiskFormat::Raw,
            readonly: false,
            serial: None,
        }],
        nics: vec![Nic {
            mac: "52:54:00:be:0c:01".into(),
        }],
        smbios_serial: Some("bench".into()),
        firmware_uuid: None,
        kernel: Some(KernelBoot::guest(guest_dir)),
        accel,
        agent: true,
    };
    let vm = launch(&spec, &run_dir).await?;
    let result = measure(&vm, accel).await;
    if let Err(e) = vm.shutdown(Duration::from_secs(10)).await {
        tracing::warn!("bench VM shutdown: {e}");
    }
    let report = result?;
    println!("{report}");
    Ok(report)
}

async fn measure(vm: &crate::launcher::Running, accel: Accel) -> Result<BenchReport> {
    let launched = vm.started();
    let qga = vm.qga().with_deadline(Duration::from_secs(10));
    let log = vm.serial_log();
    let (agent, line) = tokio::join!(
        async {
            qga.wait_ready(Duration::from_secs(60))
                .await
                .map(|_| launched.elapsed())
        },
        wait_ready_line(&log, Duration::from_secs(60))
    );
    let boot_to_agent = agent?;
    let boot_to_ready_line = line.map(|at| at.duration_since(launched));

    let mut ping = Vec::new();
    for _ in 0..FREEZES {
        let t = Instant::now();
        qga.ping().await?;
        ping.push(t.elapsed());
    }
    let (mut round_trips, mut freeze_only, mut thaw_only) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..FREEZES {
        let guard = qga.fsfreeze_freeze().await?;
        let w = guard.thaw().await?;
        round_trips.push(w.window);
        freeze_only.push(w.freeze_took);
        thaw_only.push(w.thaw_took);
    }
    Ok(BenchReport {
        accel,
        boot_to_agent,
        boot_to_ready_line,
        round_trips,
        freeze_only,
        thaw_only,
        ping,
    })
}

/// Polls the serial log for the ready line; returns roughly when it appeared.
async fn wait_ready_line(log: &Path, timeout: Duration) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::fs::read_to_string(log)
            .map(|s| s.contains(crate::GUEST_READY_LINE))
            .unwrap_or(false)
        {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// `cp --reflink=auto --sparse=always`: cheap on btrfs/xfs, sparse elsewhere.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<PathBuf> {
    let status = std::process::Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| Error::io("cannot run cp", e))?;
    if !status.success() {
        return Err(Error::Guest(format!(
            "copying {} to {} failed: {status}",
            from.display(),
            to.display()
        )));
    }
    Ok(to.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50), Duration::from_millis(10));
        assert_eq!(percentile(&s, 95), Duration::from_millis(19));
        assert_eq!(percentile(&[], 95), Duration::ZERO);
    }
}
