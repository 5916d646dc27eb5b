//! `dataVolumeTemplates` of a VirtualMachine: each becomes a DataVolume owned by the VM, as
//! KubeVirt's VM controller does. An existing DataVolume of the same name is left as it is.

use super::pools::Pools;
use super::util;
use crate::runtime::{ignore_not_found, map_to_owner, Action, Mapper, ObjectKey, Reconciler};
use api::registry::Resource;
use api::{meta, ErrorKind};
use futures::future::BoxFuture;
use serde_json::json;
use std::sync::Arc;

pub struct DataVolumeTemplateReconciler {
    pub pools: Arc<Pools>,
}

impl Reconciler for DataVolumeTemplateReconciler {
    fn name(&self) -> &'static str {
        "datavolumetemplates"
    }
    fn resource(&self) -> &'static Resource {
        util::vms()
    }
    fn watches(&self) -> Vec<(&'static Resource, Mapper)> {
        vec![(util::data_volumes(), map_to_owner("VirtualMachine"))]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        util::blocking_pass(
            &self.pools,
            key,
            "datavolumetemplates",
            Pools::reconcile_templates,
        )
    }
}

impl Pools {
    fn reconcile_templates(&self, key: &ObjectKey) -> api::Result<Action> {
        let store = self.store.as_ref();
        let Some(vm) = ignore_not_found(store.get(util::vms(), &key.namespace, &key.name))? else {
            return Ok(Action::AwaitChange);
        };
        if meta::is_deleting(&vm) {
            return Ok(Action::AwaitChange);
        }
        let res = util::data_volumes();
        for t in vm["spec"]["dataVolumeTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(name) = t["metadata"]["name"].as_str() else {
                continue;
            };
            if ignore_not_found(store.get(res, &key.namespace, name))?.is_some() {
                continue;
            }
            let mut md = t["metadata"].clone();
            if let Some(m) = md.as_object_mut() {
                m.remove("creationTimestamp");
                m.insert("namespace".into(), json!(key.namespace));
            }
            let mut dv = json!({
                "apiVersion": "cdi.kubevirt.io/v1beta1",
                "kind": "DataVolume",
                "metadata": md,
                "spec": t["spec"],
            });
            meta::set_owner(&mut dv, &vm);
            let created = api::admit(res, dv, api::FieldValidation::Ignore)
                .and_then(|a| store.create(res, a.object));
            match created {
                Ok(_) => self.normal(
                    &vm,
                    "SuccessfulDataVolumeCreate",
                    &format!("Created DataVolume {name}"),
                ),
                Err(e) if e.is(ErrorKind::AlreadyExists) => {}
                Err(e) => self.warn(
                    &vm,
                    "FailedDataVolumeCreate",
                    &format!("cannot create DataVolume {name}: {e}"),
                ),
            }
        }
        Ok(Action::AwaitChange)
    }
}
