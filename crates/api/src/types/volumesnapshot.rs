//! `snapshot.storage.k8s.io/v1`: VolumeSnapshot, VolumeSnapshotContent, VolumeSnapshotClass.

use super::check;
use super::common::{ObjectMeta, ObjectReference};
use super::Kind;
use crate::error::Cause;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const DELETION_POLICIES: &[&str] = &["Delete", "Retain"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshot {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VolumeSnapshotSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    #[serde(default)]
    pub source: VolumeSnapshotSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

impl Kind for VolumeSnapshot {
    fn validate(&self, causes: &mut Vec<Cause>) {
        let Some(spec) = &self.spec else {
            check::required(causes, "spec");
            return;
        };
        let src = &spec.source;
        match (
            &src.persistent_volume_claim_name,
            &src.volume_snapshot_content_name,
        ) {
            (Some(_), Some(_)) => check::invalid(
                causes,
                "spec.source",
                "exactly one of persistentVolumeClaimName and volumeSnapshotContentName must be set, not both",
            ),
            (None, None) => check::invalid(
                causes,
                "spec.source",
                "exactly one of persistentVolumeClaimName and volumeSnapshotContentName must be set",
            ),
            (Some(n), None) => {
                check::dns_subdomain(causes, "spec.source.persistentVolumeClaimName", n)
            }
            (None, Some(n)) => {
                check::dns_subdomain(causes, "spec.source.volumeSnapshotContentName", n)
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContent {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VolumeSnapshotContentSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSpec {
    #[serde(default)]
    pub volume_snapshot_ref: ObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    #[serde(default)]
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    #[serde(default)]
    pub source: VolumeSnapshotContentSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
}

impl Kind for VolumeSnapshotContent {
    fn apply_defaults(&mut self) {
        if let Some(spec) = &mut self.spec {
            spec.deletion_policy.get_or_insert_with(|| "Delete".into());
        }
    }

    fn validate(&self, causes: &mut Vec<Cause>) {
        let Some(spec) = &self.spec else {
            check::required(causes, "spec");
            return;
        };
        check::required_str(causes, "spec.driver", &spec.driver);
        check::one_of(
            causes,
            "spec.deletionPolicy",
            spec.deletion_policy.as_deref(),
            DELETION_POLICIES,
        );
        let r = &spec.volume_snapshot_ref;
        if r.name.as_deref().unwrap_or("").is_empty() {
            check::required(causes, "spec.volumeSnapshotRef.name");
        }
        if r.namespace.as_deref().unwrap_or("").is_empty() {
            check::required(causes, "spec.volumeSnapshotRef.namespace");
        }
        if spec.source.volume_handle.is_some() == spec.source.snapshot_handle.is_some() {
            check::invalid(
                causes,
                "spec.source",
                "exactly one of volumeHandle and snapshotHandle must be set",
            );
        }
        check::one_of(
            causes,
            "spec.sourceVolumeMode",
            spec.source_volume_mode.as_deref(),
            super::core::VOLUME_MODES,
        );
    }
}

/// A VolumeSnapshotClass: its fields sit at the top level, not under a spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
}

impl Kind for VolumeSnapshotClass {
    fn apply_defaults(&mut self) {
        self.deletion_policy.get_or_insert_with(|| "Delete".into());
    }

    fn validate(&self, causes: &mut Vec<Cause>) {
        check::required_str(causes, "driver", &self.driver);
        check::one_of(
            causes,
            "deletionPolicy",
            self.deletion_policy.as_deref(),
            DELETION_POLICIES,
        );
    }
}
