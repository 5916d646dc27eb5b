//! `kubevirt.io/v1`: VirtualMachine, VirtualMachineInstance and KubeVirt.

use super::cdi::DataVolumeSpec;
use super::check;
use super::common::{Empty, ObjectMeta, Quantity, ResourceList};
use super::Kind;
use crate::error::Cause;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

pub const RUN_STRATEGIES: &[&str] = &["Always", "Halted", "Manual", "RerunOnFailure", "Once"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    /// Deprecated in KubeVirt in favour of `runStrategy`; the two are mutually exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instancetype: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<VirtualMachineInstanceTemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume_templates: Option<Vec<DataVolumeTemplateSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_volumes_strategy: Option<String>,
}

impl VirtualMachineSpec {
    /// The effective run strategy: `runStrategy`, else derived from `running`, else Halted.
    pub fn effective_run_strategy(&self) -> &str {
        match (&self.run_strategy, self.running) {
            (Some(s), _) => s,
            (None, Some(true)) => "Always",
            _ => "Halted",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceTemplateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineInstanceSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeTemplateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(default)]
    pub spec: DataVolumeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstance {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineInstanceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<Network>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_credentials: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_claims: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<DomainResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Devices>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_threads_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_threads: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_security: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overcommit_guest_overhead: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sockets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_cpu_placement: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolate_emulator_thread: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_guest: Option<Quantity>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_boot: Option<KernelBoot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acpi: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelBoot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<KernelBootContainer>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelBootContainer {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Devices {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_virtio_transitional: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_hotplug: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<Disk>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<Interface>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_pod_interface: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_graphics_device: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_serial_console: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_serial_console: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_mem_balloon: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_input_device: Option<bool>,
    #[serde(
        default,
        rename = "autoattachVSOCK",
        skip_serializing_if = "Option::is_none"
    )]
    pub autoattach_vsock: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_multi_queue: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_multiqueue: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_devices: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystems: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_passthrough: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_devices: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downward_metrics: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<LunTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<CdRomTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(
        default,
        rename = "dedicatedIOThread",
        skip_serializing_if = "Option::is_none"
    )]
    pub dedicated_io_thread: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shareable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LunTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdRomTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tray: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slirp: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passt: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvtap: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<PluginBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<Port>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acpi_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginBinding {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_disk: Option<ContainerDiskSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_no_cloud: Option<CloudInitSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_config_drive: Option<CloudInitSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_disk: Option<EmptyDiskSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_disk: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Value>,
    #[serde(
        default,
        rename = "downwardAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub downward_api: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downward_metrics: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysprep: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_dump: Option<Value>,
}

impl Volume {
    /// The names of the volume source members that are set.
    pub fn source_kinds(&self) -> Vec<&'static str> {
        let set = [
            (
                "persistentVolumeClaim",
                self.persistent_volume_claim.is_some(),
            ),
            ("dataVolume", self.data_volume.is_some()),
            ("containerDisk", self.container_disk.is_some()),
            ("cloudInitNoCloud", self.cloud_init_no_cloud.is_some()),
            (
                "cloudInitConfigDrive",
                self.cloud_init_config_drive.is_some(),
            ),
            ("emptyDisk", self.empty_disk.is_some()),
            ("ephemeral", self.ephemeral.is_some()),
            ("hostDisk", self.host_disk.is_some()),
            ("configMap", self.config_map.is_some()),
            ("secret", self.secret.is_some()),
            ("downwardAPI", self.downward_api.is_some()),
            ("serviceAccount", self.service_account.is_some()),
            ("downwardMetrics", self.downward_metrics.is_some()),
            ("sysprep", self.sysprep.is_some()),
            ("memoryDump", self.memory_dump.is_some()),
        ];
        set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect()
    }

    /// The claim this volume reads, for PVC and DataVolume volumes (a DataVolume's claim has
    /// its name).
    pub fn claim_name(&self) -> Option<&str> {
        if let Some(p) = &self.persistent_volume_claim {
            return Some(&p.claim_name);
        }
        self.data_volume.as_ref().map(|d| d.name.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimVolumeSource {
    #[serde(default)]
    pub claim_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotpluggable: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeVolumeSource {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotpluggable: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDiskSource {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudInitSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data_secret_ref: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDiskSource {
    #[serde(default)]
    pub capacity: Quantity,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multus: Option<MultusNetwork>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodNetwork {
    #[serde(
        default,
        rename = "vmNetworkCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub vm_network_cidr: Option<String>,
    #[serde(
        default,
        rename = "vmIPv6NetworkCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub vm_ipv6_network_cidr: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultusNetwork {
    #[serde(default)]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
}

fn duplicate(causes: &mut Vec<Cause>, field: String, name: &str) {
    causes.push(Cause {
        reason: "FieldValueDuplicate".into(),
        field,
        message: format!("Duplicate value: {name:?}"),
    });
}

impl VirtualMachineInstanceSpec {
    /// Validates the spec as KubeVirt's VMI admitter does, with fields under `field`.
    pub(crate) fn validate_at(&self, causes: &mut Vec<Cause>, field: &str) {
        let Some(domain) = &self.domain else {
            check::required(causes, format!("{field}.domain"));
            return;
        };
        if let Some(r) = &domain.resources {
            let f = format!("{field}.domain.resources");
            check::quantities(causes, &format!("{f}.requests"), r.requests.as_ref());
            check::quantities(causes, &format!("{f}.limits"), r.limits.as_ref());
        }
        if let Some(m) = &domain.memory {
            for (name, q) in [("guest", &m.guest), ("maxGuest", &m.max_guest)] {
                if let Some(q) = q {
                    if q.value().is_none() {
                        check::invalid(
                            causes,
                            format!("{field}.domain.memory.{name}"),
                            format!("{:?} is not a valid quantity", q.0),
                        );
                    }
                }
            }
        }

        let volumes = self.volumes.as_deref().unwrap_or_default();
        let mut volume_names = HashSet::new();
        for (i, v) in volumes.iter().enumerate() {
            let vf = format!("{field}.volumes[{i}]");
            check::dns_label(causes, &format!("{vf}.name"), &v.name);
            if !v.name.is_empty() && !volume_names.insert(v.name.as_str()) {
                duplicate(causes, format!("{vf}.name"), &v.name);
            }
            let kinds = v.source_kinds();
            if kinds.len() != 1 {
                check::invalid(
                    causes,
                    vf.clone(),
                    if kinds.is_empty() {
                        "must have exactly one source type set".to_string()
                    } else {
                        format!(
                            "must have exactly one source type set, found {}",
                            kinds.join(", ")
                        )
                    },
                );
            }
            if let Some(p) = &v.persistent_volume_claim {
                check::dns_subdomain(
                    causes,
                    &format!("{vf}.persistentVolumeClaim.claimName"),
                    &p.claim_name,
                );
            }
            if let Some(d) = &v.data_volume {
                check::dns_subdomain(causes, &format!("{vf}.dataVolume.name"), &d.name);
            }
            if let Some(c) = &v.container_disk {
                check::required_str(causes, &format!("{vf}.containerDisk.image"), &c.image);
            }
            if let Some(e) = &v.empty_disk {
                if e.capacity.0.is_empty() {
                    check::required(causes, format!("{vf}.emptyDisk.capacity"));
                } else if e.capacity.value().is_none() {
                    check::invalid(
                        causes,
                        format!("{vf}.emptyDisk.capacity"),
                        format!("{:?} is not a valid quantity", e.capacity.0),
                    );
                }
            }
        }

        let devices = domain.devices.as_ref();
        let disks = devices.and_then(|d| d.disks.as_deref()).unwrap_or_default();
        let mut disk_names = HashSet::new();
        for (i, d) in disks.iter().enumerate() {
            let df = format!("{field}.domain.devices.disks[{i}]");
            check::dns_label(causes, &format!("{df}.name"), &d.name);
            if d.name.is_empty() {
                continue;
            }
            if !disk_names.insert(d.name.as_str()) {
                duplicate(causes, format!("{df}.name"), &d.name);
            }
            if !volume_names.contains(d.name.as_str()) {
                check::invalid(
                    causes,
                    format!("{df}.name"),
                    format!("disk {:?} has no volume of the same name", d.name),
                );
            }
            let targets = [d.disk.is_some(), d.lun.is_some(), d.cdrom.is_some()];
            if targets.iter().filter(|t| **t).count() > 1 {
                check::invalid(
                    causes,
                    df.clone(),
                    "only one of disk, lun and cdrom may be set",
                );
            }
        }

        let networks = self.networks.as_deref().unwrap_or_default();
        let mut network_names = HashSet::new();
        for (i, n) in networks.iter().enumerate() {
            let nf = format!("{field}.networks[{i}]");
            check::required_str(causes, &format!("{nf}.name"), &n.name);
            if !n.name.is_empty() && !network_names.insert(n.name.as_str()) {
                duplicate(causes, format!("{nf}.name"), &n.name);
            }
            if n.pod.is_some() == n.multus.is_some() {
                check::invalid(
                    causes,
                    nf.clone(),
                    "exactly one of pod and multus must be set",
                );
            }
            if let Some(m) = &n.multus {
                check::required_str(causes, &format!("{nf}.multus.networkName"), &m.network_name);
            }
        }

        let interfaces = devices
            .and_then(|d| d.interfaces.as_deref())
            .unwrap_or_default();
        let mut iface_names = HashSet::new();
        for (i, iface) in interfaces.iter().enumerate() {
            let f = format!("{field}.domain.devices.interfaces[{i}]");
            check::required_str(causes, &format!("{f}.name"), &iface.name);
            if iface.name.is_empty() {
                continue;
            }
            if !iface_names.insert(iface.name.as_str()) {
                duplicate(causes, format!("{f}.name"), &iface.name);
            }
            if !network_names.contains(iface.name.as_str()) {
                check::invalid(
                    causes,
                    format!("{f}.name"),
                    format!("interface {:?} has no network of the same name", iface.name),
                );
            }
            if let Some(mac) = &iface.mac_address {
                if let Some(e) = check::validate_mac(mac) {
                    check::invalid(causes, format!("{f}.macAddress"), e);
                }
            }
            let bindings = [
                iface.bridge.is_some(),
                iface.slirp.is_some(),
                iface.masquerade.is_some(),
                iface.sriov.is_some(),
                iface.passt.is_some(),
                iface.macvtap.is_some(),
                iface.binding.is_some(),
            ];
            if bindings.iter().filter(|b| **b).count() > 1 {
                check::invalid(
                    causes,
                    f.clone(),
                    "only one interface binding method may be set",
                );
            }
        }
    }
}

impl VirtualMachineSpec {
    pub(crate) fn validate_at(&self, causes: &mut Vec<Cause>, field: &str) {
        if self.running.is_some() && self.run_strategy.is_some() {
            check::invalid(
                causes,
                format!("{field}.running"),
                "running and runStrategy are mutually exclusive; running is deprecated, use runStrategy",
            );
        }
        check::one_of(
            causes,
            &format!("{field}.runStrategy"),
            self.run_strategy.as_deref(),
            RUN_STRATEGIES,
        );
        match &self.template {
            None => check::required(causes, format!("{field}.template")),
            Some(t) => {
                if let Some(m) = &t.metadata {
                    check::embedded_meta(causes, &format!("{field}.template.metadata"), m);
                }
                match &t.spec {
                    None => check::required(causes, format!("{field}.template.spec")),
                    Some(s) => s.validate_at(causes, &format!("{field}.template.spec")),
                }
            }
        }
        let mut names = HashSet::new();
        for (i, dvt) in self.data_volume_templates.iter().flatten().enumerate() {
            let f = format!("{field}.dataVolumeTemplates[{i}]");
            let name = dvt.metadata.as_ref().map(ObjectMeta::name).unwrap_or("");
            check::dns_subdomain(causes, &format!("{f}.metadata.name"), name);
            if !name.is_empty() && !names.insert(name) {
                duplicate(causes, format!("{f}.metadata.name"), name);
            }
            if let Some(m) = &dvt.metadata {
                check::embedded_meta(causes, &format!("{f}.metadata"), m);
            }
            dvt.spec.validate_at(causes, &format!("{f}.spec"));
        }
    }
}

impl Kind for VirtualMachine {
    fn validate(&self, causes: &mut Vec<Cause>) {
        match &self.spec {
            Some(spec) => spec.validate_at(causes, "spec"),
            None => check::required(causes, "spec"),
        }
    }
}

impl Kind for VirtualMachineInstance {
    fn validate(&self, causes: &mut Vec<Cause>) {
        match &self.spec {
            Some(spec) => spec.validate_at(causes, "spec"),
            None => check::required(causes, "spec"),
        }
    }
}

/// The KubeVirt install object. vmsnap reads only the feature gates; everything else is kept
/// as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeVirt {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<KubeVirtSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl KubeVirt {
    /// The enabled feature gates.
    pub fn feature_gates(&self) -> &[String] {
        self.spec
            .as_ref()
            .and_then(|s| s.configuration.as_ref())
            .and_then(|c| c.developer_configuration.as_ref())
            .and_then(|d| d.feature_gates.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeVirtSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_namespace: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor_namespace: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_account: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_sign_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_rotate_strategy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_version: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_component: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<KubeVirtConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customize_components: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uninstall_strategy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_update_strategy: Option<Value>,
}

/// `KubeVirtConfiguration`: the developer configuration is typed; the many other sections
/// are kept verbatim under their own names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeVirtConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_configuration: Option<DeveloperConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulated_machines: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovmf_path: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux_launcher_type: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_runtime_class: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smbios: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_strategy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_guest_memory_overhead_ratio: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_container_resources: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_guest_agent_versions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_balloon_stats_period: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permitted_host_devices: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mediated_devices_configuration: Option<Value>,
    #[serde(
        default,
        rename = "minCPUModel",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_cpu_model: Option<Value>,
    #[serde(
        default,
        rename = "obsoleteCPUModels",
        skip_serializing_if = "Option::is_none"
    )]
    pub obsolete_cpu_models: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_instances_per_node: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_state_storage_class: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksm_configuration: Option<Value>,
    #[serde(
        default,
        rename = "autoCPULimitNamespaceLabelSelector",
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_cpu_limit_namespace_label_selector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_update_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_rollout_strategy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_instancetypes_deployment: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instancetype: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_block_tracking_label_selectors: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeveloperConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_feature_gates: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_tolerate_less_space_up_to_percent: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_reserve_pvc_bytes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_overcommit: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selectors: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_emulation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_allocation_ratio: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_cluster_tsc_frequency: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_verification: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_verbosity: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_profiler: Option<Value>,
}

impl Kind for KubeVirt {
    fn validate(&self, causes: &mut Vec<Cause>) {
        let gates = self
            .spec
            .as_ref()
            .and_then(|s| s.configuration.as_ref())
            .and_then(|c| c.developer_configuration.as_ref())
            .and_then(|d| d.feature_gates.as_ref());
        for (i, g) in gates.into_iter().flatten().enumerate() {
            if g.is_empty() {
                check::invalid(
                    causes,
                    format!("spec.configuration.developerConfiguration.featureGates[{i}]"),
                    "a feature gate name may not be empty",
                );
            }
        }
    }
}
