//! VirtualMachine and VirtualMachineInstance controllers on the QEMU runtime.
//!
//! [`VmRuntime`] owns the live QEMU processes of this host; [`VmReconciler`] turns a VM's run
//! strategy into a VMI of the same name, and [`VmiReconciler`] runs QEMU for each VMI. The
//! snapshot controller uses [`VmRuntime::freeze`], [`VmRuntime::pause`] and friends; the API
//! server's action adapter calls [`actions::action`] and [`actions::stream`].

pub mod actions;
mod machine;
mod runtime;
pub mod spec;
mod vmi;

pub use machine::{status_flag, VmReconciler};
pub use runtime::{
    node_name, Frozen, RuntimeOptions, VmRuntime, DEFAULT_GRACE, PAUSED_REASON, PROBE_TIMEOUT,
};
pub use spec::{no_volumes, VolumeResolver, GUEST_KERNEL_IMAGE, GUEST_ROOTFS_IMAGE};
pub use virt::{Accel, AccelMode, ExecOutput, FreezeWindow};
pub use vmi::VmiReconciler;

use crate::runtime::Reconciler;
use api::registry::Resource;
use std::sync::Arc;

/// Finalizer on every VMI: it is removed once QEMU has stopped.
pub const FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";

pub(crate) fn vm_res() -> &'static Resource {
    api::registry::by_plural("kubevirt.io", "virtualmachines").expect("registered")
}

pub(crate) fn vmi_res() -> &'static Resource {
    api::registry::by_plural("kubevirt.io", "virtualmachineinstances").expect("registered")
}

/// The VM and VMI reconcilers for `rt`, to register with the controller runtime.
pub fn reconcilers(rt: &Arc<VmRuntime>) -> Vec<Arc<dyn Reconciler>> {
    vec![
        Arc::new(VmReconciler { rt: rt.clone() }),
        Arc::new(VmiReconciler { rt: rt.clone() }),
    ]
}

/// The guest image directory: `$VMSNAP_GUEST_DIR` or `/var/cache/vmsnap/guest`.
pub fn default_guest_dir() -> std::path::PathBuf {
    virt::default_guest_dir()
}

/// Boots the guest image directly and measures boot-to-agent and 20 freeze/thaw round trips
/// (see [`virt::bench`]); prints and returns the report.
pub async fn bench(
    guest_dir: &std::path::Path,
    work_dir: &std::path::Path,
    accel: AccelMode,
) -> api::Result<virt::bench::BenchReport> {
    let accel = virt::accel::probe(accel, PROBE_TIMEOUT).await;
    virt::bench::run_with(guest_dir, work_dir, accel)
        .await
        .map_err(|e| api::Error::internal(e.to_string()))
}
