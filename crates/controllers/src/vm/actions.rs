//! KubeVirt's `subresources.kubevirt.io` actions, without HTTP: the API server's adapter calls
//! [`action`] and [`stream`].
//!
//! - `start`, `stop`, `restart` (virtualmachines): change `runStrategy` (or the deprecated
//!   `running`) or queue `status.stateChangeRequests`, as KubeVirt does. They are refused while
//!   a restore or snapshot holds the VM.
//! - `freeze` (`{"unfreezeTimeoutSeconds": N}`, default 300), `unfreeze`, `fsfreeze-status`,
//!   `pause`, `unpause`, `guest-exec` (`{"command": [...], "stdin": "...",
//!   "timeoutSeconds": N}` answering `{exitCode, stdout, stderr}`), and `console-log`
//!   (`{"offset": N}` answering `{data, offset, running}`, for polling clients): both kinds.
//! - `console` (GET): the serial console output, followed while the VM runs.

use super::machine::status_flag;
use super::runtime::VmRuntime;
use super::{vm_res, vmi_res};
use crate::runtime::{update_status_with, update_with, ObjectKey};
use api::types::kubevirt::VirtualMachine;
use api::{meta, Error};
use bytes::Bytes;
use futures::stream::BoxStream;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_UNFREEZE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> api::Result<T> + Send + 'static,
) -> api::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(e.to_string()))?
}

/// Runs a PUT action.
pub async fn action(
    rt: &Arc<VmRuntime>,
    resource: &str,
    namespace: &str,
    name: &str,
    action: &str,
    body: Value,
) -> api::Result<Value> {
    let ns = namespace.to_string();
    let nm = name.to_string();
    match action {
        "start" | "stop" | "restart" => {
            if resource != "virtualmachines" {
                return Err(Error::bad_request(format!(
                    "{action} is an action of virtualmachines, not {resource}"
                )));
            }
            let rt = rt.clone();
            let action = action.to_string();
            blocking(move || run_state_action(&rt, &ns, &nm, &action)).await
        }
        "freeze" => {
            let secs = body["unfreezeTimeoutSeconds"]
                .as_u64()
                .or_else(|| body["unfreezeTimeout"].as_str().and_then(parse_secs));
            let timeout = secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_UNFREEZE_TIMEOUT);
            let f = rt.freeze(namespace, name, Duration::from_secs(30)).await?;
            let n = f.filesystems();
            rt.hold_freeze(f, timeout);
            Ok(json!({"frozen": n, "unfreezeTimeoutSeconds": timeout.as_secs()}))
        }
        "unfreeze" => {
            rt.thaw(namespace, name).await?;
            Ok(json!({"thawed": true}))
        }
        "fsfreeze-status" => Ok(json!({"status": rt.fsfreeze_status(namespace, name).await?})),
        "pause" => {
            rt.pause(namespace, name).await?;
            Ok(json!({"paused": true}))
        }
        "unpause" => {
            rt.resume(namespace, name).await?;
            Ok(json!({"paused": false}))
        }
        "guest-exec" => {
            let cmd: Vec<String> = body["command"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let Some((path, args)) = cmd.split_first() else {
                return Err(Error::bad_request(
                    "guest-exec needs a body like {\"command\": [\"/bin/sh\", \"-c\", \"...\"]}",
                ));
            };
            let stdin = body["stdin"].as_str().map(|s| s.as_bytes().to_vec());
            let timeout = body["timeoutSeconds"]
                .as_u64()
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_EXEC_TIMEOUT);
            let out = rt
                .guest_exec(namespace, name, path, args, stdin.as_deref(), timeout)
                .await?;
            Ok(json!({
                "exitCode": out.exit_code,
                "stdout": out.stdout_str(),
                "stderr": out.stderr_str(),
            }))
        }
        "console-log" => {
            let offset = body["offset"].as_u64().unwrap_or(0);
            let (buf, next, running) = rt.console_read(namespace, name, offset, 256 * 1024)?;
            Ok(json!({
                "data": String::from_utf8_lossy(&buf),
                "offset": next,
                "running": running,
            }))
        }
        other => Err(Error::not_found(format!(
            "{resource} have no action {other:?} (try start, stop, restart, freeze, unfreeze, guest-exec, console)"
        ))),
    }
}

/// Runs a GET (streaming) action.
pub async fn stream(
    rt: &Arc<VmRuntime>,
    _resource: &str,
    namespace: &str,
    name: &str,
    action: &str,
) -> api::Result<BoxStream<'static, std::io::Result<Bytes>>> {
    match action {
        "console" => rt.console_stream(namespace, name),
        other => Err(Error::not_found(format!(
            "no streaming action {other:?} (try console)"
        ))),
    }
}

fn parse_secs(s: &str) -> Option<u64> {
    api::types::parse_duration(s).map(|d| d.as_secs())
}

fn run_state_action(rt: &VmRuntime, ns: &str, name: &str, action: &str) -> api::Result<Value> {
    let store = rt.store().clone();
    let key = ObjectKey::new(ns, name);
    let vm = store.get(vm_res(), ns, name)?;
    if action != "stop" && status_flag(&vm, "restoreInProgress") {
        return Err(Error::conflict(format!(
            "VirtualMachine {key} is being restored; {action} it after the restore completes"
        )));
    }
    if status_flag(&vm, "snapshotInProgress") {
        return Err(Error::conflict(format!(
            "VirtualMachine {key} is being snapshotted; its run strategy cannot change until the snapshot is taken"
        )));
    }
    let typed: VirtualMachine = api::types::decode(Value::clone(&vm))?.0;
    let spec = typed.spec.unwrap_or_default();
    let uses_running = spec.running.is_some();
    let strategy = spec.effective_run_strategy().to_string();
    let vmi = crate::runtime::ignore_not_found(store.get(vmi_res(), ns, name))?;
    let vmi_active = vmi.as_ref().is_some_and(|v| {
        !meta::is_deleting(v)
            && !matches!(v["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    });
    let set_strategy = |s: &str| -> api::Result<()> {
        update_with(store.as_ref(), vm_res(), &key, |o| {
            if uses_running {
                o["spec"]["running"] = json!(s != "Halted");
            } else {
                o["spec"]["runStrategy"] = json!(s);
            }
        })
        .map(|_| ())
    };
    let push = |reqs: Vec<Value>| -> api::Result<()> {
        update_status_with(store.as_ref(), vm_res(), &key, |o| {
            let st = meta::ensure_object(o, "status");
            let list = st.entry("stateChangeRequests").or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.extend(reqs.iter().cloned());
            }
        })
        .map(|_| ())
    };
    match action {
        "start" => {
            if vmi_active {
                return Err(Error::conflict(format!(
                    "VirtualMachine {key} is already running"
                )));
            }
            match strategy.as_str() {
                "Halted" => set_strategy("Always")?,
                "Always" => {}
                _ => push(vec![json!({"action": "Start"})])?,
            }
        }
        "stop" => match strategy.as_str() {
            "Halted" | "Manual" => {
                if vmi.is_none() {
                    return Err(Error::conflict(format!(
                        "VirtualMachine {key} is not running"
                    )));
                }
                let uid = vmi.as_deref().map(meta::uid).unwrap_or("");
                push(vec![json!({"action": "Stop", "uid": uid})])?;
            }
            _ => set_strategy("Halted")?,
        },
        _ => {
            let Some(v) = vmi.as_ref().filter(|_| vmi_active) else {
                return Err(Error::conflict(format!(
                    "VirtualMachine {key} is not running; start it instead"
                )));
            };
            push(vec![
                json!({"action": "Stop", "uid": meta::uid(v)}),
                json!({"action": "Start"}),
            ])?;
        }
    }
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "message": format!("{action} of {key} accepted")}),
    )
}
