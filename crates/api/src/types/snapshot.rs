//! `snapshot.kubevirt.io/v1beta1` (v1alpha1 is identical): VirtualMachineSnapshot,
//! VirtualMachineSnapshotContent and VirtualMachineRestore.

use super::check;
use super::common::{ObjectMeta, Quantity, TypedLocalObjectReference};
use super::core::PersistentVolumeClaimSpec;
use super::kubevirt::VirtualMachineSpec;
use super::Kind;
use crate::error::Cause;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub const DELETION_POLICIES: &[&str] = &["Delete", "Retain"];
pub const SNAPSHOT_MODES: &[&str] = &["Direct", "External"];
pub const TARGET_READINESS_POLICIES: &[&str] = &[
    "WaitGracePeriod",
    "StopTarget",
    "FailImmediate",
    "WaitEventually",
];
pub const VOLUME_RESTORE_POLICIES: &[&str] = &["RandomizeNames", "InPlace", "PrefixTargetName"];
pub const VOLUME_OWNERSHIP_POLICIES: &[&str] = &["Vm", "None"];
/// KubeVirt's `DefaultFailureDeadline`, in the form `metav1.Duration` encodes it.
pub const DEFAULT_FAILURE_DEADLINE: &str = "5m0s";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshot {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineSnapshotSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotSpec {
    #[serde(default)]
    pub source: TypedLocalObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    /// A Go duration (`1m`, `5m0s`); `0` disables the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_scratch_size: Option<Quantity>,
}

impl VirtualMachineSnapshotSpec {
    /// The failure deadline; `None` when it is zero (no deadline) or unparsable.
    pub fn failure_deadline(&self) -> Option<Duration> {
        let d = super::parse_duration(
            self.failure_deadline
                .as_deref()
                .unwrap_or(DEFAULT_FAILURE_DEADLINE),
        )?;
        (!d.is_zero()).then_some(d)
    }
}

impl Kind for VirtualMachineSnapshot {
    fn apply_defaults(&mut self) {
        if let Some(spec) = &mut self.spec {
            spec.deletion_policy.get_or_insert_with(|| "Delete".into());
            spec.failure_deadline
                .get_or_insert_with(|| DEFAULT_FAILURE_DEADLINE.into());
        }
    }

    fn validate(&self, causes: &mut Vec<Cause>) {
        let Some(spec) = &self.spec else {
            check::required(causes, "spec");
            return;
        };
        let src = &spec.source;
        match src.api_group.as_deref() {
            None | Some("") => check::required(causes, "spec.source.apiGroup"),
            Some("kubevirt.io") => {}
            Some(g) => check::invalid(
                causes,
                "spec.source.apiGroup",
                format!("source API group {g:?} is not supported; only \"kubevirt.io\" is"),
            ),
        }
        if src.kind.is_empty() {
            check::required(causes, "spec.source.kind");
        } else if src.kind != "VirtualMachine" {
            check::invalid(
                causes,
                "spec.source.kind",
                format!(
                    "source kind {:?} is not supported; only \"VirtualMachine\" is",
                    src.kind
                ),
            );
        }
        check::dns_subdomain(causes, "spec.source.name", &src.name);
        check::one_of(
            causes,
            "spec.deletionPolicy",
            spec.deletion_policy.as_deref(),
            DELETION_POLICIES,
        );
        if let Some(d) = &spec.failure_deadline {
            if super::parse_duration(d).is_none() {
                check::invalid(
                    causes,
                    "spec.failureDeadline",
                    format!(
                        "{d:?} is not a valid duration (expected e.g. \"5m\", \"1h30m\" or \"0s\")"
                    ),
                );
            }
        }
        check::one_of(
            causes,
            "spec.snapshotMode",
            spec.snapshot_mode.as_deref(),
            SNAPSHOT_MODES,
        );
        if let Some(q) = &spec.overlay_scratch_size {
            if spec.snapshot_mode.as_deref() != Some("External") {
                check::invalid(
                    causes,
                    "spec.overlayScratchSize",
                    "overlayScratchSize can only be set when snapshotMode is External",
                );
            }
            if q.value().is_none_or(|v| v == 0) {
                check::invalid(
                    causes,
                    "spec.overlayScratchSize",
                    "overlayScratchSize must be a quantity greater than zero",
                );
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotContent {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineSnapshotContentSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotContentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_snapshot_name: Option<String>,
    #[serde(default)]
    pub source: SourceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_backups: Option<Vec<VolumeBackup>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<SnapshotVirtualMachine>,
}

/// The VM as it was when snapshotted: metadata, spec and status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotVirtualMachine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// What is needed to restore one volume: the claim as it was and the VolumeSnapshot's name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackup {
    #[serde(default)]
    pub volume_name: String,
    #[serde(default)]
    pub persistent_volume_claim: VolumeBackupClaim,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackupClaim {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PersistentVolumeClaimSpec>,
}

impl Kind for VirtualMachineSnapshotContent {
    fn validate(&self, causes: &mut Vec<Cause>) {
        let Some(spec) = &self.spec else {
            check::required(causes, "spec");
            return;
        };
        for (i, b) in spec.volume_backups.iter().flatten().enumerate() {
            let f = format!("spec.volumeBackups[{i}]");
            check::required_str(causes, &format!("{f}.volumeName"), &b.volume_name);
            if let Some(s) = &b.persistent_volume_claim.spec {
                s.validate_at(causes, &format!("{f}.persistentVolumeClaim.spec"));
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestore {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineRestoreSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreSpec {
    #[serde(default)]
    pub target: TypedLocalObjectReference,
    #[serde(default)]
    pub virtual_machine_snapshot_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_readiness_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_restore_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_ownership_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_restore_overrides: Option<Vec<VolumeRestoreOverride>>,
    /// JSON patch operations, one per string, applied when the restore creates a new VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestoreOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Whether a restore patch may touch `path`: the spec, labels and annotations only.
fn restore_patch_path_allowed(path: &str) -> bool {
    path.starts_with("/spec/")
        || ["/metadata/labels", "/metadata/annotations"]
            .iter()
            .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

impl Kind for VirtualMachineRestore {
    fn apply_defaults(&mut self) {
        if let Some(spec) = &mut self.spec {
            spec.target_readiness_policy
                .get_or_insert_with(|| "WaitGracePeriod".into());
            spec.volume_restore_policy
                .get_or_insert_with(|| "RandomizeNames".into());
        }
    }

    fn validate(&self, causes: &mut Vec<Cause>) {
        let Some(spec) = &self.spec else {
            check::required(causes, "spec");
            return;
        };
        let t = &spec.target;
        match t.api_group.as_deref() {
            None | Some("") => check::required(causes, "spec.target.apiGroup"),
            Some("kubevirt.io") => {}
            Some(g) => check::invalid(
                causes,
                "spec.target.apiGroup",
                format!("target API group {g:?} is not supported; only \"kubevirt.io\" is"),
            ),
        }
        if t.kind.is_empty() {
            check::required(causes, "spec.target.kind");
        } else if t.kind != "VirtualMachine" {
            check::invalid(
                causes,
                "spec.target.kind",
                format!(
                    "target kind {:?} is not supported; only \"VirtualMachine\" is",
                    t.kind
                ),
            );
        }
        check::dns_subdomain(causes, "spec.target.name", &t.name);
        check::dns_subdomain(
            causes,
            "spec.virtualMachineSnapshotName",
            &spec.virtual_machine_snapshot_name,
        );
        check::one_of(
            causes,
            "spec.targetReadinessPolicy",
            spec.target_readiness_policy.as_deref(),
            TARGET_READINESS_POLICIES,
        );
        check::one_of(
            causes,
            "spec.volumeRestorePolicy",
            spec.volume_restore_policy.as_deref(),
            VOLUME_RESTORE_POLICIES,
        );
        check::one_of(
            causes,
            "spec.volumeOwnershipPolicy",
            spec.volume_ownership_policy.as_deref(),
            VOLUME_OWNERSHIP_POLICIES,
        );
        for (i, p) in spec.patches.iter().flatten().enumerate() {
            let field = format!("spec.patches[{i}]");
            match check::validate_json_patch(p) {
                Err(e) => check::invalid(causes, field, e),
                Ok(v) => {
                    for path in check::patch_paths(&v) {
                        if !restore_patch_path_allowed(path) {
                            check::invalid(
                                causes,
                                field.clone(),
                                format!("patching {path:?} is not allowed: a restore patch may only change /spec/, /metadata/labels or /metadata/annotations"),
                            );
                        }
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, o) in spec.volume_restore_overrides.iter().flatten().enumerate() {
            let f = format!("spec.volumeRestoreOverrides[{i}]");
            let name = o.volume_name.as_deref().unwrap_or("");
            check::required_str(causes, &format!("{f}.volumeName"), name);
            if !name.is_empty() && !seen.insert(name) {
                causes.push(Cause {
                    reason: "FieldValueDuplicate".into(),
                    field: format!("{f}.volumeName"),
                    message: format!("Duplicate value: {name:?}"),
                });
            }
            if let Some(r) = &o.restore_name {
                check::dns_subdomain(causes, &format!("{f}.restoreName"), r);
            }
            for (k, v) in o.labels.iter().flatten() {
                if let Some(e) = crate::meta::validate_label(k, v) {
                    check::invalid(causes, format!("{f}.labels[{k}]"), e);
                }
            }
        }
    }
}
