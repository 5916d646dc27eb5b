//! The consumer side of a watch: replay (from the in-memory event cache or the SQLite event
//! log), then live events, with one ordering guarantee: revisions strictly increase.

use crate::sqlite::{configure, read_meta, Inner};
use crate::{too_old, EventType, WatchEvent};
use api::{Error, Result};
use rusqlite::{params, Connection};
use serde_json::Value;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// How many events one replay query reads.
const PAGE: usize = 512;

#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub(crate) resource: Option<String>,
    pub(crate) namespace: Option<String>,
}

impl Filter {
    pub(crate) fn matches(&self, ev: &WatchEvent) -> bool {
        self.resource.as_ref().is_none_or(|r| *r == ev.resource)
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| ns == api::meta::namespace(&ev.object))
    }
}

/// A live watcher as the writer sees it.
pub(crate) struct Subscriber {
    pub(crate) filter: Filter,
    pub(crate) tx: mpsc::Sender<Arc<WatchEvent>>,
    pub(crate) overflow: Arc<AtomicBool>,
}

impl Subscriber {
    /// Queues an event; false means the subscriber is finished (its consumer went away, or
    /// fell too far behind and will be told so).
    pub(crate) fn offer(&self, ev: &Arc<WatchEvent>) -> bool {
        if !self.filter.matches(ev) {
            return !self.tx.is_closed();
        }
        match self.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Events in (after, until], at most `limit`, oldest first.
pub(crate) fn read_events(
    conn: &Connection,
    after: u64,
    until: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Arc<WatchEvent>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT rev, type, resource, object FROM events WHERE rev > ?1 AND rev <= ?2 ORDER BY rev LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![after as i64, until as i64, limit], |r| {
        let rev: i64 = r.get(0)?;
        let ty: String = r.get(1)?;
        let resource: String = r.get(2)?;
        let text: String = r.get(3)?;
        let object: Value = serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?;
        let ty = EventType::parse(&ty).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("unknown event type {ty:?}").into(),
            )
        })?;
        Ok(Arc::new(WatchEvent {
            ty,
            revision: rev as u64,
            resource,
            object: Arc::new(object),
        }))
    })?;
    rows.collect()
}

/// Replay of events older than the in-memory cache, read page by page from SQLite.
pub(crate) struct Backlog {
    path: PathBuf,
    conn: Option<Connection>,
    cursor: u64,
    until: u64,
}

impl Backlog {
    pub(crate) fn new(path: PathBuf, from: u64, until: u64) -> Self {
        Backlog {
            path,
            conn: None,
            cursor: from,
            until,
        }
    }

    fn done(&self) -> bool {
        self.cursor >= self.until
    }

    /// The next page. Reading the compacted revision in the same read transaction as the
    /// events makes a concurrent compaction show up as 410, never as a gap.
    fn fetch(&mut self) -> Result<Vec<Arc<WatchEvent>>> {
        let db = |e: rusqlite::Error| Error::internal(format!("cannot read the event log: {e}"));
        if self.conn.is_none() {
            let conn = Connection::open(&self.path).map_err(db)?;
            configure(&conn)?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("opened above");
        let tx = conn.transaction().map_err(db)?;
        let compacted = read_meta(&tx, "compacted").map_err(db)?;
        if self.cursor < compacted {
            return Err(too_old(self.cursor, compacted));
        }
        let page = read_events(&tx, self.cursor, self.until, PAGE).map_err(db)?;
        drop(tx);
        self.cursor = match page.last() {
            Some(last) if page.len() == PAGE => last.revision,
            _ => self.until,
        };
        if self.done() {
            // Replay is over; do not keep a database handle per idle watcher.
            self.conn = None;
        }
        Ok(page)
    }
}

/// A stream of [`WatchEvent`]s. It ends with `None` when the store is dropped, or with one
/// `Some(Err(..))` of kind Expired when the events it needs are gone (compacted during replay,
/// or not consumed fast enough); the client then relists, as Kubernetes clients do on 410.
pub struct Watch {
    inner: Arc<Inner>,
    filter: Filter,
    last: u64,
    replay: VecDeque<Arc<WatchEvent>>,
    backlog: Option<Backlog>,
    live: mpsc::Receiver<Arc<WatchEvent>>,
    overflow: Arc<AtomicBool>,
    finished: bool,
}

impl Watch {
    pub(crate) fn new(
        inner: Arc<Inner>,
        filter: Filter,
        from: u64,
        replay: VecDeque<Arc<WatchEvent>>,
        backlog: Option<Backlog>,
        live: mpsc::Receiver<Arc<WatchEvent>>,
        overflow: Arc<AtomicBool>,
    ) -> Self {
        Watch {
            inner,
            filter,
            last: from,
            replay,
            backlog,
            live,
            overflow,
            finished: false,
        }
    }

    /// The revision of the last event delivered (or the revision the watch started from).
    pub fn revision(&self) -> u64 {
        self.last
    }

    /// A revision this watch is caught up to: every event up to it that matches the watch has
    /// been returned by [`Watch::next`]. `None` while events are still waiting to be taken.
    /// This is what a `BOOKMARK` event may carry.
    pub fn bookmark(&self) -> Option<u64> {
        if self.finished
            || !self.replay.is_empty()
            || self.backlog.is_some()
            || self.overflow.load(Ordering::Acquire)
        {
            return None;
        }
        // The revision is read before looking at the queue: the writer publishes an event and
        // its revision under one lock, so an empty queue afterwards means nothing up to that
        // revision is still pending.
        let head = self.inner.revision();
        self.live.is_empty().then_some(head.max(self.last))
    }

    /// The next event. Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(ev) = self.replay.pop_front() {
                if let Some(ev) = self.accept(ev) {
                    return Some(Ok(ev));
                }
                continue;
            }
            if let Some(backlog) = self.backlog.as_mut() {
                match backlog.fetch() {
                    Ok(page) => {
                        if backlog.done() {
                            self.backlog = None;
                        }
                        let filter = &self.filter;
                        self.replay
                            .extend(page.into_iter().filter(|e| filter.matches(e)));
                    }
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Some(ev) => {
                    if let Some(ev) = self.accept(ev) {
                        return Some(Ok(ev));
                    }
                }
                None => {
                    self.finished = true;
                    if self.overflow.load(Ordering::Acquire) {
                        return Some(Err(Error::expired(format!(
                            "the watch fell too far behind after resource version {}; relist and watch again",
                            self.last
                        ))));
                    }
                    return None;
                }
            }
        }
    }

    fn accept(&mut self, ev: Arc<WatchEvent>) -> Option<WatchEvent> {
        if ev.revision <= self.last {
            return None;
        }
        self.last = ev.revision;
        Some(Arc::unwrap_or_clone(ev))
    }
}
