//! Every kind vmsnap serves, with the names, short names, categories and printer columns that
//! KubeVirt's CRDs (and kube-apiserver's built-ins) publish. Discovery, OpenAPI, Tables and the
//! CLI all read this one table.

/// How a printer column is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    /// An RFC 3339 time, rendered by the server as an age (`5m`), as kube-apiserver does.
    Date,
    Boolean,
    Integer,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    /// A JSONPath subset: `.a.b`, `.a[0].b`, `.a[?(@.type=='Ready')].status`.
    pub path: &'static str,
    pub priority: u8,
    pub description: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, path: &'static str) -> Column {
    Column {
        name,
        ty,
        path,
        priority: 0,
        description: "",
    }
}
const fn wide(name: &'static str, ty: ColumnType, path: &'static str) -> Column {
    Column {
        name,
        ty,
        path,
        priority: 1,
        description: "",
    }
}
const AGE: Column = col("Age", ColumnType::Date, ".metadata.creationTimestamp");

#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    /// Served versions; the first is the storage version (what the store keeps).
    pub versions: &'static [&'static str],
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub has_status: bool,
    pub columns: &'static [Column],
}

impl Resource {
    pub fn storage_version(&self) -> &'static str {
        self.versions[0]
    }
    pub fn serves(&self, version: &str) -> bool {
        self.versions.contains(&version)
    }
    /// `group/version` as in `apiVersion`, for the given served version.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
    /// The store key: group and plural, version-independent.
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    /// True where an update of the main resource that changes nothing but metadata should not
    /// bump `generation`. Kinds without a `spec` bump on any non-metadata change.
    pub fn has_spec(&self) -> bool {
        !matches!(
            self.kind,
            "StorageClass" | "VolumeSnapshotClass" | "Event" | "Namespace"
        )
    }
}

use ColumnType::String as Str;
use ColumnType::{Boolean, Date, Integer};

const ALL: &[&str] = &["all"];

pub static RESOURCES: &[Resource] = &[
    // core/v1
    Resource {
        group: "",
        versions: &["v1"],
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        categories: &[],
        namespaced: false,
        has_status: true,
        columns: &[col("Status", Str, ".status.phase"), AGE],
    },
    Resource {
        group: "",
        versions: &["v1"],
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        short_names: &["pvc"],
        categories: ALL,
        namespaced: true,
        has_status: true,
        columns: &[
            col("Status", Str, ".status.phase"),
            col("Volume", Str, ".spec.volumeName"),
            col("Capacity", Str, ".status.capacity.storage"),
            col("Access Modes", Str, ".status.accessModes"),
            col("StorageClass", Str, ".spec.storageClassName"),
            AGE,
            wide("VolumeMode", Str, ".spec.volumeMode"),
        ],
    },
    Resource {
        group: "",
        versions: &["v1"],
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        has_status: false,
        columns: &[
            col("Last Seen", Date, ".lastTimestamp"),
            col("Type", Str, ".type"),
            col("Reason", Str, ".reason"),
            col("Object", Str, ".involvedObject.name"),
            col("Message", Str, ".message"),
        ],
    },
    // storage.k8s.io/v1
    Resource {
        group: "storage.k8s.io",
        versions: &["v1"],
        kind: "StorageClass",
        plural: "storageclasses",
        singular: "storageclass",
        short_names: &["sc"],
        categories: &[],
        namespaced: false,
        has_status: false,
        columns: &[
            col("Provisioner", Str, ".provisioner"),
            col("ReclaimPolicy", Str, ".reclaimPolicy"),
            col("VolumeBindingMode", Str, ".volumeBindingMode"),
            col("AllowVolumeExpansion", Boolean, ".allowVolumeExpansion"),
            AGE,
        ],
    },
    // snapshot.storage.k8s.io/v1
    Resource {
        group: "snapshot.storage.k8s.io",
        versions: &["v1"],
        kind: "VolumeSnapshot",
        plural: "volumesnapshots",
        singular: "volumesnapshot",
        short_names: &["vs"],
        categories: &[],
        namespaced: true,
        has_status: true,
        columns: &[
            col("ReadyToUse", Boolean, ".status.readyToUse"),
            col("SourcePVC", Str, ".spec.source.persistentVolumeClaimName"),
            col(
                "SourceSnapshotContent",
                Str,
                ".spec.source.volumeSnapshotContentName",
            ),
            col("RestoreSize", Str, ".status.restoreSize"),
            col("SnapshotClass", Str, ".spec.volumeSnapshotClassName"),
            col(
                "SnapshotContent",
                Str,
                ".status.boundVolumeSnapshotContentName",
            ),
            col("CreationTime", Date, ".status.creationTime"),
            AGE,
        ],
    },
    Resource {
        group: "snapshot.storage.k8s.io",
        versions: &["v1"],
        kind: "VolumeSnapshotContent",
        plural: "volumesnapshotcontents",
        singular: "volumesnapshotcontent",
        short_names: &["vsc", "vscs"],
        categories: &[],
        namespaced: false,
        has_status: true,
        columns: &[
            col("ReadyToUse", Boolean, ".status.readyToUse"),
            col("RestoreSize", Integer, ".status.restoreSize"),
            col("DeletionPolicy", Str, ".spec.deletionPolicy"),
            col("Driver", Str, ".spec.driver"),
            col("VolumeSnapshotClass", Str, ".spec.volumeSnapshotClassName"),
            col("VolumeSnapshot", Str, ".spec.volumeSnapshotRef.name"),
            col(
                "VolumeSnapshotNamespace",
                Str,
                ".spec.volumeSnapshotRef.namespace",
            ),
            AGE,
        ],
    },
    Resource {
        group: "snapshot.storage.k8s.io",
        versions: &["v1"],
        kind: "VolumeSnapshotClass",
        plural: "volumesnapshotclasses",
        singular: "volumesnapshotclass",
        short_names: &["vsclass", "vsclasses"],
        categories: &[],
        namespaced: false,
        has_status: false,
        columns: &[
            col("Driver", Str, ".driver"),
            col("DeletionPolicy", Str, ".deletionPolicy"),
            AGE,
        ],
    },
    // kubevirt.io/v1
    Resource {
        group: "kubevirt.io",
        versions: &["v1"],
        kind: "VirtualMachine",
        plural: "virtualmachines",
        singular: "virtualmachine",
        short_names: &["vm", "vms"],
        categories: ALL,
        namespaced: true,
        has_status: true,
        columns: &[
            AGE,
            col("Status", Str, ".status.printableStatus"),
            col(
                "Ready",
                Str,
                ".status.conditions[?(@.type=='Ready')].status",
            ),
        ],
    },
    Resource {
        group: "kubevirt.io",
        versions: &["v1"],
        kind: "VirtualMachineInstance",
        plural: "virtualmachineinstances",
        singular: "virtualmachineinstance",
        short_names: &["vmi", "vmis"],
        categories: ALL,
        namespaced: true,
        has_status: true,
        columns: &[
            AGE,
            col("Phase", Str, ".status.phase"),
            col("IP", Str, ".status.interfaces[0].ipAddress"),
            col("NodeName", Str, ".status.nodeName"),
            col(
                "Ready",
                Str,
                ".status.conditions[?(@.type=='Ready')].status",
            ),
            wide("Accelerator", Str, ".status.accelerator"),
        ],
    },
    Resource {
        group: "kubevirt.io",
        versions: &["v1"],
        kind: "KubeVirt",
        plural: "kubevirts",
        singular: "kubevirt",
        short_names: &["kv", "kvs"],
        categories: ALL,
        namespaced: true,
        has_status: true,
        columns: &[AGE, col("Phase", Str, ".status.phase")],
    },
    // cdi.kubevirt.io/v1beta1
    Resource {
        group: "cdi.kubevirt.io",
        versions: &["v1beta1"],
        kind: "DataVolume",
        plural: "datavolumes",
        singular: "datavolume",
        short_names: &["dv", "dvs"],
        categories: ALL,
        namespaced: true,
        has_status: true,
        columns: &[
            col("Phase", Str, ".status.phase"),
            col("Progress", Str, ".status.progress"),
            col("Restarts", Integer, ".status.restartCount"),
            AGE,
        ],
    },
    Resource {
        group: "cdi.kubevirt.io",
        versions: &["v1beta1"],
        kind: "StorageProfile",
        plural: "storageprofiles",
        singular: "storageprofile",
        short_names: &[],
        categories: ALL,
        namespaced: false,
        has_status: true,
        columns: &[
            col("CloneStrategy", Str, ".status.cloneStrategy"),
            col("SnapshotClass", Str, ".status.snapshotClass"),
            AGE,
        ],
    },
    // snapshot.kubevirt.io: v1beta1 is stored, v1alpha1 is served identically.
    Resource {
        group: "snapshot.kubevirt.io",
        versions: &["v1beta1", "v1alpha1"],
        kind: "VirtualMachineSnapshot",
        plural: "virtualmachinesnapshots",
        singular: "virtualmachinesnapshot",
        short_names: &["vmsnapshot", "vmsnapshots"],
        categories: ALL,
        namespaced: true,
        has_status: true,
        columns: &[
            col("SourceKind", Str, ".spec.source.kind"),
            col("SourceName", Str, ".spec.source.name"),
            col("Phase", Str, ".status.phase"),
            col("ReadyToUse", Boolean, ".status.readyToUse"),
            col("CreationTime", Date, ".status.creationTime"),
            col("Error", Str, ".status.error.message"),
            AGE,
            wide("FreezeWindow", Str, ".status.freezeWindow"),
        ],
    },
    Resource {
        group: "snapshot.kubevirt.io",
        versions: &["v1beta1", "v1alpha1"],
        kind: "VirtualMachineSnapshotContent",
        plural: "virtualmachinesnapshotcontents",
        singular: "virtualmachinesnapshotcontent",
        short_names: &["vmsnapshotcontent", "vmsnapshotcontents"],
        categories: ALL,
        namespaced: true,
        has_status: true,
        columns: &[
            col("ReadyToUse", Boolean, ".status.readyToUse"),
            col("CreationTime", Date, ".status.creationTime"),
            col("Error", Str, ".status.error.message"),
            AGE,
        ],
    },
    Resource {
        group: "snapshot.kubevirt.io",
        versions: &["v1beta1", "v1alpha1"],
        kind: "VirtualMachineRestore",
        plural: "virtualmachinerestores",
        singular: "virtualmachinerestore",
        short_names: &["vmrestore", "vmrestores"],
        categories: ALL,
        namespaced: true,
        has_status: true,
        columns: &[
            col("TargetKind", Str, ".spec.target.kind"),
            col("TargetName", Str, ".spec.target.name"),
            col("Complete", Boolean, ".status.complete"),
            col("RestoreTime", Date, ".status.restoreTime"),
            col("Error", Str, ".status.error.message"),
            AGE,
        ],
    },
    // clone.kubevirt.io: v1beta1 is stored, v1alpha1 is served identically.
    Resource {
        group: "clone.kubevirt.io",
        versions: &["v1beta1", "v1alpha1"],
        kind: "VirtualMachineClone",
        plural: "virtualmachineclones",
        singular: "virtualmachineclone",
        short_names: &["vmclone", "vmclones"],
        categories: ALL,
        namespaced: true,
        has_status: true,
        columns: &[
            col("Phase", Str, ".status.phase"),
            col("SourceVirtualMachine", Str, ".spec.source.name"),
            col("TargetVirtualMachine", Str, ".spec.target.name"),
            AGE,
        ],
    },
];

/// Finds a resource by group and plural, as in a request path.
pub fn by_plural(group: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
}

/// Finds a resource by its `apiVersion` and `kind`, as in a manifest.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind && r.serves(version))
}

/// Finds a resource the way kubectl's CLI argument does: plural, singular, short name or kind,
/// case-insensitively, optionally qualified with `.group`.
pub fn lookup(name: &str) -> Option<&'static Resource> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    RESOURCES.iter().find(|r| {
        group.as_deref().is_none_or(|g| r.group == g)
            && (r.plural == base
                || r.singular == base
                || r.kind.eq_ignore_ascii_case(&base)
                || r.short_names.contains(&base.as_str()))
    })
}

pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// The groups served, each with its versions, preferred first.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        let entry = match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some(e) => e,
            None => {
                out.push((r.group, Vec::new()));
                out.last_mut().expect("just pushed")
            }
        };
        for v in r.versions {
            if !entry.1.contains(v) {
                entry.1.push(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_every_name() {
        assert_eq!(
            lookup("vmsnapshot").map(|r| r.kind),
            Some("VirtualMachineSnapshot")
        );
        assert_eq!(
            lookup("VirtualMachineRestore").map(|r| r.plural),
            Some("virtualmachinerestores")
        );
        assert_eq!(lookup("vm").map(|r| r.kind), Some("VirtualMachine"));
        assert_eq!(lookup("dv").map(|r| r.kind), Some("DataVolume"));
        assert_eq!(
            lookup("virtualmachines.kubevirt.io").map(|r| r.kind),
            Some("VirtualMachine")
        );
        assert!(lookup("nonsense").is_none());
    }

    #[test]
    fn two_versions_for_snapshot_and_clone() {
        assert!(by_kind("snapshot.kubevirt.io/v1alpha1", "VirtualMachineSnapshot").is_some());
        assert!(by_kind("snapshot.kubevirt.io/v1beta1", "VirtualMachineSnapshot").is_some());
        assert!(by_kind("clone.kubevirt.io/v1alpha1", "VirtualMachineClone").is_some());
        assert!(by_kind("clone.kubevirt.io/v1beta1", "VirtualMachineClone").is_some());
        assert!(by_kind("snapshot.kubevirt.io/v2", "VirtualMachineSnapshot").is_none());
    }
}
