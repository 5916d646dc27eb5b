//! Small helpers shared by the storage reconcilers: resources, quantities, claim references.

use api::meta;
use api::registry::{by_plural, Resource};
use serde_json::Value;
use std::sync::Arc;
use store::Store;

pub fn res(group: &str, plural: &str) -> &'static Resource {
    by_plural(group, plural).unwrap_or_else(|| panic!("{group}/{plural} is registered"))
}

pub fn pvcs() -> &'static Resource {
    res("", "persistentvolumeclaims")
}
pub fn storage_classes() -> &'static Resource {
    res("storage.k8s.io", "storageclasses")
}
pub fn volume_snapshots() -> &'static Resource {
    res("snapshot.storage.k8s.io", "volumesnapshots")
}
pub fn snapshot_contents() -> &'static Resource {
    res("snapshot.storage.k8s.io", "volumesnapshotcontents")
}
pub fn snapshot_classes() -> &'static Resource {
    res("snapshot.storage.k8s.io", "volumesnapshotclasses")
}
pub fn data_volumes() -> &'static Resource {
    res("cdi.kubevirt.io", "datavolumes")
}
pub fn storage_profiles() -> &'static Resource {
    res("cdi.kubevirt.io", "storageprofiles")
}
pub fn vms() -> &'static Resource {
    res("kubevirt.io", "virtualmachines")
}
pub fn vmis() -> &'static Resource {
    res("kubevirt.io", "virtualmachineinstances")
}

/// Lists every object of `res`, in one namespace or all.
pub fn list_all(
    store: &dyn Store,
    res: &'static Resource,
    ns: Option<&str>,
) -> api::Result<Vec<Arc<Value>>> {
    Ok(store
        .list(
            res,
            ns,
            &meta::LabelSelector::default(),
            &meta::FieldSelector::default(),
        )?
        .items)
}

/// Formats bytes the way Kubernetes prints quantities: the largest exact binary unit.
pub fn format_quantity(bytes: u64) -> String {
    const UNITS: &[(&str, u32)] = &[
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    if bytes == 0 {
        return "0".into();
    }
    for (u, shift) in UNITS {
        let unit = 1u64 << shift;
        if bytes.is_multiple_of(unit) {
            return format!("{}{u}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Parses a quantity value found in an object (string or number).
pub fn quantity_value(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => api::types::parse_quantity(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Claim names a VM template, a VMI spec or a DataVolume refers to, with their namespace.
pub fn claims_of_volumes(volumes: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in volumes.as_array().into_iter().flatten() {
        if let Some(c) = v["persistentVolumeClaim"]["claimName"].as_str() {
            out.push(c.to_string());
        }
        if let Some(d) = v["dataVolume"]["name"].as_str() {
            out.push(d.to_string());
        }
    }
    out
}

/// Claims an object of any consuming kind (VM, VMI, DataVolume) refers to, as (namespace, name).
pub fn referenced_claims(obj: &Value) -> Vec<(String, String)> {
    let ns = meta::namespace(obj).to_string();
    let mut names = Vec::new();
    match obj["kind"].as_str() {
        Some("VirtualMachine") => {
            names.extend(claims_of_volumes(
                &obj["spec"]["template"]["spec"]["volumes"],
            ));
            for t in obj["spec"]["dataVolumeTemplates"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(n) = t["metadata"]["name"].as_str() {
                    names.push(n.to_string());
                }
            }
        }
        Some("VirtualMachineInstance") => names.extend(claims_of_volumes(&obj["spec"]["volumes"])),
        Some("DataVolume") => {
            names.push(meta::name(obj).to_string());
            if let Some(p) = obj["spec"]["source"]["pvc"].as_object() {
                let src_ns = p
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(&ns)
                    .to_string();
                if let Some(n) = p.get("name").and_then(Value::as_str) {
                    return names
                        .into_iter()
                        .map(|c| (ns.clone(), c))
                        .chain([(src_ns, n.to_string())])
                        .collect();
                }
            }
        }
        _ => {}
    }
    names.into_iter().map(|c| (ns.clone(), c)).collect()
}

/// Whether a claim is used by a running VM: a VMI that is not finished refers to it, or a VM
/// whose printable status says it runs. A host-assisted copy of such a claim would copy a disk
/// that is being written.
pub fn claim_in_use(store: &dyn Store, ns: &str, claim: &str) -> api::Result<Option<String>> {
    for vmi in list_all(store, vmis(), Some(ns))? {
        let phase = vmi["status"]["phase"].as_str().unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        if claims_of_volumes(&vmi["spec"]["volumes"])
            .iter()
            .any(|c| c == claim)
        {
            return Ok(Some(format!(
                "VirtualMachineInstance {ns}/{}",
                meta::name(&vmi)
            )));
        }
    }
    for vm in list_all(store, vms(), Some(ns))? {
        let status = vm["status"]["printableStatus"].as_str().unwrap_or("");
        if !matches!(status, "Running" | "Starting" | "Migrating" | "Paused") {
            continue;
        }
        if referenced_claims(&vm).iter().any(|(_, c)| c == claim) {
            return Ok(Some(format!(
                "VirtualMachine {ns}/{} ({status})",
                meta::name(&vm)
            )));
        }
    }
    Ok(None)
}

pub fn now() -> String {
    meta::now_rfc3339()
}

/// Runs one blocking reconcile pass of the pools on the blocking pool: the storage passes do
/// file-system work and must not hold an async worker.
pub fn blocking_pass(
    pools: &Arc<super::pools::Pools>,
    key: &crate::runtime::ObjectKey,
    what: &'static str,
    pass: fn(
        &super::pools::Pools,
        &crate::runtime::ObjectKey,
    ) -> api::Result<crate::runtime::Action>,
) -> futures::future::BoxFuture<'static, api::Result<crate::runtime::Action>> {
    let (pools, key) = (pools.clone(), key.clone());
    Box::pin(async move {
        tokio::task::spawn_blocking(move || pass(&pools, &key))
            .await
            .map_err(|e| api::Error::internal(format!("{what} reconcile panicked: {e}")))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(format_quantity(1 << 30), "1Gi");
        assert_eq!(format_quantity(3 << 29), "1536Mi");
        assert_eq!(format_quantity(1000), "1000");
        assert_eq!(format_quantity(0), "0");
    }
}
