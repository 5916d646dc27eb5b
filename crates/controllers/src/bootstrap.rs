//! Objects every vmsnap installation has, created on first start and left alone afterwards.

use api::registry::by_plural;
use api::ErrorKind;
use serde_json::{json, Value};
use store::Store;

fn ensure(store: &dyn Store, group: &str, plural: &str, obj: Value) -> api::Result<()> {
    let res = by_plural(group, plural).expect("bootstrap kinds are registered");
    let obj = api::admit(res, obj, api::FieldValidation::Strict)?.object;
    match store.create(res, obj) {
        Ok(_) => Ok(()),
        Err(e) if e.is(ErrorKind::AlreadyExists) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Namespaces `default`, `kube-system` and `kubevirt`, and the `KubeVirt` object
/// `kubevirt/kubevirt` that holds feature gates, as a KubeVirt install has.
pub fn bootstrap(store: &dyn Store) -> api::Result<()> {
    for ns in ["default", "kube-system", "kubevirt"] {
        ensure(
            store,
            "",
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )?;
    }
    ensure(
        store,
        "kubevirt.io",
        "kubevirts",
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "KubeVirt",
            "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
            "spec": {"configuration": {"developerConfiguration": {"featureGates": ["Snapshot", "VMExport"]}}}
        }),
    )
}
