//! `clone.kubevirt.io/v1beta1` (v1alpha1 is identical): VirtualMachineClone.

use super::check;
use super::common::{ObjectMeta, TypedLocalObjectReference};
use super::Kind;
use crate::error::Cause;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const VOLUME_NAME_POLICIES: &[&str] = &["RandomizeNames", "PrefixTargetName"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineClone {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineCloneSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineCloneSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TypedLocalObjectReference>,
    /// When absent, the target is a VirtualMachine with a generated name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TypedLocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_filters: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_filters: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<CloneTemplateFilters>,
    /// Interface name to the MAC address the clone's interface gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_mac_addresses: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        rename = "newSMBiosSerial",
        skip_serializing_if = "Option::is_none"
    )]
    pub new_smbios_serial: Option<String>,
    /// JSON patch operations, one per string, applied to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloneTemplateFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_filters: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_filters: Option<Vec<String>>,
}

fn filters(causes: &mut Vec<Cause>, field: &str, list: Option<&Vec<String>>) {
    for (i, f) in list.into_iter().flatten().enumerate() {
        check::filter(causes, &format!("{field}[{i}]"), f);
    }
}

impl Kind for VirtualMachineClone {
    fn validate(&self, causes: &mut Vec<Cause>) {
        let Some(spec) = &self.spec else {
            check::required(causes, "spec");
            return;
        };
        match &spec.source {
            None => check::required(causes, "spec.source"),
            Some(src) => {
                let group = src.api_group.as_deref().unwrap_or("");
                match (src.kind.as_str(), group) {
                    ("VirtualMachine", "kubevirt.io")
                    | ("VirtualMachineSnapshot", "snapshot.kubevirt.io") => {}
                    ("", _) => check::required(causes, "spec.source.kind"),
                    ("VirtualMachine" | "VirtualMachineSnapshot", g) => check::invalid(
                        causes,
                        "spec.source.apiGroup",
                        format!(
                            "API group {g:?} does not serve {}; use {:?}",
                            src.kind,
                            if src.kind == "VirtualMachine" {
                                "kubevirt.io"
                            } else {
                                "snapshot.kubevirt.io"
                            }
                        ),
                    ),
                    (k, _) => check::invalid(
                        causes,
                        "spec.source.kind",
                        format!("source kind {k:?} is not supported: use VirtualMachine (kubevirt.io) or VirtualMachineSnapshot (snapshot.kubevirt.io)"),
                    ),
                }
                check::dns_subdomain(causes, "spec.source.name", &src.name);
            }
        }
        if let Some(t) = &spec.target {
            if t.kind != "VirtualMachine" {
                check::invalid(
                    causes,
                    "spec.target.kind",
                    format!(
                        "target kind {:?} is not supported; only \"VirtualMachine\" is",
                        t.kind
                    ),
                );
            }
            match t.api_group.as_deref() {
                None | Some("") | Some("kubevirt.io") => {}
                Some(g) => check::invalid(
                    causes,
                    "spec.target.apiGroup",
                    format!("target API group {g:?} is not supported; only \"kubevirt.io\" is"),
                ),
            }
            if !t.name.is_empty() {
                check::dns_subdomain(causes, "spec.target.name", &t.name);
                if spec.source.as_ref().is_some_and(|s| s.name == t.name) {
                    check::invalid(
                        causes,
                        "spec.target.name",
                        format!(
                            "target name {:?} cannot be equal to the source name",
                            t.name
                        ),
                    );
                }
            }
        }
        filters(causes, "spec.labelFilters", spec.label_filters.as_ref());
        filters(
            causes,
            "spec.annotationFilters",
            spec.annotation_filters.as_ref(),
        );
        if let Some(t) = &spec.template {
            filters(
                causes,
                "spec.template.labelFilters",
                t.label_filters.as_ref(),
            );
            filters(
                causes,
                "spec.template.annotationFilters",
                t.annotation_filters.as_ref(),
            );
        }
        for (iface, mac) in spec.new_mac_addresses.iter().flatten() {
            if let Some(e) = check::validate_mac(mac) {
                check::invalid(causes, format!("spec.newMacAddresses[{iface}]"), e);
            }
        }
        for (i, p) in spec.patches.iter().flatten().enumerate() {
            if let Err(e) = check::validate_json_patch(p) {
                check::invalid(causes, format!("spec.patches[{i}]"), e);
            }
        }
        check::one_of(
            causes,
            "spec.volumeNamePolicy",
            spec.volume_name_policy.as_deref(),
            VOLUME_NAME_POLICIES,
        );
    }
}
