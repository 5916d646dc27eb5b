//! Issue 5, acceptance 2 and 3: snapshots of a guest under a continuous fsync'd write load are
//! consistent (fsck clean, the records a gap-free prefix), with the agent (freeze) and without
//! it (QMP pause, a crash-consistent point); a restore into a new VM applies patches (a new MAC).

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "default";

/// The records of /log in an ext4 image: they must be exactly 1..=n. Returns n.
fn gap_free_records(image: &Path, what: &str) -> u64 {
    let log = snap_debugfs_cat(image, "/log").unwrap_or_else(|| panic!("{what}: no /log"));
    let text = String::from_utf8(log).unwrap_or_else(|e| panic!("{what}: /log not text: {e}"));
    let mut n = 0u64;
    for (i, line) in text.lines().enumerate() {
        let want = i as u64 + 1;
        assert_eq!(
            line.parse::<u64>().ok(),
            Some(want),
            "{what}: record {want} is {line:?}: not a gap-free prefix (last lines: {:?})",
            text.lines().rev().take(3).collect::<Vec<_>>()
        );
        n = want;
    }
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what}: torn last record"
    );
    n
}

fn data_claim_of(h: &VmHost, vm: &str) -> String {
    let v = h.vm(NS, vm);
    v["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "datadisk")
        .and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .unwrap_or_else(|| panic!("no datadisk claim in {v}"))
        .to_string()
}

fn indications(s: &serde_json::Value) -> Vec<String> {
    s["status"]["indications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(String::from))
        .collect()
}

#[test]
fn vm_snapshot_under_write_load_is_consistent_with_and_without_agent() {
    let h = VmHost::start();
    snap_lab_vm(&h, NS, "load", "Always", None, None);
    // A writer appending numbered records, each made durable before the next.
    let (code, _, err) = h.sh(
        NS,
        "load",
        "printf 'i=0\\nwhile :; do i=$((i+1)); echo $i >> /data/log; sync; done\\n' > /writer.sh && (sh /writer.sh </dev/null >/dev/null 2>&1 &) ; echo started",
    );
    assert_eq!(code, 0, "{err}");
    h.wait_for("writer running", Duration::from_secs(30), || {
        let (_, out, _) = h.sh(NS, "load", "wc -l < /data/log");
        (out.trim().parse::<u64>().unwrap_or(0) > 20).then_some(())
    });

    // Ten snapshots mid-stream, each restored into a new VM (the first with a new MAC).
    let mac = "02:5e:00:aa:bb:01";
    let t0 = Instant::now();
    for k in 1..=10 {
        let s = format!("load-{k}");
        snap_create(&h, NS, &s, "load", json!({}));
        let st = snap_wait_done(&h, NS, &s, Duration::from_secs(60));
        assert_eq!(st["status"]["phase"], "Succeeded", "{st}");
        let inds = indications(&st);
        assert!(
            inds.contains(&"Online".into()) && inds.contains(&"GuestAgent".into()),
            "{inds:?}"
        );
        assert_eq!(st["status"]["quiesce"]["method"], "freeze", "{st}");
        let extra = if k == 1 {
            json!({"patches": [format!("{{\"op\": \"add\", \"path\": \"/spec/template/spec/domain/devices/interfaces/0/macAddress\", \"value\": \"{mac}\"}}")]})
        } else {
            json!({})
        };
        snap_restore(&h, NS, &format!("rl-{k}"), &s, &format!("copy-{k}"), extra);
        let r = snap_wait_restore(&h, NS, &format!("rl-{k}"), Duration::from_secs(60));
        assert_eq!(r["status"]["complete"], true, "{r}");
    }
    eprintln!("10 snapshots and restores in {:?}", t0.elapsed());

    // Offline, on the host: each restored data disk is clean and holds a gap-free prefix.
    let mut last = 0;
    let mut counts = Vec::new();
    for k in 1..=10 {
        let img = snap_claim_image(&h, NS, &data_claim_of(&h, &format!("copy-{k}")));
        let (code, out) = snap_fsck(&img);
        assert_eq!(code, 0, "snapshot {k}: e2fsck -fn is not clean:\n{out}");
        let n = gap_free_records(&img, &format!("snapshot {k}"));
        assert!(n >= last, "snapshot {k} has {n} records, fewer than {last}");
        last = n;
        counts.push(n);
    }
    assert!(
        counts[9] > counts[0],
        "the writer did not progress between snapshots: {counts:?}"
    );
    eprintln!("records per snapshot: {counts:?}");
    // The guest was thawed each time: the writer went on past the last snapshot.
    h.wait_for(
        "writer past the last snapshot",
        Duration::from_secs(20),
        || {
            let (_, out, _) = h.sh(NS, "load", "wc -l < /data/log");
            (out.trim().parse::<u64>().unwrap_or(0) > last).then_some(())
        },
    );

    // A restore patch outside /spec and /metadata/labels|annotations is refused.
    let bad = snap_restore_obj(
        "rl-badpatch",
        "load-1",
        "copy-bad",
        json!({"patches": ["{\"op\": \"replace\", \"path\": \"/metadata/name\", \"value\": \"x\"}"]}),
    );
    let e = h
        .client()
        .create(snap_res("vmrestore"), NS, &bad)
        .expect_err("a /metadata/name patch must be refused");
    assert!(e.to_string().contains("/metadata/name"), "{e}");

    // No agent: disable it in the guest (busybox init respawns it, so its binary goes first).
    let (code, _, err) = h.sh(
        NS,
        "load",
        "mv /usr/sbin/qemu-ga /usr/sbin/qemu-ga.off && (sh -c 'sleep 1; killall qemu-ga' </dev/null >/dev/null 2>&1 &); echo ok",
    );
    assert_eq!(code, 0, "{err}");
    h.wait_for("agent gone", Duration::from_secs(60), || {
        (api::condition(&h.vm(NS, "load"), "AgentConnected") != Some(true)).then_some(())
    });
    snap_create(&h, NS, "load-noagent", "load", json!({}));
    let st = snap_wait_done(&h, NS, "load-noagent", Duration::from_secs(60));
    assert_eq!(st["status"]["phase"], "Succeeded", "{st}");
    let inds = indications(&st);
    assert!(
        inds.contains(&"Online".into()) && inds.contains(&"NoGuestAgent".into()),
        "{inds:?}"
    );
    assert!(!inds.contains(&"GuestAgent".into()), "{inds:?}");
    assert_eq!(st["status"]["quiesce"]["method"], "pause", "{st}");
    let w = st["status"]["quiesce"]["windowMillis"].as_f64().unwrap();
    assert!(w > 0.0 && w < 5000.0, "{w}");
    let src = st["status"]["sourceIndications"].to_string();
    assert!(src.contains("crash-consistent"), "{src}");
    // The vCPUs run again.
    let vmi = h.vmi(NS, "load").expect("vmi");
    assert_ne!(api::condition(&vmi, "Paused"), Some(true), "{vmi}");
    snap_restore(
        &h,
        NS,
        "rl-noagent",
        "load-noagent",
        "copy-noagent",
        json!({}),
    );
    let r = snap_wait_restore(&h, NS, "rl-noagent", Duration::from_secs(60));
    assert_eq!(r["status"]["complete"], true, "{r}");
    // A crash point: after the journal replays, as at the next mount, the filesystem is clean
    // and the records are a gap-free prefix.
    let img = snap_claim_image(&h, NS, &data_claim_of(&h, "copy-noagent"));
    let copy = h.data_dir().join("noagent-copy.img");
    std::fs::copy(&img, &copy).unwrap();
    let out = Command::new("/sbin/e2fsck")
        .args(["-fy", "-E", "journal_only"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.code().unwrap_or(8) <= 1,
        "journal replay: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (code, out) = snap_fsck(&copy);
    assert_eq!(code, 0, "crash point not clean:\n{out}");
    let n = gap_free_records(&copy, "no-agent snapshot");
    assert!(n >= last, "{n} < {last}");
    std::fs::remove_file(&copy).unwrap();

    // The first copy boots with the patched MAC and its records.
    let out = h.vmsnap(&["stop", "load"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec_mac = h.vm(NS, "copy-1")["spec"]["template"]["spec"]["domain"]["devices"]
        ["interfaces"][0]["macAddress"]
        .clone();
    assert_eq!(spec_mac, mac);
    let out = h.vmsnap(&["start", "copy-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    snap_wait_guest(&h, NS, "copy-1");
    let (code, out, _) = h.sh(
        NS,
        "copy-1",
        "cat /sys/class/net/eth0/address; wc -l < /data/log",
    );
    assert_eq!(code, 0);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(mac));
    assert_eq!(
        lines.next().and_then(|l| l.trim().parse::<u64>().ok()),
        Some(counts[0])
    );
}
