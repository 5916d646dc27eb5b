//! Snapshot and restore verbs, with progress shown while they run.

use api::registry::lookup;
use api::{meta, Error, Result};
use clap::{Args, Subcommand};
use client::Client;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Subcommand)]
pub enum SnapCmd {
    /// Create, list and delete VM snapshots.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Restore a VM from a snapshot (or into a new VM with --target).
    Restore(RestoreArgs),
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot a VM; online VMs are frozen through the guest agent around the storage step.
    Create {
        vm: String,
        #[arg(long)]
        name: Option<String>,
        /// failureDeadline, e.g. 1m (0 for none; default 5m).
        #[arg(long)]
        deadline: Option<String>,
        /// Keep the snapshot's content when the snapshot object is deleted.
        #[arg(long)]
        retain: bool,
        #[arg(long)]
        wait: bool,
    },
    /// List snapshots, optionally of one VM.
    List { vm: Option<String> },
    /// Delete a snapshot (and, with deletionPolicy Delete, its volume snapshots).
    Delete { name: String },
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The VM to restore (also the snapshot's source unless --target names a new VM).
    pub vm: String,
    #[arg(long)]
    pub snapshot: String,
    /// targetReadinessPolicy: WaitGracePeriod, StopTarget, FailImmediate or WaitEventually.
    #[arg(long)]
    pub policy: Option<String>,
    /// volumeRestorePolicy: RandomizeNames, InPlace or PrefixTargetName.
    #[arg(long)]
    pub volume_policy: Option<String>,
    /// Restore into a new VM of this name instead of the source.
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub wait: bool,
}

pub fn run(c: &Client, cmd: SnapCmd) -> Result<()> {
    match cmd {
        SnapCmd::Snapshot { cmd } => match cmd {
            SnapshotCmd::Create {
                vm,
                name,
                deadline,
                retain,
                wait,
            } => create(c, &vm, name, deadline, retain, wait),
            SnapshotCmd::List { vm } => list(c, vm.as_deref()),
            SnapshotCmd::Delete { name } => {
                let res = lookup("vmsnapshot").expect("registered");
                c.delete(res, &c.namespace, &name)?;
                println!("virtualmachinesnapshot.snapshot.kubevirt.io/{name} deleted");
                Ok(())
            }
        },
        SnapCmd::Restore(a) => restore(c, a),
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(100));
    pb.set_message(msg.to_string());
    pb
}

fn condition_message(o: &Value, ty: &str) -> String {
    o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .map(|c| {
            format!(
                "{}: {}",
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

/// Follows an object until Ready or Failure, showing its progress; returns the final object.
fn follow(c: &Client, kind: &str, name: &str, what: &str) -> Result<Value> {
    let res = lookup(kind).expect("registered");
    let pb = spinner(&format!("{what} {name}: starting"));
    let pb2 = pb.clone();
    let out = crate::kubectl::wait_for(
        c,
        res,
        &c.namespace,
        name,
        Duration::from_secs(600),
        move |o| {
            let phase =
                o["status"]["phase"]
                    .as_str()
                    .unwrap_or(if o["status"]["complete"] == true {
                        "Complete"
                    } else {
                        "InProgress"
                    });
            pb2.set_message(format!(
                "{what} {name}: {phase} — {}",
                condition_message(o, "Progressing")
            ));
            api::condition(o, "Ready") == Some(true)
                || api::condition(o, "Failure") == Some(true)
                || o["status"]["phase"] == "Failed"
        },
    );
    pb.finish_and_clear();
    out
}

fn create(
    c: &Client,
    vm: &str,
    name: Option<String>,
    deadline: Option<String>,
    retain: bool,
    wait: bool,
) -> Result<()> {
    let res = lookup("vmsnapshot").expect("registered");
    let name =
        name.unwrap_or_else(|| format!("{vm}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S")));
    let mut spec =
        json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm}});
    if let Some(d) = deadline {
        spec["failureDeadline"] = json!(d);
    }
    if retain {
        spec["deletionPolicy"] = json!("Retain");
    }
    let obj = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": name}, "spec": spec});
    c.create(res, &c.namespace, &obj)?;
    println!("virtualmachinesnapshot.snapshot.kubevirt.io/{name} created");
    if !wait {
        return Ok(());
    }
    let o = follow(c, "vmsnapshot", &name, "snapshot")?;
    print_snapshot_result(&o)
}

fn print_snapshot_result(o: &Value) -> Result<()> {
    let st = &o["status"];
    let inds: Vec<&str> = st["indications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str())
        .collect();
    println!("phase:       {}", st["phase"].as_str().unwrap_or("?"));
    println!(
        "indications: {}",
        if inds.is_empty() {
            "offline".into()
        } else {
            inds.join(", ")
        }
    );
    if let Some(w) = st["freezeWindow"].as_str() {
        println!(
            "guest held:  {w} ({})",
            st["quiesce"]["method"].as_str().unwrap_or("")
        );
    }
    let inc: Vec<&str> = st["snapshotVolumes"]["includedVolumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let exc: Vec<&str> = st["snapshotVolumes"]["excludedVolumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    println!(
        "volumes:     {} included, {} excluded{}",
        inc.len(),
        exc.len(),
        if exc.is_empty() {
            String::new()
        } else {
            format!(" ({})", exc.join(", "))
        }
    );
    if st["phase"] == "Failed" {
        return Err(Error::internal(format!(
            "snapshot failed: {}",
            st["error"]["message"].as_str().unwrap_or("")
        )));
    }
    Ok(())
}

fn list(c: &Client, vm: Option<&str>) -> Result<()> {
    let res = lookup("vmsnapshot").expect("registered");
    let l = c.list(res, Some(&c.namespace), None)?;
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header([
        "NAME",
        "VM",
        "PHASE",
        "READY",
        "INDICATIONS",
        "GUEST HELD",
        "AGE",
    ]);
    for s in l["items"].as_array().into_iter().flatten() {
        let src = s["spec"]["source"]["name"].as_str().unwrap_or("");
        if vm.is_some_and(|v| v != src) {
            continue;
        }
        let inds: Vec<&str> = s["status"]["indications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.as_str())
            .collect();
        t.add_row([
            meta::name(s).to_string(),
            src.to_string(),
            s["status"]["phase"].as_str().unwrap_or("").to_string(),
            s["status"]["readyToUse"]
                .as_bool()
                .unwrap_or(false)
                .to_string(),
            inds.join(","),
            s["status"]["freezeWindow"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
            meta::age(s["metadata"]["creationTimestamp"].as_str().unwrap_or("")),
        ]);
    }
    println!("{t}");
    Ok(())
}

fn restore(c: &Client, a: RestoreArgs) -> Result<()> {
    let res = lookup("vmrestore").expect("registered");
    let target = a.target.clone().unwrap_or_else(|| a.vm.clone());
    let name = a.name.clone().unwrap_or_else(|| {
        format!(
            "{target}-restore-{}",
            chrono::Utc::now().format("%Y%m%d-%H%M%S")
        )
    });
    let mut spec = json!({
        "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target},
        "virtualMachineSnapshotName": a.snapshot,
    });
    if let Some(p) = &a.policy {
        spec["targetReadinessPolicy"] = json!(p);
    }
    if let Some(p) = &a.volume_policy {
        spec["volumeRestorePolicy"] = json!(p);
    }
    let obj = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore", "metadata": {"name": name}, "spec": spec});
    c.create(res, &c.namespace, &obj)?;
    println!("virtualmachinerestore.snapshot.kubevirt.io/{name} created");
    if !a.wait {
        return Ok(());
    }
    let o = follow(c, "vmrestore", &name, "restore")?;
    if api::condition(&o, "Failure") == Some(true) {
        return Err(Error::internal(format!(
            "restore failed: {}",
            condition_message(&o, "Failure")
        )));
    }
    for r in o["status"]["restores"].as_array().into_iter().flatten() {
        println!(
            "volume {:<12} -> claim {}",
            r["volumeName"].as_str().unwrap_or(""),
            r["persistentVolumeClaim"].as_str().unwrap_or("")
        );
    }
    println!(
        "restore complete: VirtualMachine {target} now matches snapshot {}",
        a.snapshot
    );
    Ok(())
}
