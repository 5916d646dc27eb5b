//! Connects the API server's `subresources.kubevirt.io` routes to the VM runtime. The engine
//! never sees HTTP; this adapter only forwards.

use apiserver::ext::{ByteStream, VmActions};
use controllers::vm::{actions, VmRuntime};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub struct VmActionsAdapter {
    pub rt: Arc<VmRuntime>,
    pub pools: Arc<controllers::storage::Pools>,
}

/// `seal`: resets a stopped VM's guest identity on its disks (see `controllers::clone::seal`).
async fn seal(a: &VmActionsAdapter, namespace: &str, name: &str) -> api::Result<Value> {
    let vmres = api::registry::by_plural("kubevirt.io", "virtualmachines").expect("registered");
    let vmires =
        api::registry::by_plural("kubevirt.io", "virtualmachineinstances").expect("registered");
    let vm = a.rt.store().get(vmres, namespace, name)?;
    if a.rt.store().get(vmires, namespace, name).is_ok() || a.rt.is_running(namespace, name) {
        return Err(api::Error::precondition(format!(
            "VirtualMachine {name:?} is running; stop it before sealing its disks"
        )));
    }
    let mut done = Vec::new();
    for v in controllers::snapshot::vmsnapshot::vm_volumes(&vm["spec"]) {
        let Some(claim) = v.claim else { continue };
        let att = a.pools.attachment_for_claim(namespace, &claim)?;
        let path = att.path.clone();
        let format = att.format.as_str().to_string();
        let report = tokio::task::spawn_blocking(move || {
            controllers::clone::seal::seal_image(&path, &format)
        })
        .await
        .map_err(|e| api::Error::internal(e.to_string()))??;
        done.push(serde_json::json!({"volume": v.name, "claim": claim, "tool": report.tool, "actions": report.actions}));
    }
    Ok(serde_json::json!({"sealed": done}))
}

impl VmActions for VmActionsAdapter {
    fn action<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        action: &'a str,
        body: Value,
    ) -> BoxFuture<'a, api::Result<Value>> {
        if action == "seal" && resource == "virtualmachines" {
            return Box::pin(seal(self, namespace, name));
        }
        Box::pin(actions::action(
            &self.rt, resource, namespace, name, action, body,
        ))
    }

    fn stream<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        action: &'a str,
    ) -> BoxFuture<'a, api::Result<ByteStream>> {
        Box::pin(actions::stream(&self.rt, resource, namespace, name, action))
    }
}
