//! QEMU launcher, QMP and QGA clients, accelerator probe.
//!
//! Everything here talks to real QEMU processes over their own sockets: [`qmp::Qmp`] for the
//! monitor, [`qga::Qga`] for the guest agent. [`launcher::launch`] starts a daemonized QEMU that
//! outlives the calling process, and [`launcher::attach`] finds it again after a restart.

pub mod accel;
pub mod bench;
mod error;
pub mod launcher;
pub mod qga;
pub mod qmp;

pub use accel::{Accel, AccelMode};
pub use error::{Error, Result};
pub use launcher::{attach, launch, Disk, DiskFormat, KernelBoot, Nic, Running, VmSpec};
pub use qga::{ExecOutput, FreezeGuard, FreezeStatus, FreezeWindow, Qga};
pub use qmp::{Qmp, QmpEvent};

use std::path::PathBuf;

/// Directory of the guest image built by `scripts/build-guest.sh`: `$VMSNAP_GUEST_DIR`, or the
/// script's default.
pub fn default_guest_dir() -> PathBuf {
    std::env::var_os("VMSNAP_GUEST_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vmsnap/guest"))
}

/// Kernel command line the guest image expects.
pub const GUEST_CMDLINE: &str = "console=ttyS0 root=/dev/vda rw quiet";

/// Line the guest prints on its serial console once its init has run.
pub const GUEST_READY_LINE: &str = "VMSNAP-GUEST-READY";
