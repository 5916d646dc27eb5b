//! Admission rules that need other objects: a VM under snapshot keeps its volumes and run
//! state, a VM under restore does not start, and a VM has one restore in flight at a time.
//! Refusals are FailedPrecondition (409) with a message that says what to wait for.

use crate::snapshot::restore::restore_res;
use api::{meta, Error};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
}

fn run_state(spec: &Value) -> (Value, Value) {
    (spec["running"].clone(), spec["runStrategy"].clone())
}

fn wants_to_run(spec: &Value) -> bool {
    spec["running"] == true
        || matches!(
            spec["runStrategy"].as_str(),
            Some("Always" | "RerunOnFailure" | "Once")
        )
}

/// Checks one write. `kind` is the object's kind; `status_only` is a write to `/status`.
pub fn check(
    store: &dyn store::Store,
    kind: &str,
    op: Op,
    status_only: bool,
    new: Option<&Value>,
    old: Option<&Value>,
) -> api::Result<()> {
    match (kind, op) {
        ("VirtualMachine", Op::Update) if !status_only => {
            let (Some(new), Some(old)) = (new, old) else {
                return Ok(());
            };
            if let Some(snap) = old["status"]["snapshotInProgress"].as_str() {
                let vols_changed = new["spec"]["template"]["spec"]["volumes"]
                    != old["spec"]["template"]["spec"]["volumes"];
                if vols_changed || run_state(&new["spec"]) != run_state(&old["spec"]) {
                    return Err(Error::precondition(format!(
                        "VirtualMachine {:?} is locked by snapshot {snap:?}: its volumes and run strategy cannot change until the snapshot finishes",
                        meta::name(old)
                    )));
                }
            }
            // A restore controller rewrites the spec itself, keeping the run state; a user may
            // not start the VM meanwhile.
            if let Some(r) = old["status"]["restoreInProgress"].as_str() {
                if wants_to_run(&new["spec"]) && !wants_to_run(&old["spec"]) {
                    return Err(Error::precondition(format!(
                        "VirtualMachine {:?} cannot start while restore {r:?} is in progress",
                        meta::name(old)
                    )));
                }
            }
            Ok(())
        }
        ("VirtualMachineRestore", Op::Create) => {
            let Some(new) = new else { return Ok(()) };
            let target = new["spec"]["target"]["name"].as_str().unwrap_or("");
            let all = meta::LabelSelector::default();
            let none = meta::FieldSelector::default();
            for r in store
                .list(restore_res(), Some(meta::namespace(new)), &all, &none)?
                .items
            {
                let incomplete =
                    r["status"]["complete"] != true && api::condition(&r, "Failure") != Some(true);
                if incomplete && r["spec"]["target"]["name"].as_str() == Some(target) {
                    return Err(Error::precondition(format!(
                        "VirtualMachineRestore {:?} for VirtualMachine {target:?} is still in progress; only one restore per target may run at a time",
                        meta::name(&r)
                    )));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
