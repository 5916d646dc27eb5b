//! `storage.k8s.io/v1` StorageClass.

use super::check;
use super::common::ObjectMeta;
use super::Kind;
use crate::error::Cause;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A StorageClass: its fields sit at the top level, not under a spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageClass {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub provisioner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_options: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_volume_expansion: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_binding_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_topologies: Option<Value>,
}

impl Kind for StorageClass {
    fn apply_defaults(&mut self) {
        self.reclaim_policy.get_or_insert_with(|| "Delete".into());
        self.volume_binding_mode
            .get_or_insert_with(|| "Immediate".into());
    }

    fn validate(&self, causes: &mut Vec<Cause>) {
        check::required_str(causes, "provisioner", &self.provisioner);
        check::one_of(
            causes,
            "reclaimPolicy",
            self.reclaim_policy.as_deref(),
            &["Delete", "Retain"],
        );
        check::one_of(
            causes,
            "volumeBindingMode",
            self.volume_binding_mode.as_deref(),
            &["Immediate", "WaitForFirstConsumer"],
        );
    }
}
