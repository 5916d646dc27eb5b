//! Maps a VirtualMachineInstance spec onto what QEMU runs ([`virt::VmSpec`]).
//!
//! Decisions where KubeVirt's model has no direct equivalent on one host:
//! - `persistentVolumeClaim` and `dataVolume` volumes open the claim's volume in its pool
//!   (through [`VolumeResolver`]); a missing claim keeps the VM stopped.
//! - `containerDisk` with image [`GUEST_ROOTFS_IMAGE`] is an ephemeral copy of the cached guest
//!   root filesystem, thrown away when the VM stops (as a container disk is). Any other image is
//!   refused: vmsnap pulls from no registry.
//! - `emptyDisk` is a sparse raw file in the run directory, also thrown away at stop.
//! - `cloudInitNoCloud`, `cloudInitConfigDrive` and the other config volumes are not attached:
//!   the guest image has no cloud-init. They are reported in [`LaunchPlan::ignored`].
//! - `firmware.kernelBoot.container.image: vmsnap.io/guest-kernel` boots the cached guest
//!   kernel and initrd with `kernelArgs` (default [`virt::GUEST_CMDLINE`]).
//! - MAC addresses and the firmware UUID are derived from the VM's uid when unset, so they are
//!   stable across restarts and differ between clones.

use api::types::kubevirt::{Interface, VirtualMachineInstanceSpec, Volume};
use api::{Error, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use virt::{Disk, DiskFormat, KernelBoot, Nic};

/// `kernelBoot.container.image` that selects the cached guest kernel and initrd.
pub const GUEST_KERNEL_IMAGE: &str = "vmsnap.io/guest-kernel";
/// `containerDisk.image` that selects an ephemeral copy of the cached guest root filesystem.
pub const GUEST_ROOTFS_IMAGE: &str = "vmsnap.io/guest-rootfs";
/// Memory when the spec gives none (KubeVirt requires one; we are lenient).
pub const DEFAULT_MEMORY_MIB: u64 = 256;

/// How QEMU opens the volume of a claim; implemented by the storage pools.
pub trait VolumeResolver: Send + Sync {
    /// The attachment of `claim` in `namespace`: NotFound when the claim does not exist,
    /// FailedPrecondition while it is not Bound.
    fn attachment(&self, namespace: &str, claim: &str) -> api::Result<storage::Attachment>;
}

impl<F> VolumeResolver for F
where
    F: Fn(&str, &str) -> api::Result<storage::Attachment> + Send + Sync,
{
    fn attachment(&self, namespace: &str, claim: &str) -> api::Result<storage::Attachment> {
        self(namespace, claim)
    }
}

/// Why a volume cannot be opened yet or at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeProblem {
    /// KubeVirt-style reason: FailedPvcNotFound, FailedDataVolumeNotFound,
    /// WaitingForVolumeBinding, UnsupportedVolume.
    pub reason: &'static str,
    pub message: String,
    /// True when waiting may fix it (a claim that is not Bound yet).
    pub transient: bool,
}

/// An interface as QEMU gets it, with the name from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNic {
    pub name: String,
    pub mac: String,
}

/// Everything needed to launch, computed from the spec.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<Disk>,
    /// Files created for this run only (containerDisk copies, emptyDisks).
    pub ephemeral: Vec<(PathBuf, EphemeralSource)>,
    pub nics: Vec<PlannedNic>,
    pub smbios_serial: Option<String>,
    pub firmware_uuid: String,
    pub kernel: Option<KernelBoot>,
    /// Volumes that were not attached, with the reason.
    pub ignored: Vec<String>,
}

/// How an ephemeral disk is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EphemeralSource {
    /// A sparse copy of this image.
    CopyOf(PathBuf),
    /// A blank sparse file of this many bytes.
    Blank(u64),
}

/// Memory in MiB from `domain.memory.guest`, else `resources.requests.memory`, else
/// `resources.limits.memory`, rounded up to whole MiB.
pub fn memory_mib(spec: &VirtualMachineInstanceSpec) -> Result<u64, String> {
    let domain = spec.domain.as_ref();
    let q = domain
        .and_then(|d| d.memory.as_ref())
        .and_then(|m| m.guest.clone())
        .or_else(|| {
            let r = domain.and_then(|d| d.resources.as_ref())?;
            r.requests
                .as_ref()
                .and_then(|l| l.get("memory").cloned())
                .or_else(|| r.limits.as_ref().and_then(|l| l.get("memory").cloned()))
        });
    let Some(q) = q else {
        return Ok(DEFAULT_MEMORY_MIB);
    };
    let bytes = q
        .value()
        .ok_or_else(|| format!("memory {:?} is not a valid quantity", q.0))?;
    let mib = bytes.div_ceil(1 << 20);
    if mib == 0 {
        return Err(format!("memory {:?} is less than 1 MiB", q.0));
    }
    Ok(mib)
}

/// vCPUs: sockets * cores * threads (each defaulting to 1).
pub fn cpus(spec: &VirtualMachineInstanceSpec) -> u32 {
    let cpu = spec.domain.as_ref().and_then(|d| d.cpu.as_ref());
    let f = |v: Option<u32>| v.unwrap_or(1).max(1);
    match cpu {
        Some(c) => f(c.sockets)
            .saturating_mul(f(c.cores))
            .saturating_mul(f(c.threads)),
        None => 1,
    }
}

/// The interfaces QEMU gets: the spec's, or one named `default` when the spec lists none and
/// the pod interface is auto-attached (KubeVirt's default).
pub fn interfaces(spec: &VirtualMachineInstanceSpec, vm_uid: &str) -> Vec<PlannedNic> {
    let devices = spec.domain.as_ref().and_then(|d| d.devices.as_ref());
    let listed: Vec<Interface> = devices
        .and_then(|d| d.interfaces.clone())
        .unwrap_or_default();
    let auto = devices
        .and_then(|d| d.autoattach_pod_interface)
        .unwrap_or(true);
    let listed = if listed.is_empty() && auto {
        vec![Interface {
            name: "default".into(),
            ..Default::default()
        }]
    } else {
        listed
    };
    listed
        .iter()
        .map(|i| PlannedNic {
            name: i.name.clone(),
            mac: i
                .mac_address
                .as_deref()
                .map(normalize_mac)
                .unwrap_or_else(|| generated_mac(vm_uid, &i.name)),
        })
        .collect()
}

/// `02-AB-..` or `02:ab:..` to QEMU's lower-case colon form.
pub fn normalize_mac(mac: &str) -> String {
    mac.replace('-', ":").to_ascii_lowercase()
}

/// A stable locally administered MAC in QEMU's 52:54:00 range, from the VM uid and the
/// interface name.
pub fn generated_mac(vm_uid: &str, iface: &str) -> String {
    let h = fnv1a(&[vm_uid.as_bytes(), b"/mac/", iface.as_bytes()], 0);
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (h >> 16) as u8,
        (h >> 8) as u8,
        h as u8
    )
}

/// A stable UUID (version 4 layout) from the VM uid; KubeVirt likewise derives one when
/// `firmware.uuid` is unset.
pub fn generated_uuid(vm_uid: &str) -> String {
    let a = fnv1a(&[vm_uid.as_bytes(), b"/uuid"], 0);
    let b = fnv1a(&[vm_uid.as_bytes(), b"/uuid"], 0x9e37_79b9_7f4a_7c15);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn fnv1a(parts: &[&[u8]], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Checks that every claim-backed volume of `spec` exists and is Bound; the first problem
/// found, if any.
pub fn check_volumes(
    store: &dyn store::Store,
    resolver: &dyn VolumeResolver,
    namespace: &str,
    spec: &VirtualMachineInstanceSpec,
) -> Option<VolumeProblem> {
    for v in spec.volumes.iter().flatten() {
        if let Err(p) = claim_attachment(store, resolver, namespace, v) {
            return Some(p);
        }
    }
    None
}

fn claim_attachment(
    store: &dyn store::Store,
    resolver: &dyn VolumeResolver,
    namespace: &str,
    v: &Volume,
) -> Result<Option<storage::Attachment>, VolumeProblem> {
    let Some(claim) = v.claim_name() else {
        return Ok(None);
    };
    let is_dv = v.data_volume.is_some();
    let missing = |what: &str| VolumeProblem {
        reason: if is_dv {
            "FailedDataVolumeNotFound"
        } else {
            "FailedPvcNotFound"
        },
        message: format!(
            "volume {:?}: {what} {namespace}/{claim} does not exist",
            v.name
        ),
        transient: false,
    };
    if is_dv {
        if let Some(res) = api::registry::by_plural("cdi.kubevirt.io", "datavolumes") {
            if let Err(e) = store.get(res, namespace, claim) {
                if e.is(ErrorKind::NotFound) {
                    // A DataVolume may also be satisfied by a claim of the same name.
                    let pvc = api::registry::by_plural("", "persistentvolumeclaims");
                    if pvc.is_none_or(|r| store.get(r, namespace, claim).is_err()) {
                        return Err(missing("DataVolume"));
                    }
                }
            }
        }
    } else if let Some(res) = api::registry::by_plural("", "persistentvolumeclaims") {
        if let Err(e) = store.get(res, namespace, claim) {
            if e.is(ErrorKind::NotFound) {
                return Err(missing("PersistentVolumeClaim"));
            }
        }
    }
    match resolver.attachment(namespace, claim) {
        Ok(a) => Ok(Some(a)),
        Err(e) if e.is(ErrorKind::NotFound) => Err(missing(if is_dv {
            "DataVolume"
        } else {
            "PersistentVolumeClaim"
        })),
        Err(e) if e.is(ErrorKind::FailedPrecondition) => Err(VolumeProblem {
            reason: "WaitingForVolumeBinding",
            message: format!("volume {:?}: {}", v.name, e.message),
            transient: true,
        }),
        Err(e) => Err(VolumeProblem {
            reason: "FailedVolume",
            message: format!("volume {:?}: {}", v.name, e.message),
            transient: true,
        }),
    }
}

/// Computes the launch plan. `run_dir` is where ephemeral disks go.
pub fn plan(
    store: &dyn store::Store,
    resolver: &dyn VolumeResolver,
    namespace: &str,
    vm_uid: &str,
    spec: &VirtualMachineInstanceSpec,
    guest_dir: &Path,
    run_dir: &Path,
) -> Result<LaunchPlan, VolumeProblem> {
    let unsupported = |message: String| VolumeProblem {
        reason: "UnsupportedVolume",
        message,
        transient: false,
    };
    let memory_mib = memory_mib(spec).map_err(|m| VolumeProblem {
        reason: "InvalidMemory",
        message: m,
        transient: false,
    })?;
    let domain = spec.domain.clone().unwrap_or_default();
    let devices = domain.devices.clone().unwrap_or_default();
    let disks_spec = devices.disks.clone().unwrap_or_default();
    let volumes: Vec<Volume> = spec.volumes.clone().unwrap_or_default();

    // Disks in the order the spec lists them, then volumes no disk names (KubeVirt adds a disk
    // for those).
    let mut order: Vec<(Option<&api::types::kubevirt::Disk>, &Volume)> = Vec::new();
    for d in &disks_spec {
        if let Some(v) = volumes.iter().find(|v| v.name == d.name) {
            order.push((Some(d), v));
        }
    }
    for v in &volumes {
        if !disks_spec.iter().any(|d| d.name == v.name) {
            order.push((None, v));
        }
    }

    let mut disks = Vec::new();
    let mut ephemeral = Vec::new();
    let mut ignored = Vec::new();
    for (d, v) in order {
        let readonly = d.is_some_and(|d| {
            d.cdrom.is_some()
                || d.disk.as_ref().and_then(|t| t.readonly).unwrap_or(false)
                || d.lun.as_ref().and_then(|t| t.readonly).unwrap_or(false)
        }) || v
            .persistent_volume_claim
            .as_ref()
            .and_then(|p| p.read_only)
            .unwrap_or(false);
        let serial = d.and_then(|d| d.serial.clone());
        if let Some(a) = claim_attachment(store, resolver, namespace, v)? {
            disks.push(Disk {
                path: a.path,
                format: match a.format {
                    storage::Format::Raw => DiskFormat::Raw,
                    storage::Format::Qcow2 => DiskFormat::Qcow2,
                },
                readonly,
                serial,
            });
        } else if let Some(c) = &v.container_disk {
            if c.image != GUEST_ROOTFS_IMAGE {
                return Err(unsupported(format!(
                    "volume {:?}: containerDisk image {:?} cannot be pulled; vmsnap provides only {GUEST_ROOTFS_IMAGE:?}",
                    v.name, c.image
                )));
            }
            let path = run_dir.join(format!("ephemeral-{}.img", v.name));
            ephemeral.push((
                path.clone(),
                EphemeralSource::CopyOf(guest_dir.join("rootfs.img")),
            ));
            disks.push(Disk {
                path,
                format: DiskFormat::Raw,
                readonly,
                serial,
            });
        } else if let Some(e) = &v.empty_disk {
            let size = e.capacity.value().unwrap_or(0);
            let path = run_dir.join(format!("empty-{}.img", v.name));
            ephemeral.push((path.clone(), EphemeralSource::Blank(size)));
            disks.push(Disk {
                path,
                format: DiskFormat::Raw,
                readonly,
                serial,
            });
        } else {
            ignored.push(format!(
                "volume {:?} ({}) is not attached: the guest has no use for it",
                v.name,
                v.source_kinds().join(", ")
            ));
        }
    }

    let firmware = domain.firmware.clone().unwrap_or_default();
    let kernel = match &firmware.kernel_boot {
        None => None,
        Some(kb) => {
            let image = kb
                .container
                .as_ref()
                .map(|c| c.image.as_str())
                .unwrap_or("");
            if image != GUEST_KERNEL_IMAGE {
                return Err(unsupported(format!(
                    "kernelBoot image {image:?} cannot be pulled; vmsnap provides only {GUEST_KERNEL_IMAGE:?}"
                )));
            }
            let mut k = KernelBoot::guest(guest_dir);
            if let Some(args) = kb.kernel_args.as_deref().filter(|a| !a.trim().is_empty()) {
                k.cmdline = args.to_string();
            }
            Some(k)
        }
    };
    Ok(LaunchPlan {
        cpus: cpus(spec),
        memory_mib,
        disks,
        ephemeral,
        nics: interfaces(spec, vm_uid),
        smbios_serial: firmware.serial.clone(),
        firmware_uuid: firmware
            .uuid
            .clone()
            .unwrap_or_else(|| generated_uuid(vm_uid)),
        kernel,
        ignored,
    })
}

impl LaunchPlan {
    pub fn to_vm_spec(&self, name: &str, accel: virt::Accel) -> virt::VmSpec {
        virt::VmSpec {
            name: name.to_string(),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            disks: self.disks.clone(),
            nics: self
                .nics
                .iter()
                .map(|n| Nic { mac: n.mac.clone() })
                .collect(),
            smbios_serial: self.smbios_serial.clone(),
            firmware_uuid: Some(self.firmware_uuid.clone()),
            kernel: self.kernel.clone(),
            accel,
            agent: true,
        }
    }

    /// Creates the ephemeral disks.
    pub fn prepare(&self) -> api::Result<()> {
        for (path, src) in &self.ephemeral {
            let _ = std::fs::remove_file(path);
            match src {
                EphemeralSource::CopyOf(from) => {
                    virt::bench::copy_sparse(from, path).map_err(|e| {
                        Error::internal(format!("cannot create {}: {e}", path.display()))
                    })?;
                }
                EphemeralSource::Blank(size) => {
                    let f = std::fs::File::create(path).map_err(|e| {
                        Error::internal(format!("cannot create {}: {e}", path.display()))
                    })?;
                    f.set_len(*size).map_err(|e| {
                        Error::internal(format!("cannot size {}: {e}", path.display()))
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// A resolver that knows no claims, for runtimes without storage.
pub fn no_volumes() -> Arc<dyn VolumeResolver> {
    Arc::new(
        |ns: &str, claim: &str| -> api::Result<storage::Attachment> {
            Err(Error::not_found(format!(
                "persistentvolumeclaim {ns}/{claim} has no volume: no storage pools are configured"
            )))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::types::kubevirt::{Cpu, DomainSpec, Memory};

    #[test]
    fn identity_is_stable_and_distinct() {
        assert_eq!(
            generated_mac("u1", "default"),
            generated_mac("u1", "default")
        );
        assert_ne!(
            generated_mac("u1", "default"),
            generated_mac("u2", "default")
        );
        let u = generated_uuid("u1");
        assert_eq!(u, generated_uuid("u1"));
        assert_ne!(u, generated_uuid("u2"));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(normalize_mac("02-AB-cd-00-00-01"), "02:ab:cd:00:00:01");
    }

    #[test]
    fn cpu_and_memory() {
        let spec = VirtualMachineInstanceSpec {
            domain: Some(DomainSpec {
                cpu: Some(Cpu {
                    cores: Some(2),
                    sockets: Some(2),
                    ..Default::default()
                }),
                memory: Some(Memory {
                    guest: Some("1.5Gi".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(cpus(&spec), 4);
        assert_eq!(memory_mib(&spec), Ok(1536));
        assert_eq!(memory_mib(&Default::default()), Ok(DEFAULT_MEMORY_MIB));
        let tiny = VirtualMachineInstanceSpec {
            domain: Some(DomainSpec {
                memory: Some(Memory {
                    guest: Some("0".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(memory_mib(&tiny).is_err());
    }
}
