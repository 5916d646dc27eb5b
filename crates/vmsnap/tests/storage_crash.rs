//! Crash safety of provisioning: the server is aborted inside a driver operation (as kill -9
//! would leave it) and restarted; the claim is then provisioned from scratch and bound, and
//! nothing half-made is left. One test per process: the fault is injected through the
//! environment the server inherits.

mod common;

use common::Server;
use serde_json::Value;
use std::time::{Duration, Instant};

const CRASH_ENV: &str = "VMSNAP_STORAGE_CRASH_AT";

fn wait_exit(s: &mut Server) {
    let start = Instant::now();
    loop {
        if let Some(c) = s.child.as_mut() {
            if c.try_wait().expect("try_wait").is_some() {
                s.child = None;
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the server did not hit the crash point:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pvc(s: &Server, name: &str) -> Value {
    serde_json::from_str(&s.kubectl_ok(&["get", "pvc", name, "-o", "json"])).expect("json")
}

fn wait_bound(s: &Server, name: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = pvc(s, name);
        if v["status"]["phase"] == "Bound" {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name} not bound: {v}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tmp_entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn provisioning_survives_a_crash_inside_the_driver() {
    let mut s = Server::start();
    let vols = s.data_dir().join("pools/dir/volumes");
    // Crash while creating a blank volume.
    s.kill9();
    std::env::set_var(CRASH_ENV, "create:before-rename");
    s.spawn();
    let doc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c1}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: vmsnap-dir\n  resources: {requests: {storage: 8Mi}}\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some(doc));
    assert!(out.status.success());
    wait_exit(&mut s);
    assert!(
        !tmp_entries(&vols).is_empty(),
        "the crash left no temp entry to recover"
    );
    std::env::remove_var(CRASH_ENV);
    s.spawn();
    let c1 = wait_bound(&s, "c1");
    assert!(
        tmp_entries(&vols).is_empty(),
        "recovery left {:?}",
        tmp_entries(&vols)
    );
    let vol = c1["spec"]["volumeName"].as_str().unwrap();
    assert_eq!(
        std::fs::metadata(vols.join(format!("{vol}.img")))
            .unwrap()
            .len(),
        8 << 20
    );

    // Crash while cloning a claim (the dir driver's host-assisted copy).
    std::fs::write(vols.join(format!("{vol}.img")), vec![0x5au8; 1 << 20]).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(vols.join(format!("{vol}.img")))
        .unwrap();
    f.set_len(8 << 20).unwrap();
    drop(f);
    s.kill9();
    std::env::set_var(CRASH_ENV, "clone:after-copy");
    s.spawn();
    let doc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c2}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: vmsnap-dir\n  resources: {requests: {storage: 8Mi}}\n  dataSource: {kind: PersistentVolumeClaim, name: c1}\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some(doc));
    assert!(out.status.success());
    wait_exit(&mut s);
    std::env::remove_var(CRASH_ENV);
    s.spawn();
    let c2 = wait_bound(&s, "c2");
    assert!(
        tmp_entries(&vols).is_empty(),
        "recovery left {:?}",
        tmp_entries(&vols)
    );
    let vol2 = c2["spec"]["volumeName"].as_str().unwrap();
    let data = std::fs::read(vols.join(format!("{vol2}.img"))).unwrap();
    assert_eq!(data.len(), 8 << 20);
    assert!(data[..1 << 20].iter().all(|b| *b == 0x5a) && data[1 << 20..].iter().all(|b| *b == 0));
}
