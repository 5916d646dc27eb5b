//! Accelerator choice. `/dev/kvm` existing is not enough: on some hosts a KVM guest spins at
//! 100% system time without ever printing anything. Firmware alone runs fine there, so the probe
//! boots a real Linux kernel under KVM and requires it to reach its final panic ("no root
//! filesystem") and exit within the timeout; otherwise TCG is used.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

/// Accelerator that a VM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the user asked for (`--accel kvm|tcg|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelMode {
    Kvm,
    Tcg,
    #[default]
    Auto,
}

/// An accelerator mode that is not kvm, tcg or auto.
#[derive(Debug, thiserror::Error)]
#[error("unknown accelerator {0:?}: expected kvm, tcg or auto")]
pub struct ParseAccelModeError(String);

impl std::str::FromStr for AccelMode {
    type Err = ParseAccelModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "kvm" => Ok(AccelMode::Kvm),
            "tcg" => Ok(AccelMode::Tcg),
            "auto" => Ok(AccelMode::Auto),
            _ => Err(ParseAccelModeError(s.to_string())),
        }
    }
}

impl std::fmt::Display for AccelMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccelMode::Kvm => "kvm",
            AccelMode::Tcg => "tcg",
            AccelMode::Auto => "auto",
        })
    }
}

/// A reasonable probe timeout: a KVM guest reaches its panic in about a second.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Outcome of a probe, with the reason for status messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub accel: Accel,
    pub reason: String,
}

static AUTO: OnceCell<Probe> = OnceCell::const_new();

/// Chooses the accelerator. `Kvm` and `Tcg` are taken as given; `Auto` probes KVM once per
/// process (with the guest kernel from [`crate::default_guest_dir`]) and caches the answer.
pub async fn probe(mode: AccelMode, timeout: Duration) -> Accel {
    probe_detailed(mode, timeout).await.accel
}

/// [`probe`] with the reason for the choice.
pub async fn probe_detailed(mode: AccelMode, timeout: Duration) -> Probe {
    match mode {
        AccelMode::Kvm => Probe {
            accel: Accel::Kvm,
            reason: "KVM requested".into(),
        },
        AccelMode::Tcg => Probe {
            accel: Accel::Tcg,
            reason: "TCG requested".into(),
        },
        AccelMode::Auto => AUTO
            .get_or_init(|| async {
                let kernel = crate::default_guest_dir().join("vmlinuz");
                let p = probe_kvm(Some(&kernel), timeout).await;
                tracing::info!(accel = %p.accel, "accelerator probe: {}", p.reason);
                p
            })
            .await
            .clone(),
    }
}

/// Probes KVM without caching: boots `kernel` under KVM and waits for it to finish booting (it
/// panics for want of a root filesystem, and QEMU exits with `-no-reboot`).
pub async fn probe_kvm(kernel: Option<&Path>, timeout: Duration) -> Probe {
    let tcg = |reason: String| Probe {
        accel: Accel::Tcg,
        reason,
    };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return tcg(format!("/dev/kvm is not usable: {e}"));
    }
    let Some(kernel) = kernel.filter(|k| k.is_file()) else {
        return tcg("no probe kernel to test KVM with (build the guest image)".into());
    };
    let dir = probe_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return tcg(format!("cannot create {}: {e}", dir.display()));
    }
    let serial = dir.join("serial.log");
    let result = run_probe(kernel, &serial, timeout).await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(took) => Probe {
            accel: Accel::Kvm,
            reason: format!("a KVM probe guest booted in {} ms", took.as_millis()),
        },
        Err(why) => tcg(why),
    }
}

async fn run_probe(kernel: &Path, serial: &Path, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = tokio::process::Command::new(crate::launcher::QEMU)
        .args(["-machine", "pc", "-accel", "kvm"])
        .args(crate::launcher::cpu_args(Accel::Kvm))
        .args(["-m", "256", "-smp", "1"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", crate::launcher::QEMU))?;
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let log = std::fs::read_to_string(serial).unwrap_or_default();
    match waited {
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "a KVM probe guest did not finish booting within {} ms ({} bytes of console output)",
                timeout.as_millis(),
                log.len()
            ))
        }
        Ok(Err(e)) => Err(format!("waiting for the KVM probe failed: {e}")),
        Ok(Ok(_status)) => {
            if log.contains("Kernel panic") || log.contains("VFS:") {
                Ok(start.elapsed())
            } else {
                let mut err = String::new();
                if let Some(mut se) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = se.read_to_string(&mut err).await;
                }
                Err(format!(
                    "a KVM probe guest exited without booting: {}",
                    err.trim()
                ))
            }
        }
    }
}

fn probe_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "vmsnap-kvm-probe-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("KVM".parse::<AccelMode>().ok(), Some(AccelMode::Kvm));
        assert_eq!("auto".parse::<AccelMode>().ok(), Some(AccelMode::Auto));
        assert!("xen".parse::<AccelMode>().is_err());
    }
}
