//! The VirtualMachine controller, in KubeVirt's model: the VM's run strategy decides whether
//! a VirtualMachineInstance of the same name (owned by the VM) should exist; the VMI controller
//! runs QEMU for it. The VM's status mirrors the VMI's.
//!
//! - Always: a VMI always exists; one that ends is replaced (a failed one after a backoff).
//! - RerunOnFailure: as Always, but a VMI whose guest shut down cleanly stays Succeeded.
//! - Once: one VMI is created; it is never replaced.
//! - Manual: only `status.stateChangeRequests` (the start/stop/restart actions) act.
//! - Halted: no VMI.
//!
//! `status.restoreInProgress` blocks creating a VMI. Status writes only touch the fields this
//! controller owns, so `snapshotInProgress` and the snapshot controller's fields survive.

use super::runtime::VmRuntime;
use super::spec::{check_volumes, VolumeProblem};
use super::{vm_res, vmi_res, FINALIZER};
use crate::events::EventType;
use crate::runtime::{
    ignore_not_found, map_to_owner, update_status_with, Action, Mapper, ObjectKey, Reconciler,
};
use api::registry::Resource;
use api::types::kubevirt::VirtualMachine;
use api::{meta, Error};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub struct VmReconciler {
    pub rt: Arc<VmRuntime>,
}

/// True when `status.<field>` holds something (a restore or snapshot name, or `true`).
pub fn status_flag(vm: &Value, field: &str) -> bool {
    match &vm["status"][field] {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn parse_ts(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Backoff after the n-th consecutive failure: 1 s, then 5 s doubling up to 5 minutes.
fn backoff(retries: u64) -> Duration {
    if retries <= 1 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs((5u64 << (retries - 2).min(6)).min(300))
    }
}

/// When a running VMI became Running, from its phase transitions.
fn running_since(vmi: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    vmi["status"]["phaseTransitionTimestamps"]
        .as_array()?
        .iter()
        .rev()
        .find(|t| t["phase"] == "Running")
        .and_then(|t| parse_ts(&t["phaseTransitionTimestamp"]))
}

/// What the reconcile decided to tell in the status.
struct Outcome {
    volume_problem: Option<VolumeProblem>,
    /// A failed VMI waits for its retry.
    crash_loop: bool,
}

impl VmReconciler {
    fn delete_vmi(&self, key: &ObjectKey) -> api::Result<()> {
        let r = self.rt.store().delete(
            vmi_res(),
            &key.namespace,
            &key.name,
            &store::Preconditions::default(),
        );
        ignore_not_found(r).map(|_| ())
    }

    fn create_vmi(&self, vm: &Value, typed: &VirtualMachine) -> api::Result<()> {
        let tmpl = typed
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .ok_or_else(|| Error::bad_request("the VM has no template"))?;
        let mut vmi = json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": meta::name(vm),
                "namespace": meta::namespace(vm),
                "finalizers": [FINALIZER],
            },
            "spec": serde_json::to_value(tmpl.spec.clone().unwrap_or_default())?,
        });
        if let Some(m) = &tmpl.metadata {
            if let Some(l) = &m.labels {
                vmi["metadata"]["labels"] = json!(l);
            }
            if let Some(a) = &m.annotations {
                vmi["metadata"]["annotations"] = json!(a);
            }
        }
        vmi["metadata"]["labels"]["kubevirt.io/vm"] = json!(meta::name(vm));
        meta::set_owner(&mut vmi, vm);
        vmi["status"] = json!({"phase": "Pending"});
        match self.rt.store().create(vmi_res(), vmi) {
            Ok(_) => Ok(()),
            Err(e) if e.is(api::ErrorKind::AlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn volumes_ready(&self, ns: &str, typed: &VirtualMachine) -> Option<VolumeProblem> {
        let spec = typed
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())?;
        check_volumes(self.rt.store().as_ref(), self.rt.volumes(), ns, spec)
    }

    fn sync(&self, key: &ObjectKey) -> api::Result<Action> {
        let store = self.rt.store().clone();
        let Some(vm) = ignore_not_found(store.get(vm_res(), &key.namespace, &key.name))? else {
            return Ok(Action::AwaitChange);
        };
        if meta::is_deleting(&vm) {
            // The VMI is owned by the VM: garbage collection deletes it and its finalizer
            // stops QEMU.
            return Ok(Action::AwaitChange);
        }
        let typed: VirtualMachine = api::types::decode(Value::clone(&vm))?.0;
        let strategy = typed
            .spec
            .as_ref()
            .map(|s| s.effective_run_strategy().to_string())
            .unwrap_or_else(|| "Halted".into());
        let vmi = ignore_not_found(store.get(vmi_res(), &key.namespace, &key.name))?;
        // A VMI of this name that some other object owns is left alone.
        let vmi = vmi.filter(|v| {
            let owners = meta::owner_uids(v);
            owners.is_empty() || owners.iter().any(|u| u == meta::uid(&vm))
        });
        let restoring = status_flag(&vm, "restoreInProgress");
        let phase = vmi
            .as_ref()
            .and_then(|v| v["status"]["phase"].as_str())
            .unwrap_or("")
            .to_string();
        let vmi_deleting = vmi.as_deref().is_some_and(meta::is_deleting);
        let terminal = matches!(phase.as_str(), "Succeeded" | "Failed");
        let mut outcome = Outcome {
            volume_problem: None,
            crash_loop: false,
        };
        let mut requeue: Option<Duration> = None;
        let mut pop_request = false;
        let mut failure: Option<Value> = None;

        // Record a failed VMI once, with the backoff before it is replaced.
        let start_failure = vm["status"]["startFailure"].clone();
        if let Some(v) = vmi.as_ref().filter(|_| phase == "Failed") {
            let vuid = meta::uid(v);
            if start_failure["lastFailedVMIUID"] != vuid {
                let retries = start_failure["retries"].as_u64().unwrap_or(0) + 1;
                let after =
                    now() + chrono::Duration::from_std(backoff(retries)).unwrap_or_default();
                let message = v["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .and_then(|c| c["message"].as_str())
                    .unwrap_or("the VMI failed")
                    .to_string();
                failure = Some(json!({
                    "retries": retries,
                    "lastFailedVMIUID": vuid,
                    "retryAfterTimestamp": ts(after),
                    "message": message,
                }));
            }
        }
        let failure_now = failure.clone().unwrap_or(start_failure);
        let retry_after = parse_ts(&failure_now["retryAfterTimestamp"]);
        let may_retry = retry_after.is_none_or(|t| now() >= t);

        let request = vm["status"]["stateChangeRequests"]
            .as_array()
            .and_then(|a| a.first())
            .cloned();
        let mut want_create = false;
        if let Some(req) = request {
            match req["action"].as_str().unwrap_or("") {
                "Stop" => {
                    let target = req["uid"].as_str();
                    match &vmi {
                        Some(v) if target.is_none_or(|u| u == meta::uid(v)) => {
                            if !vmi_deleting {
                                self.delete_vmi(key)?;
                            }
                        }
                        _ => pop_request = true,
                    }
                }
                "Start" => match &vmi {
                    Some(_) if terminal => {
                        if !vmi_deleting {
                            self.delete_vmi(key)?;
                        }
                    }
                    Some(_) if vmi_deleting => {}
                    Some(_) => pop_request = true,
                    None if restoring => requeue = Some(Duration::from_secs(2)),
                    None => {
                        want_create = true;
                        pop_request = true;
                    }
                },
                _ => pop_request = true,
            }
        } else {
            match strategy.as_str() {
                "Halted" if vmi.is_some() && !vmi_deleting => self.delete_vmi(key)?,
                "Always" | "RerunOnFailure" => match &vmi {
                    None => want_create = true,
                    Some(_) if vmi_deleting => {}
                    Some(_) if phase == "Failed" => {
                        if may_retry {
                            self.delete_vmi(key)?;
                        } else {
                            outcome.crash_loop = true;
                            requeue = retry_after
                                .and_then(|t| (t - now()).to_std().ok())
                                .map(|d| d + Duration::from_millis(100));
                        }
                    }
                    Some(_) if phase == "Succeeded" && strategy == "Always" => {
                        self.delete_vmi(key)?;
                    }
                    Some(_) => {}
                },
                "Once" if vmi.is_none() => want_create = true,
                _ => {}
            }
        }
        if want_create {
            if restoring {
                want_create = false;
                pop_request = false;
                requeue = Some(Duration::from_secs(2));
            } else if let Some(p) = self.volumes_ready(&key.namespace, &typed) {
                want_create = false;
                pop_request = false;
                requeue = Some(Duration::from_secs(if p.transient { 2 } else { 5 }));
                outcome.volume_problem = Some(p);
            }
        }
        if want_create {
            self.create_vmi(&vm, &typed)?;
        }

        // A VMI that has run for a minute ends the crash loop.
        let clear_failure = phase == "Running"
            && vmi
                .as_ref()
                .and_then(|v| running_since(v))
                .is_some_and(|t| now() - t > chrono::Duration::seconds(60));
        if phase == "Running" && !failure_now.is_null() && !clear_failure {
            requeue = Some(requeue.unwrap_or(Duration::from_secs(10)));
        }
        let vmi_now = if want_create {
            ignore_not_found(store.get(vmi_res(), &key.namespace, &key.name))?
        } else {
            vmi.clone()
        };
        let generation = meta::generation(&vm);
        let created = vmi_now.is_some();
        let status_strategy = strategy.clone();
        let vm_for_event = vm.clone();
        let problem = outcome.volume_problem.clone();
        update_status_with(store.as_ref(), vm_res(), key, |o| {
            if pop_request {
                if let Some(a) = o["status"]["stateChangeRequests"].as_array_mut() {
                    if !a.is_empty() {
                        a.remove(0);
                    }
                }
                if o["status"]["stateChangeRequests"]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
                {
                    if let Some(st) = o["status"].as_object_mut() {
                        st.remove("stateChangeRequests");
                    }
                }
            }
            if let Some(f) = &failure {
                o["status"]["startFailure"] = f.clone();
            }
            if clear_failure {
                if let Some(st) = o["status"].as_object_mut() {
                    st.remove("startFailure");
                }
            }
            write_vm_status(
                o,
                vmi_now.as_deref(),
                &status_strategy,
                generation,
                created,
                problem.as_ref(),
                outcome.crash_loop,
                restoring,
            );
        })?;
        if let Some(f) = &failure {
            self.rt.recorder().record(
                &vm_for_event,
                EventType::Warning,
                "VMIFailed",
                &format!(
                    "the VMI failed: {}; retry {} after {}",
                    f["message"].as_str().unwrap_or(""),
                    f["retries"],
                    f["retryAfterTimestamp"].as_str().unwrap_or("")
                ),
            );
        }
        if let Some(p) = &outcome.volume_problem {
            if vm["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .is_none_or(|c| c["reason"] != p.reason)
            {
                self.rt
                    .recorder()
                    .record(&vm_for_event, EventType::Warning, p.reason, &p.message);
            }
        }
        Ok(match requeue {
            Some(d) => Action::Requeue(d),
            None if want_create => Action::Requeue(Duration::from_millis(200)),
            None => Action::AwaitChange,
        })
    }
}

/// Writes the fields this controller owns: printableStatus, ready, created, runStrategy,
/// observed generation and the Ready, AgentConnected and Failure conditions.
#[allow(clippy::too_many_arguments)]
fn write_vm_status(
    o: &mut Value,
    vmi: Option<&Value>,
    strategy: &str,
    generation: i64,
    created: bool,
    problem: Option<&VolumeProblem>,
    crash_loop: bool,
    restoring: bool,
) {
    let phase = vmi
        .and_then(|v| v["status"]["phase"].as_str())
        .unwrap_or("");
    let deleting = vmi.is_some_and(meta::is_deleting);
    let paused = vmi.is_some_and(|v| api::condition(v, "Paused") == Some(true));
    let vmi_cond = |ty: &str| -> Option<Value> {
        vmi.and_then(|v| v["status"]["conditions"].as_array())
            .and_then(|c| c.iter().find(|c| c["type"] == ty))
            .cloned()
    };
    let printable = match (vmi, phase) {
        (None, _) if problem.is_some_and(|p| p.transient) && strategy != "Halted" => {
            "WaitingForVolumeBinding"
        }
        (None, _) => "Stopped",
        (Some(_), _) if deleting => "Stopping",
        (Some(_), "Running") if paused => "Paused",
        (Some(_), "Running") => "Running",
        (Some(_), "Failed") if crash_loop => "CrashLoopBackOff",
        (Some(_), "Failed") | (Some(_), "Succeeded") => "Stopped",
        (Some(_), _) => "Starting",
    };
    let ready = phase == "Running"
        && !deleting
        && api::condition(vmi.unwrap_or(&Value::Null), "Ready") == Some(true);
    {
        let st = meta::ensure_object(o, "status");
        st.insert("printableStatus".into(), json!(printable));
        st.insert("ready".into(), json!(ready));
        st.insert("created".into(), json!(created));
        st.insert("runStrategy".into(), json!(strategy));
        st.insert("observedGeneration".into(), json!(generation));
        st.insert("desiredGeneration".into(), json!(generation));
    }
    if ready {
        api::set_condition(o, "Ready", true, "Running", "the VMI is running");
    } else if let Some(p) = problem {
        api::set_condition(o, "Ready", false, p.reason, &p.message);
    } else if restoring && vmi.is_none() {
        api::set_condition(
            o,
            "Ready",
            false,
            "RestoreInProgress",
            "a restore is in progress; the VM starts when it completes",
        );
    } else if let Some(c) = vmi_cond("Ready").filter(|_| phase == "Failed") {
        api::set_condition(
            o,
            "Ready",
            false,
            c["reason"].as_str().unwrap_or("Failed"),
            c["message"].as_str().unwrap_or(""),
        );
    } else if vmi.is_none() {
        api::set_condition(o, "Ready", false, "VMINotExists", "the VMI does not exist");
    } else if deleting {
        api::set_condition(o, "Ready", false, "Stopping", "the VMI is stopping");
    } else {
        let (reason, msg) = vmi_cond("Ready")
            .map(|c| {
                (
                    c["reason"].as_str().unwrap_or("Starting").to_string(),
                    c["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .unwrap_or_else(|| ("Starting".into(), "the VMI is starting".into()));
        api::set_condition(o, "Ready", false, &reason, &msg);
    }
    match vmi_cond("AgentConnected") {
        Some(c) if c["status"] == "True" && phase == "Running" => {
            api::set_condition(
                o,
                "AgentConnected",
                true,
                c["reason"].as_str().unwrap_or("GuestAgentPing"),
                c["message"].as_str().unwrap_or(""),
            );
        }
        Some(c) if phase == "Running" => {
            api::set_condition(
                o,
                "AgentConnected",
                false,
                c["reason"].as_str().unwrap_or("GuestAgentNotResponding"),
                c["message"].as_str().unwrap_or(""),
            );
        }
        _ => api::set_condition(
            o,
            "AgentConnected",
            false,
            "NotRunning",
            "the VM is not running",
        ),
    }
    let failure = o["status"]["startFailure"].clone();
    if !failure.is_null() && phase != "Running" {
        api::set_condition(
            o,
            "Failure",
            true,
            "VMIFailed",
            failure["message"].as_str().unwrap_or("the VMI failed"),
        );
    } else if api::condition(o, "Failure").is_some() {
        api::set_condition(o, "Failure", false, "NoFailure", "");
    }
}

impl Reconciler for VmReconciler {
    fn name(&self) -> &'static str {
        "virtualmachine"
    }
    fn resource(&self) -> &'static Resource {
        vm_res()
    }
    fn watches(&self) -> Vec<(&'static Resource, Mapper)> {
        vec![(vmi_res(), map_to_owner("VirtualMachine"))]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        Box::pin(async move {
            let (rt, key) = (self.rt.clone(), key.clone());
            // Store reads and writes block on fsync; keep them off the async workers.
            tokio::task::spawn_blocking(move || VmReconciler { rt }.sync(&key))
                .await
                .map_err(|e| Error::internal(format!("VM reconcile panicked: {e}")))?
        })
    }
}
