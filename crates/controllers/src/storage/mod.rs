//! Storage controllers: pools, PersistentVolumeClaims, VolumeSnapshots, DataVolumes,
//! StorageProfiles, and the DataVolumes of VirtualMachine `dataVolumeTemplates`.
//!
//! Everything goes through [`Pools`], which maps StorageClasses to drivers and holds the
//! logic; the reconcilers are thin wrappers that run it on blocking threads. Other controllers
//! call the same logic directly (all blocking; run them in `spawn_blocking`):
//! - [`Pools::attachment_for_claim`] / [`Pools::driver_for_claim`]: how QEMU opens a Bound claim.
//! - [`Pools::provision_claim`]: provision and bind a claim now (e.g. a restored claim).
//! - [`Pools::claim_snapshot_support`]: can a claim be snapshotted, with which class.
//! - [`Pools::snapshot_claim`]: create a VolumeSnapshot of a claim and take it now.
//! - [`Pools::rollback_claim`]: roll a claim back in place to one of its snapshots.
//! - [`Pools::ready_snapshot`]: the driver, volume and size behind a ready VolumeSnapshot.

mod admission;
mod datavolume;
pub mod errors;
mod import;
pub mod pools;
mod profile;
pub mod pvc;
pub mod snapshot;
pub mod util;
mod vmtemplates;

pub use datavolume::DataVolumeReconciler;
pub use errors::api_error;
pub use import::receive_upload;
pub use pools::{ClassInfo, CloneStrategy, Pools};
pub use profile::StorageProfileReconciler;
pub use pvc::PvcReconciler;
pub use snapshot::{ContentReconciler, SnapshotSupport, VolumeSnapshotReconciler};
pub use vmtemplates::DataVolumeTemplateReconciler;

use crate::runtime::Runtime;
use std::path::PathBuf;
use std::sync::Arc;
use store::Store;

/// Creates the default pools and classes, recovers every pool, and registers the storage
/// reconcilers. Returns the shared [`Pools`] for other controllers and the upload endpoint.
pub fn start(
    store: Arc<dyn Store>,
    data_dir: PathBuf,
    rt: &mut Runtime,
) -> api::Result<Arc<Pools>> {
    let pools = Pools::new(store, data_dir);
    pools.bootstrap()?;
    // Profiles are computed before the API serves, so clients see them at once and the
    // store is quiet after start.
    for sc in util::list_all(pools.store.as_ref(), util::storage_classes(), None)? {
        let key = crate::runtime::ObjectKey::new("", api::meta::name(&sc));
        if let Err(e) = pools.reconcile_profile(&key) {
            tracing::warn!(class = %key, error = %e, "cannot compute the storage profile");
        }
    }
    rt.register(Arc::new(PvcReconciler {
        pools: pools.clone(),
    }));
    rt.register(Arc::new(VolumeSnapshotReconciler {
        pools: pools.clone(),
    }));
    rt.register(Arc::new(ContentReconciler {
        pools: pools.clone(),
    }));
    rt.register(Arc::new(DataVolumeReconciler {
        pools: pools.clone(),
    }));
    rt.register(Arc::new(StorageProfileReconciler {
        pools: pools.clone(),
    }));
    rt.register(Arc::new(DataVolumeTemplateReconciler {
        pools: pools.clone(),
    }));
    Ok(pools)
}
