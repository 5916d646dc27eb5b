//! Core `v1` kinds: Namespace, PersistentVolumeClaim and Event.

use super::check;
use super::common::{
    keep_null, LabelSelector, ObjectMeta, ObjectReference, ResourceList, TypedLocalObjectReference,
    TypedObjectReference,
};
use super::Kind;
use crate::error::Cause;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];
pub const VOLUME_MODES: &[&str] = &["Filesystem", "Block"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<NamespaceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<Vec<String>>,
}

impl Kind for Namespace {
    fn validate(&self, causes: &mut Vec<Cause>) {
        if let Some(name) = &self.metadata.name {
            if let Some(e) = crate::meta::validate_label_name(name) {
                check::invalid(causes, "metadata.name", e);
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaim {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PersistentVolumeClaimSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// `corev1.PersistentVolumeClaimSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_modes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<VolumeResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<TypedLocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source_ref: Option<TypedObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_attributes_class_name: Option<String>,
}

impl PersistentVolumeClaimSpec {
    /// The requested storage size in bytes, if set and well-formed.
    pub fn storage_request(&self) -> Option<u64> {
        self.resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")?
            .value()
    }
}

/// `corev1.VolumeResourceRequirements`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeResourceRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
}

/// Checks the parts of a claim spec that every embedding (PVC, DataVolume `pvc`/`storage`,
/// snapshot content) shares: enumerations and quantities.
pub(crate) fn validate_claim_parts(
    causes: &mut Vec<Cause>,
    field: &str,
    access_modes: Option<&Vec<String>>,
    volume_mode: Option<&str>,
    resources: Option<&VolumeResourceRequirements>,
) {
    for (i, m) in access_modes.into_iter().flatten().enumerate() {
        check::one_of(
            causes,
            &format!("{field}.accessModes[{i}]"),
            Some(m),
            ACCESS_MODES,
        );
    }
    check::one_of(
        causes,
        &format!("{field}.volumeMode"),
        volume_mode,
        VOLUME_MODES,
    );
    if let Some(r) = resources {
        check::quantities(
            causes,
            &format!("{field}.resources.requests"),
            r.requests.as_ref(),
        );
        check::quantities(
            causes,
            &format!("{field}.resources.limits"),
            r.limits.as_ref(),
        );
    }
}

impl PersistentVolumeClaimSpec {
    pub(crate) fn validate_at(&self, causes: &mut Vec<Cause>, field: &str) {
        validate_claim_parts(
            causes,
            field,
            self.access_modes.as_ref(),
            self.volume_mode.as_deref(),
            self.resources.as_ref(),
        );
    }
}

impl Kind for PersistentVolumeClaim {
    fn validate(&self, causes: &mut Vec<Cause>) {
        let Some(spec) = &self.spec else {
            check::required(causes, "spec");
            return;
        };
        if spec.access_modes.as_ref().is_none_or(Vec::is_empty) {
            causes.push(Cause {
                reason: "FieldValueRequired".into(),
                field: "spec.accessModes".into(),
                message: "Required value: at least 1 access mode is required".into(),
            });
        }
        let has_storage = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some_and(|r| r.contains_key("storage"));
        if !has_storage {
            check::required(causes, "spec.resources[storage]");
        }
        spec.validate_at(causes, "spec");
    }
}

/// `corev1.Event`: its fields sit at the top level, not under a spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub involved_object: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EventSource>,
    #[serde(
        default,
        deserialize_with = "keep_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub first_timestamp: Option<Value>,
    #[serde(
        default,
        deserialize_with = "keep_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_timestamp: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(
        default,
        deserialize_with = "keep_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub event_time: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_instance: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Kind for Event {
    fn validate(&self, causes: &mut Vec<Cause>) {
        if self.involved_object.is_none() {
            check::required(causes, "involvedObject");
        }
        check::one_of(
            causes,
            "type",
            self.type_.as_deref(),
            &["Normal", "Warning"],
        );
        for (field, ts) in [
            ("firstTimestamp", &self.first_timestamp),
            ("lastTimestamp", &self.last_timestamp),
            ("eventTime", &self.event_time),
        ] {
            match ts {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {}
                Some(other) => check::invalid(
                    causes,
                    field,
                    format!("{other} is not an RFC 3339 timestamp"),
                ),
            }
        }
    }
}
