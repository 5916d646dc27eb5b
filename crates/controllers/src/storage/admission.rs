//! Storage rules that need other objects, checked before a write is stored (the API server's
//! admission hook calls [`Pools::admit`]): a claim restored from a snapshot may not be smaller
//! than the snapshot's restore size, a claim may not shrink, and a vmsnap StorageClass must
//! name a known driver and a safe pool directory.

use super::pools::{validate_pool_dir, Pools, PROVISIONER_PREFIX};
use super::pvc::{claim_source, ClaimSource};
use super::util::{self, format_quantity, quantity_value};
use api::registry::Resource;
use api::{meta, Cause, Error};
use serde_json::Value;

impl Pools {
    /// Checks a create (`old` None) or update of `resource`. Status writes are not checked.
    pub fn admit(
        &self,
        resource: &Resource,
        subresource: Option<&str>,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> api::Result<()> {
        let Some(obj) = object else {
            return Ok(());
        };
        if subresource.is_some() {
            return Ok(());
        }
        let mut causes = Vec::new();
        match (resource.group, resource.kind) {
            ("", "PersistentVolumeClaim") => self.admit_claim(obj, old, &mut causes),
            ("storage.k8s.io", "StorageClass") => admit_class(obj, &mut causes),
            _ => {}
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(
                Error::invalid(resource.kind, meta::name(obj), causes).with_subject(
                    resource.group,
                    resource.kind,
                    meta::name(obj),
                ),
            )
        }
    }

    fn admit_claim(&self, pvc: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
        let field = "spec.resources.requests.storage";
        let Some(size) = quantity_value(&pvc["spec"]["resources"]["requests"]["storage"]) else {
            return;
        };
        match old {
            None => {
                if let Ok(Some(ClaimSource::Snapshot { namespace, name })) = claim_source(pvc) {
                    let vs = self
                        .store
                        .get(util::volume_snapshots(), &namespace, &name)
                        .ok();
                    let restore = vs
                        .as_ref()
                        .and_then(|v| quantity_value(&v["status"]["restoreSize"]));
                    if let Some(restore) = restore {
                        if size < restore {
                            causes.push(Cause::invalid(
                                field,
                                format!(
                                    "Invalid value: {:?}: must be at least the restore size {} of volumesnapshot {namespace}/{name}",
                                    format_quantity(size),
                                    format_quantity(restore)
                                ),
                            ));
                        }
                    }
                }
            }
            Some(old) => {
                let capacity = quantity_value(&old["status"]["capacity"]["storage"])
                    .or_else(|| quantity_value(&old["spec"]["resources"]["requests"]["storage"]));
                if let Some(cap) = capacity {
                    if size < cap {
                        causes.push(Cause::invalid(
                            field,
                            format!(
                                "Forbidden: field can not be less than status.capacity ({})",
                                format_quantity(cap)
                            ),
                        ));
                    }
                }
            }
        }
    }
}

fn admit_class(sc: &Value, causes: &mut Vec<Cause>) {
    let Some(driver) = sc["provisioner"]
        .as_str()
        .and_then(|p| p.strip_prefix(PROVISIONER_PREFIX))
    else {
        return;
    };
    if !storage::DRIVERS.contains(&driver) {
        causes.push(Cause::invalid(
            "provisioner",
            format!(
                "Unsupported value: {driver:?}: vmsnap drivers are {}",
                storage::DRIVERS.join(", ")
            ),
        ));
    }
    if let Some(p) = sc["parameters"]["pool"].as_str() {
        if let Err(e) = validate_pool_dir(p) {
            causes.push(Cause::invalid("parameters.pool", e.message));
        }
    }
}
