//! Typed resource definitions. Each kind is a serde struct with KubeVirt's exact field names;
//! admission decodes the body into it (recording any field the type does not know), applies
//! defaults, validates, and encodes it back, so the store only ever holds known fields.
//!
//! Every optional field is an `Option` (lists and maps too) so that re-encoding gives back
//! exactly what came in: an empty list stays an empty list and an absent one stays absent.
//! Subtrees vmsnap does not act on (affinity, probes, clock, features...) are kept as
//! `serde_json::Value`, which preserves their content verbatim.

// These functions return the crate's one `Error`; its size is decided in `error.rs`.
#![allow(clippy::result_large_err)]

pub mod cdi;
pub mod clone;
pub mod common;
pub mod core;
pub mod kubevirt;
pub mod snapshot;
pub mod storage;
pub mod volumesnapshot;

mod check;
mod duration;
mod quantity;

pub use check::{validate_json_patch, validate_mac};
pub use common::{ObjectMeta, Quantity};
pub use duration::{format_duration, parse_duration};
pub use quantity::parse_quantity;

use crate::error::{Cause, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// What [`normalize`] produced.
#[derive(Debug)]
pub struct Normalized {
    /// The object re-encoded from its type, with defaults applied.
    pub object: Value,
    /// Paths of fields the type does not know, e.g. `spec.foo`.
    pub unknown: Vec<String>,
    /// Validation failures.
    pub causes: Vec<Cause>,
}

/// A top-level kind: how it is defaulted and validated after decoding.
pub trait Kind: Serialize + DeserializeOwned {
    /// Fills in what the API server defaults when a field is absent.
    fn apply_defaults(&mut self) {}
    /// Appends every problem found; an empty list means the object is valid.
    fn validate(&self, causes: &mut Vec<Cause>);
}

/// Decodes, defaults, validates and re-encodes an object of `kind`.
pub fn normalize(kind: &str, object: Value) -> Result<Normalized> {
    match kind {
        "Namespace" => run::<core::Namespace>(object),
        "PersistentVolumeClaim" => run::<core::PersistentVolumeClaim>(object),
        "Event" => run::<core::Event>(object),
        "StorageClass" => run::<storage::StorageClass>(object),
        "VolumeSnapshot" => run::<volumesnapshot::VolumeSnapshot>(object),
        "VolumeSnapshotContent" => run::<volumesnapshot::VolumeSnapshotContent>(object),
        "VolumeSnapshotClass" => run::<volumesnapshot::VolumeSnapshotClass>(object),
        "VirtualMachine" => run::<kubevirt::VirtualMachine>(object),
        "VirtualMachineInstance" => run::<kubevirt::VirtualMachineInstance>(object),
        "KubeVirt" => run::<kubevirt::KubeVirt>(object),
        "DataVolume" => run::<cdi::DataVolume>(object),
        "StorageProfile" => run::<cdi::StorageProfile>(object),
        "VirtualMachineSnapshot" => run::<snapshot::VirtualMachineSnapshot>(object),
        "VirtualMachineSnapshotContent" => run::<snapshot::VirtualMachineSnapshotContent>(object),
        "VirtualMachineRestore" => run::<snapshot::VirtualMachineRestore>(object),
        "VirtualMachineClone" => run::<clone::VirtualMachineClone>(object),
        other => Err(Error::internal(format!(
            "no type is defined for kind {other:?}"
        ))),
    }
}

fn run<T: Kind>(object: Value) -> Result<Normalized> {
    let (mut typed, unknown) = decode::<T>(object)?;
    typed.apply_defaults();
    let mut causes = Vec::new();
    typed.validate(&mut causes);
    let object = serde_json::to_value(&typed)
        .map_err(|e| Error::internal(format!("re-encoding the object failed: {e}")))?;
    Ok(Normalized {
        object,
        unknown,
        causes,
    })
}

/// Decodes `value` into `T`, returning the dotted paths of the fields `T` does not know
/// instead of failing on them. A value of the wrong type is a 400, naming the field.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<(T, Vec<String>)> {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let res: Result<T, serde_json::Error> =
        serde_ignored::deserialize(de, |path| unknown.push(format_path(&path)));
    match res {
        Ok(t) => Ok((t, unknown)),
        Err(e) => {
            let path = track.path().to_string();
            Err(Error::bad_request(if path == "." {
                format!("the object cannot be decoded: {e}")
            } else {
                format!("the object cannot be decoded: {path}: {e}")
            }))
        }
    }
}

/// Formats an ignored-field path the way kube-apiserver names fields: `spec.disks[0].foo`.
fn format_path(path: &serde_ignored::Path) -> String {
    fn walk(path: &serde_ignored::Path, out: &mut String) {
        use serde_ignored::Path as P;
        match path {
            P::Root => {}
            P::Seq { parent, index } => {
                walk(parent, out);
                out.push_str(&format!("[{index}]"));
            }
            P::Map { parent, key } => {
                walk(parent, out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                walk(parent, out)
            }
        }
    }
    let mut out = String::new();
    walk(path, &mut out);
    out
}
