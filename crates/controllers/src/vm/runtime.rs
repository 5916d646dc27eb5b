//! [`VmRuntime`]: the live QEMU processes of this host, one per running VMI.
//!
//! QEMU runs daemonized with its sockets and serial log in `<data_dir>/run/vms/<ns>_<name>/`,
//! so it outlives the daemon. At start the runtime re-attaches to every live QEMU it finds there
//! (pidfile plus QMP socket) and never kills one because the daemon restarted. A monitor task
//! per VM notices QEMU exiting (a crash unless a stop was asked for or the guest shut down) and
//! keeps the AgentConnected condition true only while guest-ping answers.

use super::spec::{LaunchPlan, PlannedNic, VolumeProblem, VolumeResolver};
use super::vmi_res;
use crate::events::{EventType, Recorder};
use crate::runtime::{update_status_with, ObjectKey};
use crate::Context;
use api::types::kubevirt::VirtualMachineInstance;
use api::{meta, Error};
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use store::Store;
use virt::{Accel, AccelMode, ExecOutput, FreezeStatus, FreezeWindow};

/// Grace period of a stop when the spec sets none. KubeVirt defaults to 180 s; our guests
/// power off in about a second, and a stuck one should not hold a stop for three minutes.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How long the KVM probe may take before TCG is chosen.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(8);
/// Condition reason of a pause made by [`VmRuntime::pause`]; the daemon resumes such VMs when
/// it starts, since only a snapshot in flight pauses a VM.
pub const PAUSED_REASON: &str = "PausedByVmsnap";
const RUN_META: &str = "vmi.json";
const AGENT_PING: Duration = Duration::from_secs(2);

/// How the runtime is set up.
pub struct RuntimeOptions {
    pub accel: AccelMode,
    /// The guest image directory (kernel, initrd, rootfs).
    pub guest_dir: PathBuf,
    pub volumes: Arc<dyn VolumeResolver>,
}

/// What is recorded next to a running QEMU, so that a restarted daemon knows whose it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunMeta {
    namespace: String,
    name: String,
    uid: String,
    accel: Accel,
    interfaces: Vec<(String, String)>,
    ephemeral: Vec<PathBuf>,
}

/// One live QEMU.
pub(crate) struct Vm {
    pub key: ObjectKey,
    /// The VMI this QEMU runs.
    pub uid: String,
    pub running: virt::Running,
    pub accel: Accel,
    pub interfaces: Vec<PlannedNic>,
    pub reattached: bool,
    pub stopping: AtomicBool,
    agent: AtomicBool,
    /// Agent commands in flight; the monitor does not ping meanwhile, because the agent
    /// serialises commands and a ping stuck behind a long guest-exec is not a dead agent.
    busy: AtomicUsize,
    ephemeral: Vec<PathBuf>,
}

struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Vm {
    fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(&self.busy)
    }

    pub fn pid(&self) -> i32 {
        self.running.pid()
    }
}

/// Why a launch did not happen.
#[derive(Debug)]
pub(crate) enum LaunchError {
    /// A volume or the spec is not usable (yet).
    Spec(VolumeProblem),
    /// QEMU refused to start.
    Qemu(String),
}

/// The VM runtime of this host. Shared by the VM and VMI controllers, the action handlers and
/// the snapshot controller.
pub struct VmRuntime {
    store: Arc<dyn Store>,
    recorder: Recorder,
    run_root: PathBuf,
    guest_dir: PathBuf,
    volumes: Arc<dyn VolumeResolver>,
    accel_mode: AccelMode,
    probe: tokio::sync::OnceCell<virt::accel::Probe>,
    vms: Mutex<HashMap<ObjectKey, Arc<Vm>>>,
    /// Freezes made through the `freeze` action, held until `unfreeze` or their timeout.
    held: Mutex<HashMap<ObjectKey, Frozen>>,
    node_name: String,
    me: Weak<VmRuntime>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn virt_err(e: virt::Error) -> Error {
    if e.is_timeout() {
        Error::new(api::ErrorKind::Timeout, e.to_string())
    } else {
        Error::internal(e.to_string())
    }
}

/// The host name, reported as the VMI's `nodeName`.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Runs a status write on the blocking pool: store writes wait for an fsync.
pub(crate) async fn write_status(
    store: Arc<dyn Store>,
    key: ObjectKey,
    f: impl FnMut(&mut Value) + Send + 'static,
) -> api::Result<Arc<Value>> {
    tokio::task::spawn_blocking(move || update_status_with(store.as_ref(), vmi_res(), &key, f))
        .await
        .map_err(|e| Error::internal(format!("status writer failed: {e}")))?
}

/// Sets `status.phase`, appending to `phaseTransitionTimestamps` when it changes.
pub(crate) fn set_phase(o: &mut Value, phase: &str) {
    if o["status"]["phase"] == phase {
        return;
    }
    let st = meta::ensure_object(o, "status");
    st.insert("phase".into(), json!(phase));
    let list = st
        .entry("phaseTransitionTimestamps")
        .or_insert_with(|| json!([]));
    if let Some(a) = list.as_array_mut() {
        a.push(json!({"phase": phase, "phaseTransitionTimestamp": meta::now_rfc3339()}));
        if a.len() > 10 {
            a.remove(0);
        }
    }
}

impl VmRuntime {
    /// Starts the runtime: re-attaches to live QEMU processes, thaws and resumes every VM the
    /// store says was left frozen or paused, and starts the accelerator probe in the background.
    pub async fn start(ctx: &Context, opts: RuntimeOptions) -> api::Result<Arc<VmRuntime>> {
        let run_root = ctx.data_dir.join("run").join("vms");
        std::fs::create_dir_all(&run_root)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", run_root.display())))?;
        let rt = Arc::new_cyclic(|me| VmRuntime {
            store: ctx.store.clone(),
            recorder: ctx.recorder.clone(),
            run_root,
            guest_dir: opts.guest_dir,
            volumes: opts.volumes,
            accel_mode: opts.accel,
            probe: tokio::sync::OnceCell::new(),
            vms: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            node_name: node_name(),
            me: me.clone(),
        });
        rt.reattach_all().await;
        rt.recover_frozen().await;
        let bg = rt.clone();
        tokio::spawn(async move {
            let p = bg.accel_probe().await;
            tracing::info!(accel = %p.accel, "VM accelerator: {}", p.reason);
        });
        Ok(rt)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub(crate) fn volumes(&self) -> &dyn VolumeResolver {
        self.volumes.as_ref()
    }

    pub fn guest_dir(&self) -> &Path {
        &self.guest_dir
    }

    /// The accelerator VMs run with, probing once on first use.
    pub async fn accel_probe(&self) -> virt::accel::Probe {
        self.probe
            .get_or_init(|| virt::accel::probe_detailed(self.accel_mode, PROBE_TIMEOUT))
            .await
            .clone()
    }

    /// The run directory of a VM: `<data_dir>/run/vms/<namespace>_<name>`. Names are DNS
    /// labels, so `_` cannot be ambiguous; very long names are shortened with a hash because
    /// unix socket paths are limited to 107 bytes.
    pub fn run_dir(&self, namespace: &str, name: &str) -> PathBuf {
        let full = format!("{namespace}_{name}");
        let dir = if full.len() <= 48 {
            full
        } else {
            let h = super::spec::generated_mac(&full, "dir").replace(':', "");
            format!("{}-{h}", &full[..30])
        };
        self.run_root.join(dir)
    }

    pub(crate) fn live(&self, key: &ObjectKey) -> Option<Arc<Vm>> {
        lock(&self.vms).get(key).cloned()
    }

    fn live_vm(&self, namespace: &str, name: &str) -> api::Result<Arc<Vm>> {
        let key = ObjectKey::new(namespace, name);
        match self.live(&key) {
            Some(vm) if vm.running.is_alive() => Ok(vm),
            _ => Err(Error::precondition(format!(
                "VirtualMachineInstance {key} is not running"
            ))),
        }
    }

    /// True while a QEMU runs for the VMI.
    pub fn is_running(&self, namespace: &str, name: &str) -> bool {
        self.live_vm(namespace, name).is_ok()
    }

    /// The QEMU pid of a running VMI.
    pub fn qemu_pid(&self, namespace: &str, name: &str) -> Option<i32> {
        self.live_vm(namespace, name).ok().map(|v| v.pid())
    }

    async fn reattach_all(&self) {
        let Ok(entries) = std::fs::read_dir(&self.run_root) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Ok(text) = std::fs::read_to_string(dir.join(RUN_META)) else {
                continue;
            };
            let Ok(m) = serde_json::from_str::<RunMeta>(&text) else {
                tracing::warn!(dir = %dir.display(), "unreadable {RUN_META}; not re-attaching");
                continue;
            };
            match virt::attach(&dir).await {
                Ok(Some(running)) => {
                    let key = ObjectKey::new(&m.namespace, &m.name);
                    tracing::info!(vmi = %key, pid = running.pid(), "re-attached to running QEMU");
                    let vm = Arc::new(Vm {
                        key: key.clone(),
                        uid: m.uid,
                        running,
                        accel: m.accel,
                        interfaces: m
                            .interfaces
                            .into_iter()
                            .map(|(name, mac)| PlannedNic { name, mac })
                            .collect(),
                        reattached: true,
                        stopping: AtomicBool::new(false),
                        agent: AtomicBool::new(false),
                        busy: AtomicUsize::new(0),
                        ephemeral: m.ephemeral,
                    });
                    lock(&self.vms).insert(key, vm.clone());
                    self.spawn_monitor(vm);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot re-attach: {e}"),
            }
        }
    }

    /// Thaws every VM whose VMI says frozen and resumes every VM paused by us: the daemon
    /// that froze or paused it is gone, so nothing else would.
    async fn recover_frozen(&self) {
        let everything = meta::LabelSelector::default();
        let fields = meta::FieldSelector::default();
        let Ok(list) = self.store.list(vmi_res(), None, &everything, &fields) else {
            return;
        };
        let mut work = Vec::new();
        for vmi in &list.items {
            let key = ObjectKey::of(vmi);
            let frozen = vmi["status"]["fsFreezeStatus"] == "frozen";
            let paused = vmi["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "Paused" && c["status"] == "True" && c["reason"] == PAUSED_REASON
                })
            });
            if !frozen && !paused {
                continue;
            }
            let vm = self.live(&key);
            let store = self.store.clone();
            work.push(async move {
                if let Some(vm) = &vm {
                    if frozen {
                        let qga = vm.running.qga().with_deadline(Duration::from_secs(3));
                        match qga.fsfreeze_thaw().await {
                            Ok(n) => tracing::warn!(vmi = %key, "thawed {n} filesystems left frozen by a previous run"),
                            Err(e) => {
                                tracing::error!(vmi = %key, "cannot thaw a VM left frozen: {e}");
                                return;
                            }
                        }
                    }
                    if paused {
                        if let Err(e) = vm.running.resume().await {
                            tracing::error!(vmi = %key, "cannot resume a VM left paused: {e}");
                            return;
                        }
                        tracing::warn!(vmi = %key, "resumed a VM left paused by a previous run");
                    }
                }
                let _ = write_status(store, key, move |o| {
                    if let Some(st) = o["status"].as_object_mut() {
                        st.remove("fsFreezeStatus");
                    }
                    if paused {
                        api::set_condition(o, "Paused", false, "Resumed", "resumed after a daemon restart");
                    }
                })
                .await;
            });
        }
        futures::future::join_all(work).await;
    }

    /// Launches QEMU for `vmi`. `identity_uid` seeds generated MACs and UUIDs (the owning VM's
    /// uid, so they survive restarts of the VM).
    pub(crate) async fn launch(
        &self,
        vmi: &VirtualMachineInstance,
        identity_uid: &str,
    ) -> Result<Arc<Vm>, LaunchError> {
        let ns = vmi.metadata.namespace().to_string();
        let name = vmi.metadata.name().to_string();
        let key = ObjectKey::new(&ns, &name);
        let uid = vmi.metadata.uid.clone().unwrap_or_default();
        let spec = vmi.spec.clone().unwrap_or_default();
        let run_dir = self.run_dir(&ns, &name);
        let store = self.store.clone();
        let volumes = self.volumes.clone();
        let (guest_dir, rd) = (self.guest_dir.clone(), run_dir.clone());
        let (ns2, id) = (ns.clone(), identity_uid.to_string());
        let plan: LaunchPlan = tokio::task::spawn_blocking(move || {
            super::spec::plan(
                store.as_ref(),
                volumes.as_ref(),
                &ns2,
                &id,
                &spec,
                &guest_dir,
                &rd,
            )
        })
        .await
        .map_err(|e| LaunchError::Qemu(format!("planning failed: {e}")))?
        .map_err(LaunchError::Spec)?;
        // A QEMU left in the run dir by an older VMI of the same name is not ours to keep.
        if let Some(old) = self.live(&key) {
            if old.uid != uid {
                tracing::warn!(vmi = %key, pid = old.pid(), "killing QEMU of a deleted VMI");
                old.stopping.store(true, Ordering::SeqCst);
                let _ = old.running.kill().await;
                lock(&self.vms).remove(&key);
            } else if old.running.is_alive() {
                return Ok(old);
            }
        }
        if let Ok(Some(pid)) = virt::launcher::running_pid(&run_dir) {
            tracing::warn!(vmi = %key, pid, "killing an unmanaged QEMU in the run directory");
            if let Ok(Some(r)) = virt::attach(&run_dir).await {
                let _ = r.kill().await;
            }
        }
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| LaunchError::Qemu(format!("cannot create {}: {e}", run_dir.display())))?;
        let prep = plan.clone();
        tokio::task::spawn_blocking(move || prep.prepare())
            .await
            .map_err(|e| LaunchError::Qemu(e.to_string()))?
            .map_err(|e| LaunchError::Qemu(e.message))?;
        let accel = self.accel_probe().await.accel;
        let vspec = plan.to_vm_spec(&format!("{ns}/{name}"), accel);
        let m = RunMeta {
            namespace: ns.clone(),
            name: name.clone(),
            uid: uid.clone(),
            accel,
            interfaces: plan
                .nics
                .iter()
                .map(|n| (n.name.clone(), n.mac.clone()))
                .collect(),
            ephemeral: plan.ephemeral.iter().map(|(p, _)| p.clone()).collect(),
        };
        let meta_text = serde_json::to_string_pretty(&m).unwrap_or_default();
        if let Err(e) = std::fs::write(run_dir.join(RUN_META), meta_text) {
            return Err(LaunchError::Qemu(format!(
                "cannot write {}: {e}",
                run_dir.join(RUN_META).display()
            )));
        }
        let running = match virt::launch(&vspec, &run_dir).await {
            Ok(r) => r,
            Err(e) => {
                remove_files(&m.ephemeral);
                return Err(LaunchError::Qemu(e.to_string()));
            }
        };
        for msg in &plan.ignored {
            tracing::info!(vmi = %key, "{msg}");
        }
        let vm = Arc::new(Vm {
            key: key.clone(),
            uid,
            running,
            accel,
            interfaces: plan.nics.clone(),
            reattached: false,
            stopping: AtomicBool::new(false),
            agent: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            ephemeral: m.ephemeral,
        });
        lock(&self.vms).insert(key, vm.clone());
        self.spawn_monitor(vm.clone());
        Ok(vm)
    }

    /// Starts a graceful stop (ACPI power button, SIGKILL after `grace`) in the background.
    pub(crate) fn begin_stop(&self, vm: &Arc<Vm>, grace: Duration) {
        if vm.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let vm = vm.clone();
        tokio::spawn(async move {
            match vm.running.shutdown(grace).await {
                Ok(true) => tracing::info!(vmi = %vm.key, "guest powered off"),
                Ok(false) => {
                    tracing::warn!(vmi = %vm.key, ?grace, "guest did not power off in time; killed")
                }
                Err(e) => tracing::error!(vmi = %vm.key, "stop failed: {e}"),
            }
        });
    }

    /// SIGKILLs a VM's QEMU now (for a VMI that vanished without its finalizer).
    pub(crate) async fn kill(&self, vm: &Arc<Vm>) {
        vm.stopping.store(true, Ordering::SeqCst);
        if let Err(e) = vm.running.kill().await {
            tracing::error!(vmi = %vm.key, "kill failed: {e}");
        }
    }

    fn spawn_monitor(&self, vm: Arc<Vm>) {
        let me = self.me.clone();
        tokio::spawn(async move { monitor(me, vm).await });
    }

    /// Records how QEMU ended and forgets the VM.
    async fn on_exit(&self, vm: &Arc<Vm>) {
        let requested = vm.stopping.load(Ordering::SeqCst);
        let guest_shutdown = vm
            .running
            .qmp()
            .events()
            .iter()
            .any(|e| e.name == "SHUTDOWN");
        let (phase, reason, message, ty) = if requested {
            (
                "Succeeded",
                "Stopped",
                "the VM was stopped".to_string(),
                EventType::Normal,
            )
        } else if guest_shutdown {
            (
                "Succeeded",
                "GuestShutdown",
                "the guest shut itself down".to_string(),
                EventType::Normal,
            )
        } else {
            (
                "Failed",
                "Crashed",
                format!("QEMU (pid {}) exited unexpectedly", vm.pid()),
                EventType::Warning,
            )
        };
        tracing::info!(vmi = %vm.key, phase, "QEMU exited: {message}");
        let uid = vm.uid.clone();
        let msg = message.clone();
        let written = write_status(self.store.clone(), vm.key.clone(), move |o| {
            if meta::uid(o) != uid {
                return;
            }
            set_phase(o, phase);
            api::set_condition(o, "Ready", false, reason, &msg);
            api::set_condition(
                o,
                "AgentConnected",
                false,
                "QemuExited",
                "QEMU is not running",
            );
            if let Some(st) = o["status"].as_object_mut() {
                st.remove("qemuPid");
                st.remove("fsFreezeStatus");
            }
        })
        .await;
        if let Ok(obj) = &written {
            self.recorder.record(obj, ty, reason, &message);
        }
        {
            let mut vms = lock(&self.vms);
            if vms.get(&vm.key).is_some_and(|v| Arc::ptr_eq(v, vm)) {
                vms.remove(&vm.key);
            }
        }
        lock(&self.held).remove(&vm.key);
        remove_files(&vm.ephemeral);
    }

    /// Records the agent's state, with OS and address details when it answers.
    async fn on_agent_change(&self, vm: &Arc<Vm>, connected: bool) {
        let (mut os, mut addrs) = (Value::Null, HashMap::new());
        if connected {
            let _busy = vm.busy();
            let qga = vm.running.qga().with_deadline(Duration::from_secs(3));
            if let Ok(v) = qga.get_osinfo().await {
                os = v;
            }
            if let Ok(v) = qga.execute("guest-network-get-interfaces", None).await {
                for iface in v.as_array().into_iter().flatten() {
                    let mac = iface["hardware-address"]
                        .as_str()
                        .unwrap_or("")
                        .to_lowercase();
                    let ips: Vec<String> = iface["ip-addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a["ip-address"].as_str().map(String::from))
                        .collect();
                    let name = iface["name"].as_str().unwrap_or("").to_string();
                    if !mac.is_empty() {
                        addrs.insert(mac, (name, ips));
                    }
                }
            }
        }
        let uid = vm.uid.clone();
        let _ = write_status(self.store.clone(), vm.key.clone(), move |o| {
            if meta::uid(o) != uid {
                return;
            }
            if connected {
                api::set_condition(o, "AgentConnected", true, "GuestAgentPing", "the guest agent answers guest-ping");
                if !os.is_null() {
                    o["status"]["guestOSInfo"] = json!({
                        "id": os["id"], "name": os["name"], "prettyName": os["pretty-name"],
                        "version": os["version"], "versionId": os["version-id"],
                        "kernelRelease": os["kernel-release"], "kernelVersion": os["kernel-version"],
                        "machine": os["machine"],
                    });
                }
                if let Some(ifaces) = o["status"]["interfaces"].as_array_mut() {
                    for i in ifaces {
                        let mac = i["mac"].as_str().unwrap_or("").to_lowercase();
                        if let Some((gname, ips)) = addrs.get(&mac) {
                            i["interfaceName"] = json!(gname);
                            i["ipAddress"] = json!(ips.first());
                            i["ipAddresses"] = json!(ips);
                        }
                    }
                }
            } else {
                api::set_condition(o, "AgentConnected", false, "GuestAgentNotResponding", "the guest agent does not answer guest-ping");
            }
        })
        .await;
    }

    /// True when the guest agent of a running VMI answers guest-ping now.
    pub async fn agent_connected(&self, namespace: &str, name: &str) -> bool {
        let Ok(vm) = self.live_vm(namespace, name) else {
            return false;
        };
        let _busy = vm.busy();
        vm.running
            .qga()
            .with_deadline(AGENT_PING)
            .ping()
            .await
            .is_ok()
    }

    /// Freezes the guest's filesystems through the agent. `status.fsFreezeStatus: frozen` is
    /// recorded on the VMI before the freeze is sent, so a daemon that dies meanwhile thaws the
    /// guest when it starts again. The guard thaws (and clears the status) when thawed or
    /// dropped; a failed freeze is thawed before this returns.
    pub async fn freeze(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> api::Result<Frozen> {
        let vm = self.live_vm(namespace, name)?;
        let uid = vm.uid.clone();
        write_status(self.store.clone(), vm.key.clone(), move |o| {
            if meta::uid(o) == uid {
                o["status"]["fsFreezeStatus"] = json!("frozen");
            }
        })
        .await?;
        let res = {
            let _busy = vm.busy();
            vm.running
                .qga()
                .with_deadline(timeout)
                .fsfreeze_freeze()
                .await
        };
        match res {
            Ok(guard) => Ok(Frozen {
                guard: Some(guard),
                store: self.store.clone(),
                key: vm.key.clone(),
                uid: vm.uid.clone(),
            }),
            Err(e) => {
                clear_frozen(self.store.clone(), vm.key.clone(), vm.uid.clone()).await;
                Err(virt_err(e))
            }
        }
    }

    /// Thaws the guest (a held `freeze` action first) and clears `fsFreezeStatus`.
    pub async fn thaw(&self, namespace: &str, name: &str) -> api::Result<()> {
        let key = ObjectKey::new(namespace, name);
        let held = lock(&self.held).remove(&key);
        if let Some(f) = held {
            f.thaw().await?;
            return Ok(());
        }
        let vm = self.live_vm(namespace, name)?;
        {
            let _busy = vm.busy();
            vm.running
                .qga()
                .with_deadline(Duration::from_secs(10))
                .fsfreeze_thaw()
                .await
                .map_err(virt_err)?;
        }
        clear_frozen(self.store.clone(), vm.key.clone(), vm.uid.clone()).await;
        Ok(())
    }

    /// `guest-fsfreeze-status` as the guest reports it: "thawed" or "frozen".
    pub async fn fsfreeze_status(&self, namespace: &str, name: &str) -> api::Result<String> {
        let vm = self.live_vm(namespace, name)?;
        let _busy = vm.busy();
        let st = vm
            .running
            .qga()
            .with_deadline(Duration::from_secs(5))
            .fsfreeze_status()
            .await
            .map_err(virt_err)?;
        Ok(match st {
            FreezeStatus::Thawed => "thawed".into(),
            FreezeStatus::Frozen => "frozen".into(),
            FreezeStatus::Other(s) => s,
        })
    }

    /// Holds a freeze made by the `freeze` action until `unfreeze`, or thaws it after
    /// `unfreeze_after` (KubeVirt's unfreezeTimeout).
    pub(crate) fn hold_freeze(&self, f: Frozen, unfreeze_after: Duration) {
        let key = f.key.clone();
        if let Some(old) = lock(&self.held).insert(key.clone(), f) {
            drop(old);
        }
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(unfreeze_after).await;
            let Some(rt) = me.upgrade() else { return };
            let f = lock(&rt.held).remove(&key);
            if let Some(f) = f {
                tracing::warn!(vmi = %key, "unfreeze timeout reached: thawing");
                if let Err(e) = f.thaw().await {
                    tracing::error!(vmi = %key, "thaw after unfreeze timeout failed: {e}");
                }
            }
        });
    }

    /// Pauses the vCPUs (QMP `stop`) for a crash-consistent snapshot without an agent. The
    /// Paused condition is recorded first so that a restarted daemon resumes the VM.
    pub async fn pause(&self, namespace: &str, name: &str) -> api::Result<()> {
        let vm = self.live_vm(namespace, name)?;
        let uid = vm.uid.clone();
        write_status(self.store.clone(), vm.key.clone(), move |o| {
            if meta::uid(o) == uid {
                api::set_condition(
                    o,
                    "Paused",
                    true,
                    PAUSED_REASON,
                    "the vCPUs are stopped for a snapshot",
                );
            }
        })
        .await?;
        if let Err(e) = vm.running.pause().await {
            let _ = self.resume(namespace, name).await;
            return Err(virt_err(e));
        }
        Ok(())
    }

    /// Resumes the vCPUs (QMP `cont`) and clears the Paused condition.
    pub async fn resume(&self, namespace: &str, name: &str) -> api::Result<()> {
        let vm = self.live_vm(namespace, name)?;
        vm.running.resume().await.map_err(virt_err)?;
        let uid = vm.uid.clone();
        write_status(self.store.clone(), vm.key.clone(), move |o| {
            if meta::uid(o) == uid {
                api::set_condition(o, "Paused", false, "Resumed", "the vCPUs run");
            }
        })
        .await?;
        Ok(())
    }

    /// Runs `command args...` in the guest through the agent, feeding `stdin`, and waits for
    /// it up to `timeout`.
    pub async fn guest_exec(
        &self,
        namespace: &str,
        name: &str,
        command: &str,
        args: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> api::Result<ExecOutput> {
        let vm = self.live_vm(namespace, name)?;
        let _busy = vm.busy();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vm.running
            .qga()
            .with_deadline(timeout)
            .exec(command, &args, stdin)
            .await
            .map_err(virt_err)
    }

    /// Serial console output from byte `offset`, at most `max` bytes: the bytes, the next
    /// offset, and whether the VM still runs.
    pub fn console_read(
        &self,
        namespace: &str,
        name: &str,
        offset: u64,
        max: usize,
    ) -> api::Result<(Vec<u8>, u64, bool)> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self
            .run_dir(namespace, name)
            .join(virt::launcher::SERIAL_LOG);
        let running = self.is_running(namespace, name);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if running {
                    Ok((Vec::new(), offset, true))
                } else {
                    Err(Error::not_found(format!(
                        "VirtualMachineInstance {namespace}/{name} has no console log: it never ran on this host"
                    )))
                };
            }
            Err(e) => {
                return Err(Error::internal(format!(
                    "cannot open {}: {e}",
                    path.display()
                )))
            }
        };
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::internal(format!("cannot seek {}: {e}", path.display())))?;
        let mut buf = Vec::new();
        f.take(max as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::internal(format!("cannot read {}: {e}", path.display())))?;
        let next = offset + buf.len() as u64;
        Ok((buf, next, running))
    }

    /// The serial console log from its start, followed while the VM runs.
    pub fn console_stream(
        &self,
        namespace: &str,
        name: &str,
    ) -> api::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        // Fails early for a VM that never ran.
        self.console_read(namespace, name, 0, 0)?;
        let me = self.me.clone();
        let (ns, name) = (namespace.to_string(), name.to_string());
        let s = futures::stream::unfold(0u64, move |offset| {
            let me = me.clone();
            let (ns, name) = (ns.clone(), name.clone());
            async move {
                loop {
                    let rt = me.upgrade()?;
                    match rt.console_read(&ns, &name, offset, 64 * 1024) {
                        Ok((buf, next, _)) if !buf.is_empty() => {
                            return Some((Ok(Bytes::from(buf)), next));
                        }
                        Ok((_, _, true)) => {}
                        Ok((_, _, false)) => return None,
                        Err(e) => return Some((Err(std::io::Error::other(e.message)), u64::MAX)),
                    }
                    drop(rt);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Ok(Box::pin(futures::StreamExt::take_while(s, |r| {
            let ok = r.is_ok();
            async move { ok }
        })))
    }

    /// Status fields of a running VMI that the VMI controller keeps in step.
    pub(crate) fn running_status(&self, vm: &Vm) -> Value {
        json!({
            "nodeName": self.node_name,
            "qemuPid": vm.pid(),
            "launcherPid": std::process::id(),
            "accelerator": vm.accel.as_str(),
            "runDir": vm.running.run_dir().display().to_string(),
        })
    }
}

async fn clear_frozen(store: Arc<dyn Store>, key: ObjectKey, uid: String) {
    let r = write_status(store, key.clone(), move |o| {
        if meta::uid(o) == uid {
            if let Some(st) = o["status"].as_object_mut() {
                st.remove("fsFreezeStatus");
            }
        }
    })
    .await;
    if let Err(e) = r {
        if !e.is(api::ErrorKind::NotFound) {
            tracing::warn!(vmi = %key, "cannot clear fsFreezeStatus: {e}");
        }
    }
}

fn remove_files(files: &[PathBuf]) {
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

async fn monitor(me: Weak<VmRuntime>, vm: Arc<Vm>) {
    let mut connected: Option<bool> = None;
    let mut last_ping: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Some(rt) = me.upgrade() else { return };
        if !vm.running.is_alive() {
            rt.on_exit(&vm).await;
            return;
        }
        if vm.stopping.load(Ordering::SeqCst) {
            continue;
        }
        let every = if connected == Some(true) {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(1)
        };
        if last_ping.is_some_and(|t| t.elapsed() < every) || vm.busy.load(Ordering::SeqCst) > 0 {
            continue;
        }
        last_ping = Some(Instant::now());
        let ok = vm
            .running
            .qga()
            .with_deadline(AGENT_PING)
            .ping()
            .await
            .is_ok();
        // A command that started while the ping waited makes a timeout meaningless.
        if !ok && vm.busy.load(Ordering::SeqCst) > 0 {
            continue;
        }
        if connected != Some(ok) {
            connected = Some(ok);
            vm.agent.store(ok, Ordering::SeqCst);
            if !(ok || vm.running.is_alive()) {
                continue;
            }
            rt.on_agent_change(&vm, ok).await;
        }
    }
}

/// A freeze in force. Thaw it with [`Frozen::thaw`]; dropping it thaws in the background.
/// Either way `fsFreezeStatus` is cleared once the guest is thawed.
#[must_use = "dropping the guard thaws the guest in the background"]
pub struct Frozen {
    guard: Option<virt::FreezeGuard>,
    store: Arc<dyn Store>,
    key: ObjectKey,
    uid: String,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen")
            .field("vmi", &self.key)
            .field("guard", &self.guard)
            .finish()
    }
}

impl Frozen {
    /// Filesystems the agent froze.
    pub fn filesystems(&self) -> u64 {
        self.guard.as_ref().map_or(0, |g| g.filesystems())
    }

    /// Thaws now and clears `fsFreezeStatus`. On failure the background thaw keeps trying.
    pub async fn thaw(mut self) -> api::Result<FreezeWindow> {
        let Some(guard) = self.guard.take() else {
            return Err(Error::internal("freeze guard already used"));
        };
        let w = guard.thaw().await.map_err(virt_err)?;
        clear_frozen(self.store.clone(), self.key.clone(), self.uid.clone()).await;
        Ok(w)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let (store, key, uid) = (self.store.clone(), self.key.clone(), self.uid.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    match guard.thaw().await {
                        Ok(_) => clear_frozen(store, key, uid).await,
                        Err(e) => tracing::error!(vmi = %key, "background thaw failed: {e}"),
                    }
                });
            }
            // The virt guard thaws on a thread of its own; the status is cleared at the next
            // daemon start.
            Err(_) => drop(guard),
        }
    }
}
