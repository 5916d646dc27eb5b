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
