//! The snapshot traits implemented over vmsnap's own VM runtime and storage pools.

use super::*;
use crate::storage::errors::StorageResultExt;
use crate::storage::pools::Pools;
use crate::storage::pvc::{DRIVER_ANNOTATION, POOL_ANNOTATION};
use crate::storage::util;
use crate::vm::VmRuntime;
use api::{meta, Error, ErrorKind};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};
use storage::SnapName;

pub struct VmGuest(pub Arc<VmRuntime>);

struct Thaw(crate::vm::Frozen);
impl Quiesce for Thaw {
    fn end(self: Box<Self>) -> BoxFuture<'static, api::Result<Duration>> {
        Box::pin(async move {
            let w = self.0.thaw().await?;
            tracing::debug!(window = ?w.window, freeze = ?w.freeze_took, thaw = ?w.thaw_took, filesystems = w.filesystems, "guest thawed");
            Ok(w.window)
        })
    }
}

struct Resume {
    rt: Arc<VmRuntime>,
    ns: String,
    vm: String,
    since: Instant,
}
impl Quiesce for Resume {
    fn end(self: Box<Self>) -> BoxFuture<'static, api::Result<Duration>> {
        Box::pin(async move {
            self.rt.resume(&self.ns, &self.vm).await?;
            Ok(self.since.elapsed())
        })
    }
}
impl Drop for Resume {
    fn drop(&mut self) {
        // `end` consumed by value runs first; this only matters when the task is dropped
        // mid-quiesce, and resuming twice is harmless.
        let (rt, ns, vm) = (self.rt.clone(), self.ns.clone(), self.vm.clone());
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = rt.resume(&ns, &vm).await;
            });
        }
    }
}

fn vmi_res() -> &'static api::registry::Resource {
    api::registry::by_plural("kubevirt.io", "virtualmachineinstances").expect("registered")
}

impl GuestControl for VmGuest {
    fn state<'a>(&'a self, namespace: &'a str, vm: &'a str) -> BoxFuture<'a, GuestState> {
        Box::pin(async move {
            if !self.0.is_running(namespace, vm) {
                return GuestState::Stopped;
            }
            let paused = self
                .0
                .store()
                .get(vmi_res(), namespace, vm)
                .map(|v| api::condition(&v, "Paused") == Some(true))
                .unwrap_or(false);
            let agent = self.0.agent_connected(namespace, vm).await;
            GuestState::Running { agent, paused }
        })
    }
    fn freeze<'a>(
        &'a self,
        namespace: &'a str,
        vm: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, api::Result<Box<dyn Quiesce>>> {
        Box::pin(async move {
            let f = self.0.freeze(namespace, vm, timeout).await?;
            Ok(Box::new(Thaw(f)) as Box<dyn Quiesce>)
        })
    }
    fn pause<'a>(
        &'a self,
        namespace: &'a str,
        vm: &'a str,
    ) -> BoxFuture<'a, api::Result<Box<dyn Quiesce>>> {
        Box::pin(async move {
            let since = Instant::now();
            self.0.pause(namespace, vm).await?;
            Ok(Box::new(Resume {
                rt: self.0.clone(),
                ns: namespace.into(),
                vm: vm.into(),
                since,
            }) as Box<dyn Quiesce>)
        })
    }
    fn thaw<'a>(&'a self, namespace: &'a str, vm: &'a str) -> BoxFuture<'a, api::Result<()>> {
        Box::pin(async move {
            if !self.0.is_running(namespace, vm) {
                return Ok(());
            }
            self.0.thaw(namespace, vm).await
        })
    }
    fn stop<'a>(&'a self, namespace: &'a str, vm: &'a str) -> BoxFuture<'a, api::Result<()>> {
        Box::pin(async move {
            match crate::vm::actions::action(
                &self.0,
                "virtualmachines",
                namespace,
                vm,
                "stop",
                json!({}),
            )
            .await
            {
                Ok(_) => Ok(()),
                // Already stopping or stopped: nothing to do.
                Err(e) if e.is(ErrorKind::Conflict) || e.is(ErrorKind::FailedPrecondition) => {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
    }
}

pub struct PoolBackend(pub Arc<Pools>);

fn vsc_name(handle: &str) -> String {
    format!("snapcontent-{handle}")
}

impl SnapshotBackend for PoolBackend {
    fn eligibility(&self, namespace: &str, claim: &str) -> api::Result<Eligibility> {
        match self.0.claim_snapshot_support(namespace, claim) {
            Ok(s) => Ok(match (s.reason, s.snapshot_class) {
                (None, Some(class)) => Eligibility::Yes {
                    class,
                    driver: s.provisioner,
                    restorable: s.caps.restore_from_snapshot,
                },
                (Some(reason), _) => Eligibility::No { reason },
                (None, None) => Eligibility::No {
                    reason: format!(
                        "storage class {} has no VolumeSnapshotClass",
                        s.storage_class
                    ),
                },
            }),
            Err(e) if e.is(ErrorKind::NotFound) || e.is(ErrorKind::FailedPrecondition) => {
                Ok(Eligibility::No { reason: e.message })
            }
            Err(e) => Err(e),
        }
    }

    fn prepare(&self, namespace: &str, claim: &str, handle: &str) -> api::Result<()> {
        let (driver, vol) = self.0.driver_for_claim(namespace, claim)?;
        let snap = SnapName::new(handle.to_string()).api()?;
        // A snapshot left by an interrupted attempt predates the coming quiesce: drop it now.
        match driver.delete_snapshot(&vol, &snap) {
            Ok(()) => {}
            Err(e) if e.kind() == storage::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::storage::errors::api_error(e)),
        }
        // Write back what the host caches for the image, so the snapshot inside the window
        // does not have to.
        let a = driver.attachment(&vol).api()?;
        if let Ok(f) = std::fs::File::open(&a.path) {
            let _ = f.sync_data();
        }
        Ok(())
    }

    fn take(&self, namespace: &str, claim: &str, handle: &str) -> api::Result<TakenSnapshot> {
        let (driver, vol) = self.0.driver_for_claim(namespace, claim)?;
        let snap = SnapName::new(handle.to_string()).api()?;
        let info = match driver.create_snapshot(&vol, &snap) {
            Ok(i) => i,
            // Only a crash between prepare and here leaves one: it predates this quiesce.
            Err(e) if e.kind() == storage::ErrorKind::AlreadyExists => {
                driver.delete_snapshot(&vol, &snap).api()?;
                driver.create_snapshot(&vol, &snap).api()?
            }
            Err(e) => return Err(crate::storage::errors::api_error(e)),
        };
        Ok(TakenSnapshot {
            handle: format!("{vol}@{snap}"),
            restore_size: info.size,
        })
    }

    fn discard(&self, namespace: &str, claim: &str, handle: &str) -> api::Result<()> {
        let (driver, vol) = match self.0.driver_for_claim(namespace, claim) {
            Ok(x) => x,
            Err(e) if e.is(ErrorKind::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        let snap = SnapName::new(handle.to_string()).api()?;
        match driver.delete_snapshot(&vol, &snap) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == storage::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::storage::errors::api_error(e)),
        }
    }

    fn discard_volume(&self, class: &str, volume: &str, handle: &str) -> api::Result<()> {
        let class = match self.0.class(class) {
            Ok(c) => c,
            Err(e) if e.is(ErrorKind::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        let vol = storage::VolName::new(volume.to_string()).api()?;
        let snap = SnapName::new(handle.to_string()).api()?;
        match class.driver.delete_snapshot(&vol, &snap) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == storage::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::storage::errors::api_error(e)),
        }
    }

    fn content_name(&self, handle: &str) -> String {
        vsc_name(handle)
    }

    fn publish(
        &self,
        namespace: &str,
        claim: &str,
        handle: &str,
        restore_size: u64,
        owner: &Value,
    ) -> api::Result<()> {
        let store = self.0.store.as_ref();
        let (pvc, class, vol) = self.0.bound_claim(namespace, claim)?;
        let snap = SnapName::new(handle.to_string()).api()?;
        let info = class
            .driver
            .list_snapshots(&vol)
            .api()?
            .into_iter()
            .find(|s| s.name == snap)
            .ok_or_else(|| {
                Error::internal(format!("snapshot {snap} of volume {vol} is missing"))
            })?;
        let vsclass = self
            .0
            .snapshot_class_for(&class.name, &class.provisioner)?
            .map(|c| meta::name(&c).to_string());
        let nanos = info
            .created
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let cname = vsc_name(handle);
        let contents = util::snapshot_contents();
        if api::ErrorKind::NotFound
            == store
                .get(contents, "", &cname)
                .err()
                .map(|e| e.kind)
                .unwrap_or(ErrorKind::Internal)
        {
            let mut c = json!({
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshotContent",
                "metadata": {
                    "name": cname,
                    "annotations": {POOL_ANNOTATION: class.driver.root().to_string_lossy(), DRIVER_ANNOTATION: class.driver.name()},
                    "finalizers": [crate::storage::snapshot::CONTENT_FINALIZER],
                },
                "spec": {
                    "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "name": handle, "namespace": namespace},
                    "deletionPolicy": "Delete",
                    "driver": class.provisioner,
                    "source": {"snapshotHandle": format!("{vol}@{snap}")},
                    "sourceVolumeMode": pvc["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
                },
            });
            if let Some(v) = &vsclass {
                c["spec"]["volumeSnapshotClassName"] = json!(v);
            }
            let c = api::admit(contents, c, api::FieldValidation::Strict)?.object;
            match store.create(contents, c) {
                Ok(_) => {}
                Err(e) if e.is(ErrorKind::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        crate::runtime::update_status_with(
            store,
            contents,
            &crate::ObjectKey::new("", &cname),
            |o| {
                o["status"] = json!({"snapshotHandle": format!("{vol}@{snap}"), "readyToUse": true, "restoreSize": restore_size.max(info.size), "creationTime": nanos});
            },
        )?;
        let vsres = util::volume_snapshots();
        if ignore(store.get(vsres, namespace, handle))?.is_none() {
            let mut vs = json!({
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "metadata": {"name": handle, "namespace": namespace, "labels": {"snapshot.kubevirt.io/source-claim": claim}},
                "spec": {"source": {"volumeSnapshotContentName": cname}},
            });
            if let Some(v) = &vsclass {
                vs["spec"]["volumeSnapshotClassName"] = json!(v);
            }
            meta::set_owner(&mut vs, owner);
            let vs = api::admit(vsres, vs, api::FieldValidation::Strict)?.object;
            match store.create(vsres, vs) {
                Ok(_) => {}
                Err(e) if e.is(ErrorKind::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        // Bind it now rather than waiting for the VolumeSnapshot controller's pass; binding
        // records the snapshot's uid in the content.
        self.0
            .reconcile_volume_snapshot(&crate::ObjectKey::new(namespace, handle))?;
        Ok(())
    }

    fn attachment(
        &self,
        namespace: &str,
        claim: &str,
    ) -> api::Result<(std::path::PathBuf, String)> {
        let a = self.0.attachment_for_claim(namespace, claim)?;
        Ok((a.path, a.format.as_str().to_string()))
    }
}

fn ignore<T>(r: api::Result<T>) -> api::Result<Option<T>> {
    crate::runtime::ignore_not_found(r)
}
