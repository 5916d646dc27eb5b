//! Issue 6: seed 004's VirtualMachineClone on the real guest, through real kubectl. The
//! manifest as written is rejected (its MAC is a placeholder); with a real MAC it clones a
//! running VM online: the target boots with the source's data, the requested MAC and serial, a
//! new firmware UUID and filtered metadata, and no temporaries remain. Then five clones of
//! the same source run in parallel, and deleting a target deletes its clone object.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const NS: &str = "default";
const SRC: &str = "vm-cirros";

fn seed_manifest() -> String {
    std::fs::read_to_string(seeds_dir().join("004-03-virtualmachineclone-testclone.yaml"))
        .expect("seed 004 clone manifest")
}

fn qemu_pid(h: &VmHost, vm: &str) -> i64 {
    h.vmi(NS, vm)
        .and_then(|v| v["status"]["qemuPid"].as_i64())
        .unwrap_or_else(|| panic!("{vm} has no running VMI"))
}

fn meta_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Annotations a controller adds for its own bookkeeping; the filters apply to the source's
/// keys, so these are left out of the comparison.
fn user_annotations(v: &Value) -> BTreeMap<String, String> {
    meta_map(v)
        .into_iter()
        .filter(|(k, _)| {
            !(k.starts_with("restore.kubevirt.io/")
                || k.starts_with("clone.vmsnap.io/")
                || k.starts_with("vmsnap.io/")
                || k.starts_with("kubevirt.io/"))
        })
        .collect()
}

fn identity(vm: &Value) -> (String, String, String) {
    let d = &vm["spec"]["template"]["spec"]["domain"];
    (
        d["devices"]["interfaces"][0]["macAddress"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        d["firmware"]["serial"].as_str().unwrap_or("").to_string(),
        d["firmware"]["uuid"].as_str().unwrap_or("").to_string(),
    )
}

/// (MAC, SMBIOS serial, firmware UUID) as the guest sees them.
fn guest_identity(h: &VmHost, vm: &str) -> (String, String, String) {
    let (code, out, err) = h.sh(
        NS,
        vm,
        "cat /sys/class/net/eth0/address /sys/class/dmi/id/product_serial /sys/class/dmi/id/product_uuid",
    );
    assert_eq!(code, 0, "{err}");
    let l: Vec<String> = out.lines().map(|s| s.trim().to_lowercase()).collect();
    assert_eq!(l.len(), 3, "{out}");
    (l[0].clone(), l[1].clone(), l[2].clone())
}

fn assert_no_temporaries(h: &VmHost) {
    for kind in [
        "vmsnapshot",
        "vmsnapshotcontent",
        "vmrestore",
        "volumesnapshot",
    ] {
        let left = clone_names(h, kind, NS);
        assert!(left.is_empty(), "{kind} left behind: {left:?}");
    }
    let dvs = clone_names(h, "dv", NS);
    assert!(
        dvs.iter()
            .all(|d| !d.starts_with("clone-") && !d.contains("tmp-")),
        "{dvs:?}"
    );
}

#[test]
fn vm_clone_seed004_rejected_verbatim_then_clones_running_vm_with_new_identity() {
    let t0 = Instant::now();
    let h = VmHost::start();
    clone_lab_vm(
        &h,
        NS,
        SRC,
        "Always",
        None,
        // Key prefixes must be lowercase DNS names, so no real key matches the seed's
        // `someKey/*` or `anotherKey/*`: the seed clone keeps every label and drops every
        // annotation. Lowercase filters on a later clone exercise negation and prefixes.
        json!({
            "labels": {"app": "cirros", "somekey.io/role": "golden", "tier": "web"},
            "annotations": {"anotherkey.io/owner": "ops", "description": "golden image", "somekey.io/x": "y"}
        }),
        json!({
            "labels": {"kubevirt.io/domain": SRC, "somekey.io/net": "blue", "tl": "keep"},
            "annotations": {"anotherkey.io/t": "k", "ovn.kubernetes.io/ip_address": "10.16.0.5"}
        }),
    );
    let boot1 = t0.elapsed();
    let (code, sum, err) = h.sh(
        NS,
        SRC,
        "dd if=/dev/urandom of=/data/db bs=1M count=4 2>/dev/null && echo 0123456789abcdef0123456789abcdef > /etc/machine-id && sync && md5sum /data/db | cut -d' ' -f1",
    );
    assert_eq!(code, 0, "{err}");
    let sum = sum.trim().to_string();
    let src_guest = guest_identity(&h, SRC);

    // 1. Seed 004 verbatim: rejected at admission, naming the field and saying why.
    let out = h.kubectl_stdin(&["apply", "-f", "-"], Some(&seed_manifest()));
    assert!(!out.status.success(), "the placeholder MAC was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.newMacAddresses[interfaceName]"),
        "the Status does not name the field: {err}"
    );
    assert!(
        err.contains("00-11-22") && err.contains("not a valid MAC address"),
        "the Status does not say why: {err}"
    );
    assert!(clone_try_get(&h, NS, "testclone").is_none());
    // Filters: `!` only at the start, `*` only at the end.
    let bad = seed_manifest()
        .replace("\"!someKey/*\"", "\"some!Key/*\"")
        .replace(
            "interfaceName: \"00-11-22\"",
            "default: \"02-11-22-33-44-55\"",
        );
    let out = h.kubectl_stdin(&["apply", "-f", "-"], Some(&bad));
    assert!(!out.status.success(), "a misplaced '!' was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.labelFilters[1]"), "{err}");
    assert!(clone_try_get(&h, NS, "testclone").is_none());

    // 2. The same manifest with a valid MAC for the source's interface `default`.
    let fixed = seed_manifest().replace(
        "interfaceName: \"00-11-22\"",
        "default: \"02-11-22-33-44-55\"",
    );
    assert_ne!(fixed, seed_manifest());
    let pid = qemu_pid(&h, SRC);
    let t = Instant::now();
    let out = h.kubectl_stdin(&["apply", "-f", "-"], Some(&fixed));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The source keeps running throughout: the same QEMU process at every poll.
    let mut phases = Vec::new();
    let c = loop {
        assert_eq!(qemu_pid(&h, SRC), pid, "the source's QEMU changed");
        let c = clone_try_get(&h, NS, "testclone").expect("clone exists");
        if let Some(p) = c["status"]["phase"].as_str() {
            if phases.last().map(String::as_str) != Some(p) {
                phases.push(p.to_string());
            }
        }
        if matches!(c["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            break c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "clone not done: {c}\n{}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let clone_time = t.elapsed();
    assert_eq!(c["status"]["phase"], "Succeeded", "{c}\n{}", h.log());
    h.kubectl_ok(&[
        "wait",
        "vmclone",
        "testclone",
        "--for",
        "condition=Ready",
        "--timeout=60s",
    ]);
    assert!(
        phases.iter().all(|p| [
            "SnapshotInProgress",
            "RestoreInProgress",
            "CreatingTargetVM",
            "Succeeded"
        ]
        .contains(&p.as_str())),
        "{phases:?}"
    );
    assert_eq!(qemu_pid(&h, SRC), pid);
    let uid = c["metadata"]["uid"].as_str().unwrap();
    assert_eq!(c["status"]["snapshotName"], format!("tmp-snapshot-{uid}"));
    assert_eq!(c["status"]["restoreName"], format!("tmp-restore-{uid}"));
    assert_eq!(c["status"]["targetName"], "vm-clone-target");
    assert_eq!(c["status"]["strategy"], "snapshot");
    // The temporary snapshot was online, with the guest frozen through its agent.
    let ind = c["status"]["snapshotIndications"].to_string();
    assert!(ind.contains("Online") && ind.contains("GuestAgent"), "{c}");
    assert_eq!(
        clone_condition(&c, "Ready").map(|x| x.0),
        Some("True".into())
    );
    assert_eq!(
        clone_condition(&c, "Progressing").map(|x| x.0),
        Some("False".into())
    );
    // Written after the clone: must not show up in the target.
    let (code, _, _) = h.sh(NS, SRC, "echo late > /data/after && sync");
    assert_eq!(code, 0);
    assert_no_temporaries(&h);

    // Metadata follows the seed's filters exactly: `*` keeps every label (`!someKey/*`
    // matches none), `anotherKey/*` matches no annotation so none is copied.
    let target = h.vm(NS, "vm-clone-target");
    assert_eq!(
        meta_map(&target["metadata"]["labels"]),
        map(&[
            ("app", "cirros"),
            ("somekey.io/role", "golden"),
            ("tier", "web")
        ]),
        "{target}"
    );
    assert_eq!(
        user_annotations(&target["metadata"]["annotations"]),
        map(&[]),
        "{target}"
    );
    let tm = &target["spec"]["template"]["metadata"];
    assert_eq!(
        meta_map(&tm["labels"]),
        map(&[
            ("kubevirt.io/domain", SRC),
            ("somekey.io/net", "blue"),
            ("tl", "keep")
        ]),
        "{target}"
    );
    assert_eq!(meta_map(&tm["annotations"]), map(&[]), "{target}");
    let (mac, serial, fw_uuid) = identity(&target);
    assert_eq!(mac, "02:11:22:33:44:55");
    assert_eq!(serial, "new-serial");
    assert!(!fw_uuid.is_empty());
    // The target's disks are its own claims, and their filesystems are clean (the online
    // snapshot was taken with the guest frozen). Not sealed: the machine-id is the source's.
    let mut claims = Vec::new();
    for v in target["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
    {
        let claim = v["persistentVolumeClaim"]["claimName"]
            .as_str()
            .or(v["dataVolume"]["name"].as_str())
            .unwrap()
            .to_string();
        assert!(!claim.starts_with(SRC), "target shares {claim}");
        claims.push(claim);
    }
    assert_eq!(claims.len(), 2);
    for claim in &claims {
        let img = snap_claim_image(&h, NS, claim);
        let (code, out) = snap_fsck(&img);
        assert_eq!(code, 0, "fsck of {claim} ({}):\n{out}", img.display());
    }
    let root_img = snap_claim_image(&h, NS, &claims[0]);
    assert_eq!(
        snap_debugfs_cat(&root_img, "/etc/machine-id").as_deref(),
        Some(&b"0123456789abcdef0123456789abcdef\n"[..])
    );

    // Sealing is refused on a running VM.
    let out = h.vmsnap(&["seal", SRC]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("running") && err.contains("stop"), "{err}");

    // The target boots with the source's data at clone time and its new identity.
    let tb = Instant::now();
    clone_vmsnap_ok(&h, &["start", "vm-clone-target"]);
    clone_wait_guest(&h, NS, "vm-clone-target");
    let boot2 = tb.elapsed();
    let (code, out, err) = h.sh(
        NS,
        "vm-clone-target",
        "md5sum /data/db | cut -d' ' -f1; test -e /data/after && echo has-after || echo no-after",
    );
    assert_eq!(code, 0, "{err}");
    let mut l = out.lines();
    assert_eq!(l.next(), Some(sum.as_str()), "data differs");
    assert_eq!(l.next(), Some("no-after"));
    let tgt_guest = guest_identity(&h, "vm-clone-target");
    assert_eq!(tgt_guest.0, "02:11:22:33:44:55");
    assert_eq!(tgt_guest.1, "new-serial");
    assert_eq!(tgt_guest.2, fw_uuid.to_lowercase());
    assert_ne!(tgt_guest.2, src_guest.2, "firmware UUID not regenerated");
    assert_ne!(tgt_guest.0, src_guest.0);
    clone_stop(&h, NS, "vm-clone-target");

    // 7. Five clones of the running source in parallel, with generated names and identities.
    let tp = Instant::now();
    let res = api::registry::lookup("vmclone").unwrap();
    let names: Vec<String> = (1..=5).map(|i| format!("par-{i}")).collect();
    let handles: Vec<_> = names
        .iter()
        .map(|n| {
            let c = h.client();
            let mut obj = json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone", "metadata": {"name": n},
                "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": SRC}}});
            if n == "par-2" {
                obj["spec"]["volumeNamePolicy"] = json!("PrefixTargetName");
                obj["spec"]["patches"] = json!([r#"{"op": "add", "path": "/metadata/labels/patched", "value": "yes"}"#]);
            }
            if n == "par-1" {
                let f = json!({"labelFilters": ["*", "!somekey.io/*"], "annotationFilters": ["anotherkey.io/*"]});
                for (k, v) in f.as_object().unwrap() {
                    obj["spec"][k] = v.clone();
                }
                obj["spec"]["template"] = f;
            }
            std::thread::spawn(move || c.create(res, NS, &obj).map(|_| ()))
        })
        .collect();
    for j in handles {
        j.join().unwrap().expect("create clone");
    }
    let mut targets = Vec::new();
    for n in &names {
        let c = clone_wait_done(&h, NS, n, Duration::from_secs(180));
        assert_eq!(c["status"]["phase"], "Succeeded", "{n}: {c}\n{}", h.log());
        let t = c["status"]["targetName"].as_str().unwrap().to_string();
        assert!(
            t.starts_with("clone-vm-cirros-") && t.len() == "clone-vm-cirros-".len() + 5,
            "{t}"
        );
        targets.push(t);
    }
    let par_time = tp.elapsed();
    assert_eq!(
        qemu_pid(&h, SRC),
        pid,
        "the source stopped during the clones"
    );
    let mut macs = BTreeSet::from([mac.clone(), identity(&h.vm(NS, SRC)).0]);
    let mut serials = BTreeSet::from([serial.clone()]);
    let mut uuids = BTreeSet::from([fw_uuid.clone(), src_guest.2.clone()]);
    for t in &targets {
        let (m, s, u) = identity(&h.vm(NS, t));
        let octets: Vec<u8> = m
            .split(':')
            .filter_map(|o| u8::from_str_radix(o, 16).ok())
            .collect();
        assert!(octets.len() == 6 && octets[0] & 1 == 0, "bad MAC {m}");
        assert!(!s.is_empty() && !u.is_empty());
        assert!(macs.insert(m.clone()), "duplicate MAC {m}");
        assert!(serials.insert(s.clone()), "duplicate serial {s}");
        assert!(uuids.insert(u.to_lowercase()), "duplicate UUID {u}");
    }
    assert_eq!(targets.iter().collect::<BTreeSet<_>>().len(), 5);
    // par-1's lowercase filters: negation and prefixes, on the VM and on its template.
    let t1 = h.vm(NS, &targets[0]);
    assert_eq!(
        meta_map(&t1["metadata"]["labels"]),
        map(&[("app", "cirros"), ("tier", "web")]),
        "{t1}"
    );
    assert_eq!(
        user_annotations(&t1["metadata"]["annotations"]),
        map(&[("anotherkey.io/owner", "ops")]),
        "{t1}"
    );
    let tm = &t1["spec"]["template"]["metadata"];
    assert_eq!(
        meta_map(&tm["labels"]),
        map(&[("kubevirt.io/domain", SRC), ("tl", "keep")]),
        "{t1}"
    );
    assert_eq!(
        meta_map(&tm["annotations"]),
        map(&[("anotherkey.io/t", "k")]),
        "{t1}"
    );
    assert_no_temporaries(&h);
    // par-2: claims named after the target, and the user's patch applied.
    let t2 = h.vm(NS, &targets[1]);
    let mut names: Vec<String> = t2["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["persistentVolumeClaim"]["claimName"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("{}-datadisk", targets[1]),
            format!("{}-rootdisk", targets[1])
        ]
    );
    assert_eq!(t2["metadata"]["labels"]["patched"], "yes", "{t2}");
    // One of them, checked from inside its guest.
    clone_vmsnap_ok(&h, &["start", &targets[2]]);
    clone_wait_guest(&h, NS, &targets[2]);
    let g = guest_identity(&h, &targets[2]);
    let (m, s, u) = identity(&h.vm(NS, &targets[2]));
    assert_eq!(g, (m, s.to_lowercase(), u.to_lowercase()));
    let (_, out, _) = h.sh(NS, &targets[2], "md5sum /data/db | cut -d' ' -f1");
    assert_eq!(out.trim(), sum);

    clone_stop(&h, NS, &targets[2]);

    // Seed 004's post-clone steps from the CLI: label the clone and start it.
    let out = clone_vmsnap_ok(
        &h,
        &[
            "clone",
            SRC,
            "--name",
            "cli-clone",
            "--target",
            "cli-target",
            "--new-mac",
            "default=02:00:00:00:0c:01",
            "--serial",
            "cli-serial",
            "--label",
            "role=canary",
            "--start",
            "--wait",
        ],
    );
    assert!(
        out.contains("labels set on cli-target") && out.contains("cli-target starting"),
        "{out}"
    );
    assert_eq!(
        h.vm(NS, "cli-target")["metadata"]["labels"]["role"],
        "canary"
    );
    clone_wait_guest(&h, NS, "cli-target");
    let g = guest_identity(&h, "cli-target");
    assert_eq!(
        (g.0.as_str(), g.1.as_str()),
        ("02:00:00:00:0c:01", "cli-serial")
    );
    let (_, out, _) = h.sh(NS, "cli-target", "md5sum /data/db | cut -d' ' -f1");
    assert_eq!(out.trim(), sum);

    // Deleting a target VM deletes its VirtualMachineClone, as in KubeVirt, and its disks.
    h.kubectl_ok(&["delete", "vm", "vm-clone-target", "--wait=false"]);
    h.wait_for("testclone deleted", Duration::from_secs(60), || {
        clone_try_get(&h, NS, "testclone").is_none().then_some(())
    });
    h.wait_for("target claims deleted", Duration::from_secs(60), || {
        let left = clone_names(&h, "pvc", NS);
        claims.iter().all(|c| !left.contains(c)).then_some(())
    });
    assert!(clone_try_get(&h, NS, "par-1").is_some());
    eprintln!(
        "timings: source boot {boot1:?}, online clone {clone_time:?}, target boot {boot2:?}, 5 parallel clones {par_time:?}, total {:?}",
        t0.elapsed()
    );
}
