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
    /// Clone a VM (or a VM snapshot) into a new VM with a new MAC, serial and firmware UUID.
    Clone(CloneArgs),
    /// Reset a stopped VM's guest identity on its disks (machine-id, SSH host keys, logs,
    /// shell history), as virt-sysprep does.
    Seal { vm: String },
}

#[derive(Args)]
pub struct CloneArgs {
    /// The source VM (or, with --from-snapshot, the snapshot's VM, for naming only).
    pub source: String,
    /// Name of the new VM (default: clone-<source>-<random>).
    #[arg(long)]
    pub target: Option<String>,
    /// Clone from this VirtualMachineSnapshot instead of the live VM.
    #[arg(long)]
    pub from_snapshot: Option<String>,
    /// A MAC for an interface, IFACE=MAC (others get fresh ones). Repeatable.
    #[arg(long = "new-mac")]
    pub new_mac: Vec<String>,
    /// The clone's SMBIOS serial (default: a fresh one).
    #[arg(long)]
    pub serial: Option<String>,
    /// Reset the clone's guest identity (machine-id, SSH host keys, logs, history).
    #[arg(long)]
    pub seal: bool,
    /// Set a label on the clone, KEY=VALUE. Repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Start the clone once it is ready.
    #[arg(long)]
    pub start: bool,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub wait: bool,
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
        SnapCmd::Clone(a) => clone(c, a),
        SnapCmd::Seal { vm } => {
            let out = crate::vm_cli::vm_action(c, &vm, "seal", &json!({}))?;
            for v in out["sealed"].as_array().into_iter().flatten() {
                let actions: Vec<&str> = v["actions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str())
                    .collect();
                println!(
                    "volume {}: sealed with {} ({})",
                    v["volume"].as_str().unwrap_or(""),
                    v["tool"].as_str().unwrap_or(""),
                    if actions.is_empty() {
                        "nothing to reset".to_string()
                    } else {
                        actions.join(", ")
                    }
                );
            }
            Ok(())
        }
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

fn split_kv(s: &str, what: &str) -> Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| Error::bad_request(format!("{what} must be KEY=VALUE, got {s:?}")))
}

fn clone(c: &Client, a: CloneArgs) -> Result<()> {
    let res = lookup("vmclone").expect("registered");
    let name = a.name.clone().unwrap_or_else(|| {
        format!(
            "{}-clone-{}",
            a.source,
            // Milliseconds, so that clones started together from a script get distinct names.
            chrono::Utc::now().format("%Y%m%d-%H%M%S-%3f")
        )
    });
    let source = match &a.from_snapshot {
        Some(s) => {
            json!({"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot", "name": s})
        }
        None => json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": a.source}),
    };
    let mut spec = json!({"source": source});
    if let Some(t) = &a.target {
        spec["target"] = json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": t});
    }
    if !a.new_mac.is_empty() {
        let mut m = serde_json::Map::new();
        for kv in &a.new_mac {
            let (k, v) = split_kv(kv, "--new-mac")?;
            m.insert(k, json!(v));
        }
        spec["newMacAddresses"] = Value::Object(m);
    }
    if let Some(s) = &a.serial {
        spec["newSMBiosSerial"] = json!(s);
    }
    let mut obj = json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone", "metadata": {"name": name}, "spec": spec});
    if a.seal {
        meta::set_annotation(&mut obj, "clone.vmsnap.io/seal", "true");
    }
    let labels: Vec<(String, String)> = a
        .labels
        .iter()
        .map(|l| split_kv(l, "--label"))
        .collect::<Result<_>>()?;
    c.create(res, &c.namespace, &obj)?;
    println!("virtualmachineclone.clone.kubevirt.io/{name} created");
    if !a.wait && !a.start && labels.is_empty() {
        return Ok(());
    }
    let pb = ProgressBar::new(1000);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(100));
    let pb2 = pb.clone();
    let o = crate::kubectl::wait_for(
        c,
        res,
        &c.namespace,
        &name,
        Duration::from_secs(3600),
        move |o| {
            let phase = o["status"]["phase"].as_str().unwrap_or("Pending");
            let vols = o["status"]["volumeProgress"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !vols.is_empty() {
                let pct: f64 = vols
                    .iter()
                    .map(|v| {
                        v["progress"]
                            .as_str()
                            .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok())
                            .unwrap_or(0.0)
                    })
                    .sum::<f64>()
                    / vols.len() as f64;
                pb2.set_position((pct * 10.0) as u64);
                let per: Vec<String> = vols
                    .iter()
                    .map(|v| {
                        format!(
                            "{} {}",
                            v["volumeName"].as_str().unwrap_or(""),
                            v["progress"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                pb2.set_message(format!("{phase}: {}", per.join(", ")));
            } else {
                pb2.set_message(format!("{phase}: {}", condition_message(o, "Progressing")));
            }
            matches!(phase, "Succeeded" | "Failed")
        },
    );
    pb.finish_and_clear();
    let o = o?;
    if o["status"]["phase"] == "Failed" {
        return Err(Error::internal(format!(
            "clone failed: {}",
            condition_message(&o, "Ready")
        )));
    }
    let target = o["status"]["targetName"].as_str().unwrap_or("").to_string();
    println!(
        "clone complete: VirtualMachine {target} ({} strategy)",
        o["status"]["strategy"].as_str().unwrap_or("?")
    );
    if let Some(s) = o["status"]["sealed"].as_str() {
        println!("sealed: {s}");
    }
    let vmres = lookup("vm").expect("registered");
    if !labels.is_empty() {
        let mut l = serde_json::Map::new();
        for (k, v) in labels {
            l.insert(k, json!(v));
        }
        c.patch_merge(
            vmres,
            &c.namespace,
            &target,
            &json!({"metadata": {"labels": l}}),
        )?;
        println!("labels set on {target}");
    }
    if a.start {
        crate::vm_cli::vm_action(c, &target, "start", &json!({}))?;
        println!("{target} starting");
    }
    Ok(())
}
