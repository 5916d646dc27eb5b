//! `cdi.kubevirt.io/v1beta1`: DataVolume and StorageProfile.

use super::check;
use super::common::{
    Empty, LabelSelector, ObjectMeta, TypedLocalObjectReference, TypedObjectReference,
};
use super::core::{validate_claim_parts, PersistentVolumeClaimSpec, VolumeResourceRequirements};
use super::Kind;
use crate::error::Cause;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const CLONE_STRATEGIES: &[&str] = &["copy", "snapshot", "csi-clone"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolume {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<DataVolumeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<DataVolumeSourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PersistentVolumeClaimSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_checkpoint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preallocation: Option<bool>,
}

/// Where a DataVolume's data comes from; exactly one member is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<NamespacedName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blank: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imageio: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vddk: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<NamespacedName>,
}

impl DataVolumeSource {
    /// The names of the members that are set.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let set = [
            ("http", self.http.is_some()),
            ("s3", self.s3.is_some()),
            ("gcs", self.gcs.is_some()),
            ("registry", self.registry.is_some()),
            ("pvc", self.pvc.is_some()),
            ("upload", self.upload.is_some()),
            ("blank", self.blank.is_some()),
            ("imageio", self.imageio.is_some()),
            ("vddk", self.vddk.is_some()),
            ("snapshot", self.snapshot.is_some()),
        ];
        for (name, is_set) in set {
            if is_set {
                out.push(name);
            }
        }
        out
    }
}

/// The source of a clone: a PVC or a VolumeSnapshot, by namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedName {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_config_map: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_extra_headers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_config_map: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSourceRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
}

/// CDI's `StorageSpec`: a claim spec whose omitted parts come from the StorageProfile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
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
}

impl StorageSpec {
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

impl DataVolumeSpec {
    /// Validates the spec as CDI's webhook does, with fields under `field`.
    pub(crate) fn validate_at(&self, causes: &mut Vec<Cause>, field: &str) {
        match (&self.source, &self.source_ref) {
            (Some(_), Some(_)) => check::invalid(
                causes,
                format!("{field}.sourceRef"),
                "source and sourceRef are mutually exclusive; set exactly one",
            ),
            (None, None) => check::invalid(
                causes,
                format!("{field}.source"),
                "a data source is required: set source or sourceRef",
            ),
            (Some(src), None) => {
                let kinds = src.kinds();
                if kinds.len() != 1 {
                    check::invalid(
                        causes,
                        format!("{field}.source"),
                        if kinds.is_empty() {
                            "exactly one source type must be set (blank, pvc, snapshot, http, upload, registry...)".to_string()
                        } else {
                            format!(
                                "exactly one source type must be set, found {}",
                                kinds.join(", ")
                            )
                        },
                    );
                }
                if let Some(p) = &src.pvc {
                    check::dns_subdomain(causes, &format!("{field}.source.pvc.name"), &p.name);
                }
                if let Some(s) = &src.snapshot {
                    check::dns_subdomain(causes, &format!("{field}.source.snapshot.name"), &s.name);
                }
                if let Some(h) = &src.http {
                    check::required_str(causes, &format!("{field}.source.http.url"), &h.url);
                }
                if let Some(r) = &src.registry {
                    if r.url.is_none() == r.image_stream.is_none() {
                        check::invalid(
                            causes,
                            format!("{field}.source.registry"),
                            "exactly one of url and imageStream must be set",
                        );
                    }
                }
            }
            (None, Some(r)) => {
                check::one_of(
                    causes,
                    &format!("{field}.sourceRef.kind"),
                    Some(&r.kind),
                    &["DataSource"],
                );
                check::dns_subdomain(causes, &format!("{field}.sourceRef.name"), &r.name);
            }
        }
        match (&self.pvc, &self.storage) {
            (Some(_), Some(_)) => check::invalid(
                causes,
                format!("{field}.storage"),
                "pvc and storage are mutually exclusive; set exactly one",
            ),
            (None, None) => check::invalid(
                causes,
                format!("{field}.pvc"),
                "missing storage specification: set pvc or storage",
            ),
            (Some(p), None) => p.validate_at(causes, &format!("{field}.pvc")),
            (None, Some(s)) => validate_claim_parts(
                causes,
                &format!("{field}.storage"),
                s.access_modes.as_ref(),
                s.volume_mode.as_deref(),
                s.resources.as_ref(),
            ),
        }
        check::one_of(
            causes,
            &format!("{field}.contentType"),
            self.content_type.as_deref().filter(|c| !c.is_empty()),
            &["kubevirt", "archive"],
        );
    }
}

impl Kind for DataVolume {
    fn validate(&self, causes: &mut Vec<Cause>) {
        match &self.spec {
            Some(spec) => spec.validate_at(causes, "spec"),
            None => check::required(causes, "spec"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<StorageProfileSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfileSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_property_sets: Option<Vec<ClaimPropertySet>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_import_cron_source_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_class: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimPropertySet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_modes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}

impl Kind for StorageProfile {
    fn validate(&self, causes: &mut Vec<Cause>) {
        let Some(spec) = &self.spec else {
            return;
        };
        check::one_of(
            causes,
            "spec.cloneStrategy",
            spec.clone_strategy.as_deref(),
            CLONE_STRATEGIES,
        );
        check::one_of(
            causes,
            "spec.dataImportCronSourceFormat",
            spec.data_import_cron_source_format.as_deref(),
            &["pvc", "snapshot"],
        );
        for (i, set) in spec.claim_property_sets.iter().flatten().enumerate() {
            validate_claim_parts(
                causes,
                &format!("spec.claimPropertySets[{i}]"),
                set.access_modes.as_ref(),
                set.volume_mode.as_deref(),
                None,
            );
        }
    }
}
