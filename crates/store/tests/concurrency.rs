#![allow(clippy::result_large_err)] // api::Error is the mandated error type.

mod common;

use api::meta;
use api::ErrorKind;
use common::*;
use serde_json::json;
use std::sync::{Arc, Barrier};
use store::Store;

#[test]
fn racing_updates_with_the_same_resource_version_have_one_winner() {
    let t = Tmp::new();
    let s = Arc::new(t.open());
    s.create(vmsnap(), snap("default", "hot")).unwrap();
    const THREADS: usize = 8;
    const ROUNDS: usize = 25;
    for round in 0..ROUNDS {
        let base = s.get(vmsnap(), "default", "hot").unwrap();
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let s = s.clone();
                let barrier = barrier.clone();
                let mut body = (*base).clone();
                body["spec"]["source"]["name"] = json!(format!("vm-{round}-{i}"));
                std::thread::spawn(move || {
                    barrier.wait();
                    s.update(vmsnap(), body)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one update wins");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.kind, ErrorKind::Conflict);
            }
        }
        let now = s.get(vmsnap(), "default", "hot").unwrap();
        assert_eq!(&now, winners[0]);
        assert_eq!(meta::generation(&now), round as i64 + 2);
    }
}

#[test]
fn read_modify_write_loops_lose_no_increment() {
    let t = Tmp::new();
    let s = Arc::new(t.open());
    let mut body = snap("default", "counter");
    body["status"] = json!({"count": 0});
    s.create(vmsnap(), body).unwrap();
    const THREADS: usize = 6;
    const EACH: usize = 15;
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut conflicts = 0;
                for _ in 0..EACH {
                    loop {
                        let cur = s.get(vmsnap(), "default", "counter").unwrap();
                        let mut b = (*cur).clone();
                        let n = b["status"]["count"].as_u64().unwrap();
                        b["status"]["count"] = json!(n + 1);
                        match s.update_status(vmsnap(), b) {
                            Ok(_) => break,
                            Err(e) if e.kind == ErrorKind::Conflict => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let obj = s.get(vmsnap(), "default", "counter").unwrap();
    assert_eq!(obj["status"]["count"], (THREADS * EACH) as u64);
    assert_eq!(s.revision() as usize, 1 + THREADS * EACH);
    eprintln!("{conflicts} conflicts retried");
}

#[test]
fn concurrent_creates_of_one_name_have_one_winner() {
    let t = Tmp::new();
    let s = Arc::new(t.open());
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                s.create(vmsnap(), snap("default", "same"))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| e.kind == ErrorKind::AlreadyExists));
    assert_eq!(s.revision(), 1);
}

#[test]
fn readers_see_only_acknowledged_consistent_state() {
    // A list's revision always covers exactly the objects it returns.
    let t = Tmp::new();
    let s = Arc::new(t.open());
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            std::thread::scope(|sc| {
                for w in 0..4 {
                    let s = &s;
                    sc.spawn(move || {
                        for i in 0..100 {
                            s.create(vmsnap(), snap("default", &format!("r{w}-{i}")))
                                .unwrap();
                        }
                    });
                }
            });
        })
    };
    let (l, f) = all();
    while !writer.is_finished() {
        let list = s.list(vmsnap(), None, &l, &f).unwrap();
        assert_eq!(list.items.len() as u64, list.revision);
        assert!(list.items.iter().all(|o| rv(o) <= list.revision));
    }
    writer.join().unwrap();
    assert_eq!(s.list(vmsnap(), None, &l, &f).unwrap().items.len(), 400);
}
