#![allow(clippy::result_large_err)] // api::Error is the mandated error type.

mod common;

use api::meta;
use api::ErrorKind;
use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use store::{Preconditions, Store, StoreOptions};

#[test]
fn everything_survives_reopen() {
    let t = Tmp::new();
    let s = t.open();
    let a = s.create(vmsnap(), snap("default", "a")).unwrap();
    let b = s.create(vmsnap(), snap("other", "b")).unwrap();
    let mut body = snap("default", "fin");
    body["metadata"]["finalizers"] = json!(["x/y"]);
    s.create(vmsnap(), body).unwrap();
    let marked = s
        .delete(vmsnap(), "default", "fin", &Preconditions::default())
        .unwrap();
    s.create(storage_class(), sc("fast")).unwrap();
    s.delete(storage_class(), "", "fast", &Preconditions::default())
        .unwrap();
    let st = s
        .update_status(
            vmsnap(),
            json!({"metadata": {"name": "a", "namespace": "default"}, "status": {"phase": "Succeeded"}}),
        )
        .unwrap();
    let rev = s.revision();
    drop(s);

    let s = t.open();
    assert_eq!(s.revision(), rev);
    assert_eq!(*s.get(vmsnap(), "default", "a").unwrap(), *st);
    assert_eq!(
        meta::uid(&s.get(vmsnap(), "default", "a").unwrap()),
        meta::uid(&a)
    );
    assert_eq!(*s.get(vmsnap(), "other", "b").unwrap(), *b);
    assert_eq!(*s.get(vmsnap(), "default", "fin").unwrap(), *marked);
    assert_eq!(
        s.get(storage_class(), "", "fast").unwrap_err().kind,
        ErrorKind::NotFound
    );
    // Revisions continue after the reopen, and the label index was rebuilt.
    let c = s.create(vmsnap(), snap("default", "c")).unwrap();
    assert_eq!(rv(&c), rev + 1);
    let sel = api::meta::LabelSelector::parse("app=db").unwrap();
    let list = s.list(vmsnap(), None, &sel, &Default::default()).unwrap();
    assert_eq!(list.items.len(), 4);
}

#[test]
fn database_uses_wal_and_full_sync() {
    let t = Tmp::new();
    let s = t.open();
    s.create(vmsnap(), snap("default", "a")).unwrap();
    let mut wal = t.db().into_os_string();
    wal.push("-wal");
    assert!(PathBuf::from(wal).exists(), "a WAL file exists while open");
    drop(s);
    let conn = rusqlite::Connection::open(t.db()).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

/// The child half of `acknowledged_writes_survive_sigkill`: writes from several threads and
/// prints each name once its create returned.
#[test]
fn sigkill_child_writer() {
    let Some(path) = std::env::var_os("STORE_SIGKILL_CHILD_DB") else {
        return;
    };
    let s = std::sync::Arc::new(
        store::SqliteStore::open(std::path::Path::new(&path), StoreOptions::default()).unwrap(),
    );
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let name = format!("k{t}-{i}");
                    let mut body = snap("default", &name);
                    body["spec"]["padding"] = json!("x".repeat(500));
                    s.create(vmsnap(), body).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {name}").unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let t = Tmp::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STORE_SIGKILL_CHILD_DB", t.db())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut acked = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        while acked.len() < 300 + round * 100 {
            let line = lines.next().expect("child output").unwrap();
            if let Some(name) = line.strip_prefix("ACK ") {
                acked.push(name.to_string());
            }
        }
        // SIGKILL right after the acknowledgements, while writes are still in flight.
        child.kill().unwrap();
        child.wait().unwrap();
        // Anything the child printed before dying was acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(name) = line.strip_prefix("ACK ") {
                acked.push(name.to_string());
            }
        }

        let s = t.open();
        for name in &acked {
            let obj = s
                .get(vmsnap(), "default", name)
                .unwrap_or_else(|e| panic!("acknowledged {name} lost: {e}"));
            assert_eq!(obj["spec"]["padding"].as_str().unwrap().len(), 500);
        }
        // The log and the objects agree: every stored object has its creation event, and the
        // revision counts every event.
        let (l, f) = all();
        let list = s.list(vmsnap(), None, &l, &f).unwrap();
        assert!(list.items.len() >= acked.len());
        assert_eq!(list.revision as usize, list.items.len());
        let rt = rt();
        let mut w = s.watch(None, None, 0).unwrap();
        for rev in 1..=list.revision {
            assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, rev);
        }
        drop(w);
        drop(s);
        // Each round starts from an empty database so the child's names do not collide.
        for suffix in ["", "-wal", "-shm"] {
            let mut p = t.db().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}
