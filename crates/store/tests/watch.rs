#![allow(clippy::result_large_err)] // api::Error is the mandated error type.

mod common;

use api::meta;
use api::ErrorKind;
use common::*;
use serde_json::json;
use store::{EventType, Preconditions, Store, StoreOptions, WatchEvent};

fn summary(ev: &WatchEvent) -> (u64, &'static str, String, String) {
    (
        ev.revision,
        ev.ty.as_str(),
        ev.resource.clone(),
        format!("{}/{}", meta::namespace(&ev.object), meta::name(&ev.object)),
    )
}

/// Writes a mix of events: returns (revision, type, name) of each.
fn churn(s: &dyn Store, prefix: &str, n: usize) -> Vec<(u64, EventType, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let o = s.create(vmsnap(), snap("default", &name)).unwrap();
        out.push((rv(&o), EventType::Added, name.clone()));
        let o = s
            .update_status(
                vmsnap(),
                json!({"metadata": {"name": name, "namespace": "default"}, "status": {"phase": "Succeeded"}}),
            )
            .unwrap();
        out.push((rv(&o), EventType::Modified, name.clone()));
        if i % 2 == 0 {
            let o = s
                .delete(vmsnap(), "default", &name, &Preconditions::default())
                .unwrap();
            out.push((rv(&o), EventType::Deleted, name.clone()));
        }
    }
    out
}

#[test]
fn watch_replays_then_continues_live_without_gap_or_duplicate() {
    let t = Tmp::new();
    let s = t.open();
    let written = churn(&s, "a", 5);
    let rt = rt();
    let mut w = s.watch(None, None, 0).unwrap();
    for (rev, ty, name) in &written {
        let ev = rt.block_on(next(&mut w)).unwrap();
        assert_eq!((ev.revision, ev.ty), (*rev, *ty));
        assert_eq!(meta::name(&ev.object), name);
        assert_eq!(ev.resource, "snapshot.kubevirt.io/virtualmachinesnapshots");
        assert_eq!(rv(&ev.object), ev.revision);
    }
    let live = churn(&s, "b", 3);
    for (rev, ty, _) in &live {
        let ev = rt.block_on(next(&mut w)).unwrap();
        assert_eq!((ev.revision, ev.ty), (*rev, *ty));
    }
    rt.block_on(quiet(&mut w));

    // From the middle.
    let mid = written[3].0;
    let mut w = s.watch(Some(vmsnap()), None, mid).unwrap();
    let ev = rt.block_on(next(&mut w)).unwrap();
    assert_eq!(ev.revision, mid + 1);
}

#[test]
fn concurrent_writes_during_watch_start_are_seen_exactly_once() {
    let t = Tmp::new();
    let s = std::sync::Arc::new(t.open());
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                s.create(vmsnap(), snap("default", &format!("c{i}")))
                    .unwrap();
            }
        })
    };
    let rt = rt();
    // Watches started at arbitrary moments while writes stream in, from arbitrary revisions.
    let mut watches = Vec::new();
    for _ in 0..20 {
        let from = s.revision() / 2;
        watches.push((from, s.watch(Some(vmsnap()), None, from).unwrap()));
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    writer.join().unwrap();
    let head = s.revision();
    assert_eq!(head, 300);
    for (from, mut w) in watches {
        let mut expect = from + 1;
        while expect <= head {
            let ev = rt.block_on(next(&mut w)).unwrap();
            assert_eq!(ev.revision, expect, "watch from {from}");
            expect += 1;
        }
        rt.block_on(quiet(&mut w));
    }
}

#[test]
fn watch_filters_by_resource_and_namespace() {
    let t = Tmp::new();
    let s = t.open();
    let rt = rt();
    let from = s.revision();
    let mut only_ns = s.watch(Some(vmsnap()), Some("x"), from).unwrap();
    let mut only_sc = s.watch(Some(storage_class()), None, from).unwrap();
    let mut everything = s.watch(None, None, from).unwrap();
    s.create(vmsnap(), snap("y", "a")).unwrap();
    s.create(vmsnap(), snap("x", "b")).unwrap();
    s.create(storage_class(), sc("fast")).unwrap();
    let ev = rt.block_on(next(&mut only_ns)).unwrap();
    assert_eq!(summary(&ev).3, "x/b");
    rt.block_on(quiet(&mut only_ns));
    let ev = rt.block_on(next(&mut only_sc)).unwrap();
    assert_eq!(ev.resource, "storage.k8s.io/storageclasses");
    assert_eq!(ev.revision, 3);
    rt.block_on(quiet(&mut only_sc));
    for rev in 1..=3 {
        assert_eq!(rt.block_on(next(&mut everything)).unwrap().revision, rev);
    }
    // Replayed events are filtered the same way.
    let mut replay = s.watch(Some(vmsnap()), Some("y"), 0).unwrap();
    assert_eq!(summary(&rt.block_on(next(&mut replay)).unwrap()).3, "y/a");
    rt.block_on(quiet(&mut replay));
}

#[test]
fn watch_replay_is_exact_across_reopen() {
    let t = Tmp::new();
    let rt = rt();
    let s = t.open();
    churn(&s, "a", 3);
    let resume_from = s.revision();
    let mut missed = churn(&s, "b", 4);
    drop(s);

    // Through the in-memory cache (loaded at open), from SQLite alone, and from both.
    for opts in [
        StoreOptions::default(),
        StoreOptions {
            watch_cache: 0,
            ..Default::default()
        },
        StoreOptions {
            watch_cache: 3,
            ..Default::default()
        },
    ] {
        let s = t.open_with(opts);
        let mut w = s.watch(None, None, resume_from).unwrap();
        for (rev, ty, name) in &missed {
            let ev = rt.block_on(next(&mut w)).unwrap();
            assert_eq!(
                (ev.revision, ev.ty, meta::name(&ev.object)),
                (*rev, *ty, name.as_str())
            );
        }
        rt.block_on(quiet(&mut w));
        // Then it continues live.
        let o = s.create(vmsnap(), snap("default", "live")).unwrap();
        let ev = rt.block_on(next(&mut w)).unwrap();
        assert_eq!((ev.revision, ev.ty), (rv(&o), EventType::Added));
        let d = s
            .delete(vmsnap(), "default", "live", &Preconditions::default())
            .unwrap();
        assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, rv(&d));
        // Both are in the log for the next reopen.
        missed.push((rv(&o), EventType::Added, "live".into()));
        missed.push((rv(&d), EventType::Deleted, "live".into()));
    }
}

#[test]
fn long_replay_from_sqlite_pages() {
    let t = Tmp::new();
    let rt = rt();
    let s = t.open_with(StoreOptions {
        watch_cache: 10,
        ..Default::default()
    });
    let writers: Vec<_> = (0..4).collect();
    std::thread::scope(|sc| {
        for w in &writers {
            let s = &s;
            sc.spawn(move || {
                for i in 0..400 {
                    s.create(vmsnap(), snap("default", &format!("w{w}-{i}")))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(s.revision(), 1600);
    let mut w = s.watch(Some(vmsnap()), Some("default"), 5).unwrap();
    for rev in 6..=1600 {
        assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, rev);
    }
    rt.block_on(quiet(&mut w));
}

#[test]
fn compaction_gives_410() {
    let t = Tmp::new();
    let rt = rt();
    let s = t.open();
    churn(&s, "a", 5);
    let head = s.revision();
    s.compact(6).unwrap();
    assert_eq!(s.compacted_revision(), 6);
    let e = s.watch(None, None, 5).err().expect("expired");
    assert_eq!(e.kind, ErrorKind::Expired);
    assert_eq!(e.kind.code(), 410);
    assert_eq!(e.message, "too old resource version: 5 (6)");
    // From the compacted revision itself everything needed is still there.
    let mut w = s.watch(None, None, 6).unwrap();
    assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, 7);
    // Compacting into the future is refused; compacting backwards is a no-op.
    assert_eq!(s.compact(head + 1).unwrap_err().kind, ErrorKind::BadRequest);
    s.compact(2).unwrap();
    assert_eq!(s.compacted_revision(), 6);
    drop(w);
    drop(s);
    // Compaction is durable.
    let s = t.open_with(StoreOptions {
        watch_cache: 0,
        ..Default::default()
    });
    assert_eq!(s.compacted_revision(), 6);
    assert_eq!(s.revision(), head);
    assert_eq!(
        s.watch(None, None, 3).err().unwrap().kind,
        ErrorKind::Expired
    );
    let mut w = s.watch(None, None, 6).unwrap();
    for rev in 7..=head {
        assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, rev);
    }
}

#[test]
fn compaction_during_replay_gives_410_not_a_gap() {
    let t = Tmp::new();
    let rt = rt();
    let s = t.open_with(StoreOptions {
        watch_cache: 0,
        ..Default::default()
    });
    // Sequential writes wait for one fsync each; parallel writers share commits.
    std::thread::scope(|sc| {
        for w in 0..8 {
            let s = &s;
            sc.spawn(move || {
                for i in 0..150 {
                    s.create(vmsnap(), snap("default", &format!("p{w}-{i}")))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(s.revision(), 1200);
    let mut w = s.watch(None, None, 0).unwrap();
    // The first page (512 events) is read; then the log is compacted under the watch.
    assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, 1);
    s.compact(1000).unwrap();
    let mut last = 1;
    let err = loop {
        match rt.block_on(w.next()) {
            Some(Ok(ev)) => {
                assert_eq!(ev.revision, last + 1, "no gap");
                last = ev.revision;
            }
            Some(Err(e)) => break e,
            None => panic!("the watch ended without an error"),
        }
    };
    assert_eq!(err.kind, ErrorKind::Expired);
    assert!(last < 1000);
    assert!(
        rt.block_on(w.next()).is_none(),
        "the watch ends after the error"
    );
}

#[test]
fn automatic_compaction_keeps_retain_events() {
    let t = Tmp::new();
    let s = t.open_with(StoreOptions {
        retain_events: 50,
        ..Default::default()
    });
    std::thread::scope(|sc| {
        for w in 0..4 {
            let s = &s;
            sc.spawn(move || {
                for i in 0..50 {
                    s.create(vmsnap(), snap("default", &format!("r{w}-{i}")))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(s.revision(), 200);
    assert_eq!(s.compacted_revision(), 150);
    assert_eq!(
        s.watch(None, None, 149).err().unwrap().kind,
        ErrorKind::Expired
    );
    let rt = rt();
    let mut w = s.watch(None, None, 150).unwrap();
    assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, 151);
    // Objects are unaffected by compaction.
    let (l, f) = all();
    assert_eq!(s.list(vmsnap(), None, &l, &f).unwrap().items.len(), 200);
}

#[test]
fn slow_consumer_gets_410_and_never_a_gap() {
    let t = Tmp::new();
    let s = t.open_with(StoreOptions {
        watch_buffer: 16,
        ..Default::default()
    });
    let rt = rt();
    let mut slow = s.watch(Some(vmsnap()), None, 0).unwrap();
    let mut other_kind = s.watch(Some(storage_class()), None, 0).unwrap();
    std::thread::scope(|sc| {
        for w in 0..4 {
            let s = &s;
            sc.spawn(move || {
                for i in 0..20 {
                    s.create(vmsnap(), snap("default", &format!("s{w}-{i}")))
                        .unwrap();
                }
            });
        }
    });
    let mut last = 0;
    let err = loop {
        match rt.block_on(next_or_end(&mut slow)) {
            Some(Ok(ev)) => {
                assert_eq!(ev.revision, last + 1, "no gap before the error");
                last = ev.revision;
            }
            Some(Err(e)) => break e,
            None => panic!("ended silently"),
        }
    };
    assert_eq!(err.kind, ErrorKind::Expired);
    assert_eq!(last, 16);
    assert!(rt.block_on(slow.next()).is_none());
    // A watcher of another kind is not affected by events it does not receive.
    s.create(storage_class(), sc("x")).unwrap();
    assert_eq!(rt.block_on(next(&mut other_kind)).unwrap().revision, 81);
}

async fn next_or_end(w: &mut store::Watch) -> Option<api::Result<WatchEvent>> {
    tokio::time::timeout(std::time::Duration::from_secs(5), w.next())
        .await
        .expect("no hang")
}

#[test]
fn dropping_the_store_ends_watches() {
    let t = Tmp::new();
    let s = t.open();
    let rt = rt();
    let mut w = s.watch(None, None, 0).unwrap();
    s.create(vmsnap(), snap("default", "a")).unwrap();
    drop(s);
    assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, 1);
    assert!(rt.block_on(next_or_end(&mut w)).is_none());
}

#[test]
fn watch_in_a_multithreaded_runtime() {
    let t = Tmp::new();
    let s = std::sync::Arc::new(t.open());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let from = s.revision();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let mut w = s.watch(Some(vmsnap()), Some("default"), from).unwrap();
            rt.spawn(async move {
                let mut revs = Vec::new();
                while revs.len() < 50 {
                    revs.push(w.next().await.unwrap().unwrap().revision);
                }
                revs
            })
        })
        .collect();
    for i in 0..50 {
        s.create(vmsnap(), snap("default", &format!("m{i}")))
            .unwrap();
    }
    for task in tasks {
        let revs = rt.block_on(task).unwrap();
        assert_eq!(revs, (1..=50).collect::<Vec<u64>>());
    }
}

#[test]
fn bookmarks_only_when_caught_up() {
    let t = Tmp::new();
    let s = t.open();
    let rt = rt();
    s.create(vmsnap(), snap("default", "a")).unwrap();
    let mut w = s.watch(Some(vmsnap()), Some("default"), 0).unwrap();
    assert_eq!(w.bookmark(), None, "replay pending");
    assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, 1);
    assert_eq!(w.bookmark(), Some(1));
    // Events of other namespaces move the bookmark without being delivered.
    s.create(vmsnap(), snap("other", "b")).unwrap();
    s.create(storage_class(), sc("c")).unwrap();
    assert_eq!(w.bookmark(), Some(3));
    s.create(vmsnap(), snap("default", "d")).unwrap();
    assert_eq!(w.bookmark(), None, "an event is queued");
    assert_eq!(rt.block_on(next(&mut w)).unwrap().revision, 4);
    assert_eq!(w.bookmark(), Some(4));
}
