//! The VirtualMachineInstance controller: one VMI is one QEMU process. It launches QEMU for a
//! new VMI, keeps the running status in step, and stops QEMU gracefully when the VMI is
//! deleted (the finalizer holds the object until QEMU is gone).

use super::runtime::{set_phase, write_status, LaunchError, VmRuntime, DEFAULT_GRACE};
use super::{vmi_res, FINALIZER};
use crate::events::EventType;
use crate::runtime::{ignore_not_found, update_with, Action, ObjectKey, Reconciler};
use api::registry::Resource;
use api::types::kubevirt::VirtualMachineInstance;
use api::{meta, Error};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub struct VmiReconciler {
    pub rt: Arc<VmRuntime>,
}

/// The uid that seeds a VMI's generated MACs and firmware UUID: its owning VM's, so they stay
/// the same across restarts; a standalone VMI uses its own.
fn identity_uid(vmi: &Value) -> String {
    vmi["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["kind"] == "VirtualMachine"))
        .and_then(|r| r["uid"].as_str())
        .unwrap_or_else(|| meta::uid(vmi))
        .to_string()
}

impl VmiReconciler {
    async fn remove_finalizer(&self, key: &ObjectKey) -> api::Result<()> {
        let store = self.rt.store().clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            update_with(store.as_ref(), vmi_res(), &key, |o| {
                meta::remove_finalizer(o, FINALIZER);
            })
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))
        .and_then(|r| ignore_not_found(r).map(|_| ()))
    }

    async fn sync(&self, key: &ObjectKey) -> api::Result<Action> {
        let store = self.rt.store().clone();
        let Some(obj) = ignore_not_found(store.get(vmi_res(), &key.namespace, &key.name))? else {
            // Gone without our finalizer (force-removed): its QEMU has no owner any more.
            if let Some(vm) = self.rt.live(key) {
                if !vm.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    tracing::warn!(vmi = %key, "VMI vanished; stopping its QEMU");
                    self.rt.kill(&vm).await;
                }
            }
            return Ok(Action::AwaitChange);
        };
        let uid = meta::uid(&obj).to_string();
        let typed: VirtualMachineInstance = api::types::decode(Value::clone(&obj))?.0;
        let live = self.rt.live(key).filter(|v| v.running.is_alive());

        if meta::is_deleting(&obj) {
            if let Some(vm) = &live {
                let grace = typed
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .map(|s| Duration::from_secs(s.max(0) as u64))
                    .unwrap_or(DEFAULT_GRACE);
                self.rt.begin_stop(vm, grace);
                return Ok(Action::Requeue(Duration::from_millis(500)));
            }
            if meta::has_finalizer(&obj, FINALIZER) {
                self.remove_finalizer(key).await?;
            }
            return Ok(Action::AwaitChange);
        }
        if !meta::has_finalizer(&obj, FINALIZER) {
            let (store2, key2) = (store.clone(), key.clone());
            tokio::task::spawn_blocking(move || {
                update_with(store2.as_ref(), vmi_res(), &key2, |o| {
                    meta::add_finalizer(o, FINALIZER);
                })
            })
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
        }

        if let Some(vm) = &live {
            if vm.uid != uid {
                tracing::warn!(vmi = %key, "QEMU belongs to an older VMI of this name; stopping it");
                self.rt.kill(vm).await;
                return Ok(Action::Requeue(Duration::from_millis(500)));
            }
            let fields = self.rt.running_status(vm);
            let ifaces = vm.interfaces.clone();
            let reattached = vm.reattached;
            write_status(store.clone(), key.clone(), move |o| {
                if meta::uid(o) != uid {
                    return;
                }
                set_phase(o, "Running");
                for (k, v) in fields.as_object().into_iter().flatten() {
                    o["status"][k] = v.clone();
                }
                // Interfaces keep what the agent reported about them.
                let old = o["status"]["interfaces"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let list: Vec<Value> = ifaces
                    .iter()
                    .map(|n| {
                        let mut i = old
                            .iter()
                            .find(|i| i["name"] == n.name.as_str())
                            .cloned()
                            .unwrap_or_else(|| json!({}));
                        i["name"] = json!(n.name);
                        i["mac"] = json!(n.mac);
                        i
                    })
                    .collect();
                o["status"]["interfaces"] = json!(list);
                let msg = if reattached {
                    "QEMU is running (re-attached after a daemon restart)"
                } else {
                    "QEMU is running"
                };
                if api::condition(o, "Ready") != Some(true) {
                    api::set_condition(o, "Ready", true, "Running", msg);
                }
                if api::condition(o, "AgentConnected").is_none() {
                    api::set_condition(
                        o,
                        "AgentConnected",
                        false,
                        "GuestAgentNotResponding",
                        "the guest agent has not answered yet",
                    );
                }
            })
            .await?;
            return Ok(Action::AwaitChange);
        }

        let phase = obj["status"]["phase"].as_str().unwrap_or("").to_string();
        match phase.as_str() {
            "Succeeded" | "Failed" => Ok(Action::AwaitChange),
            "Running" => {
                let u = uid.clone();
                let o = write_status(store.clone(), key.clone(), move |o| {
                    if meta::uid(o) != u {
                        return;
                    }
                    set_phase(o, "Failed");
                    api::set_condition(
                        o,
                        "Ready",
                        false,
                        "Crashed",
                        "QEMU is gone: it exited while vmsnap was not running",
                    );
                    api::set_condition(
                        o,
                        "AgentConnected",
                        false,
                        "QemuExited",
                        "QEMU is not running",
                    );
                    if let Some(st) = o["status"].as_object_mut() {
                        st.remove("qemuPid");
                        st.remove("fsFreezeStatus");
                    }
                })
                .await?;
                self.rt.recorder().record(
                    &o,
                    EventType::Warning,
                    "Crashed",
                    "QEMU exited while vmsnap was not running",
                );
                Ok(Action::AwaitChange)
            }
            _ => self.launch(key, &obj, &typed).await,
        }
    }

    async fn launch(
        &self,
        key: &ObjectKey,
        obj: &Value,
        typed: &VirtualMachineInstance,
    ) -> api::Result<Action> {
        let store = self.rt.store().clone();
        let uid = meta::uid(obj).to_string();
        let u = uid.clone();
        write_status(store.clone(), key.clone(), move |o| {
            if meta::uid(o) == u {
                set_phase(o, "Scheduling");
            }
        })
        .await?;
        let result = self.rt.launch(typed, &identity_uid(obj)).await;
        let u = uid.clone();
        match result {
            Ok(vm) => {
                let probe = self.rt.accel_probe().await;
                let msg = format!(
                    "QEMU pid {} started with accelerator {} ({})",
                    vm.pid(),
                    vm.accel,
                    probe.reason
                );
                let o = write_status(store, key.clone(), move |o| {
                    if meta::uid(o) == u {
                        set_phase(o, "Scheduled");
                    }
                })
                .await?;
                self.rt
                    .recorder()
                    .record(&o, EventType::Normal, "Started", &msg);
                // The next pass writes the running status.
                Ok(Action::Requeue(Duration::ZERO))
            }
            Err(LaunchError::Spec(p)) => {
                let transient = p.transient
                    || matches!(p.reason, "FailedPvcNotFound" | "FailedDataVolumeNotFound");
                let (reason, message) = (p.reason, p.message.clone());
                let o = write_status(store, key.clone(), move |o| {
                    if meta::uid(o) != u {
                        return;
                    }
                    set_phase(o, if transient { "Pending" } else { "Failed" });
                    api::set_condition(o, "Ready", false, reason, &message);
                })
                .await?;
                if transient {
                    Ok(Action::Requeue(Duration::from_secs(3)))
                } else {
                    self.rt
                        .recorder()
                        .record(&o, EventType::Warning, p.reason, &p.message);
                    Ok(Action::AwaitChange)
                }
            }
            Err(LaunchError::Qemu(msg)) => {
                let m = msg.clone();
                let o = write_status(store, key.clone(), move |o| {
                    if meta::uid(o) != u {
                        return;
                    }
                    set_phase(o, "Failed");
                    api::set_condition(o, "Ready", false, "FailedCreate", &m);
                })
                .await?;
                self.rt
                    .recorder()
                    .record(&o, EventType::Warning, "FailedCreate", &msg);
                Ok(Action::AwaitChange)
            }
        }
    }
}

impl Reconciler for VmiReconciler {
    fn name(&self) -> &'static str {
        "virtualmachineinstance"
    }
    fn resource(&self) -> &'static Resource {
        vmi_res()
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        Box::pin(self.sync(key))
    }
}
