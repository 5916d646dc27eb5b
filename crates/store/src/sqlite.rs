//! The SQLite backend: one writer thread with group commit, an in-memory index for reads, and
//! the live side of the watch hub.

use crate::ops::{self, Op, Outcome};
use crate::watch::{Backlog, Filter, Subscriber, Watch};
use crate::{too_old, ObjectList, Preconditions, Store, StoreOptions, WatchEvent};
use api::meta::{self, FieldSelector, LabelSelector};
use api::{Error, Resource, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

/// The most writes one transaction takes; bounds the latency of the first write of a batch.
const MAX_BATCH: usize = 1024;

type ObjKey = (String, String);

/// All objects of one resource, sorted by (namespace, name) as etcd keys sort, with an index of
/// label pairs so that equality selectors do not scan.
#[derive(Default)]
struct ResIndex {
    objects: BTreeMap<ObjKey, Arc<Value>>,
    labels: HashMap<String, HashMap<String, BTreeSet<ObjKey>>>,
}

impl ResIndex {
    fn unindex(&mut self, key: &ObjKey, obj: &Value) {
        let Some(labels) = meta::labels(obj) else {
            return;
        };
        for (k, v) in labels {
            let Some(v) = v.as_str() else { continue };
            if let Some(values) = self.labels.get_mut(k) {
                if let Some(keys) = values.get_mut(v) {
                    keys.remove(key);
                    if keys.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    self.labels.remove(k);
                }
            }
        }
    }

    fn index(&mut self, key: &ObjKey, obj: &Value) {
        let Some(labels) = meta::labels(obj) else {
            return;
        };
        for (k, v) in labels {
            let Some(v) = v.as_str() else { continue };
            self.labels
                .entry(k.clone())
                .or_default()
                .entry(v.to_string())
                .or_default()
                .insert(key.clone());
        }
    }

    fn put(&mut self, key: ObjKey, obj: Arc<Value>) {
        if let Some(old) = self.objects.remove(&key) {
            self.unindex(&key, &old);
        }
        self.index(&key, &obj);
        self.objects.insert(key, obj);
    }

    fn remove(&mut self, key: &ObjKey) {
        if let Some(old) = self.objects.remove(key) {
            self.unindex(key, &old);
        }
    }

    fn list(
        &self,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Arc<Value>> {
        let ok = |o: &Value| labels.matches(meta::labels(o)) && fields.matches(o);
        if let (Some(ns), Some(name)) = (namespace, fields.name()) {
            return self
                .objects
                .get(&(ns.to_string(), name.to_string()))
                .filter(|o| ok(o))
                .cloned()
                .into_iter()
                .collect();
        }
        if let Some((k, v)) = labels.equalities().next() {
            let Some(keys) = self.labels.get(k).and_then(|vs| vs.get(v)) else {
                return Vec::new();
            };
            return keys
                .iter()
                .filter(|(ns, _)| namespace.is_none_or(|want| want == ns))
                .filter_map(|key| self.objects.get(key))
                .filter(|o| ok(o))
                .cloned()
                .collect();
        }
        let all_ok = labels.is_empty() && fields.is_empty();
        let pick = |o: &&Arc<Value>| all_ok || ok(o);
        match namespace {
            Some(ns) => self
                .objects
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, o)| o)
                .filter(pick)
                .cloned()
                .collect(),
            None => self.objects.values().filter(pick).cloned().collect(),
        }
    }
}

pub(crate) struct State {
    resources: HashMap<String, ResIndex>,
    pub(crate) revision: u64,
    pub(crate) compacted: u64,
    /// The most recent events, contiguous and ending at `revision`.
    pub(crate) ring: VecDeque<Arc<WatchEvent>>,
    pub(crate) subscribers: Vec<Subscriber>,
}

impl State {
    fn get(&self, key: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.resources
            .get(key)?
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

pub(crate) struct Inner {
    pub(crate) path: PathBuf,
    state: RwLock<State>,
    opts: StoreOptions,
}

impl Inner {
    pub(crate) fn revision(&self) -> u64 {
        self.read().revision
    }
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Request {
    op: Op,
    reply: mpsc::SyncSender<Result<Arc<Value>>>,
}

/// One write of a batch, ready to persist and publish.
struct Change {
    event: Arc<WatchEvent>,
    namespace: String,
    name: String,
    remove: bool,
}

/// The durable store on SQLite. Dropping it stops the writer thread and ends every watch.
pub struct SqliteStore {
    inner: Arc<Inner>,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// Held for the store's lifetime so that a second process cannot open the same database
    /// and fork the revision history.
    _lock: File,
}

fn db_err(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| Error::internal(format!("{context}: {e}"))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rev INTEGER NOT NULL,
    object TEXT NOT NULL,
    PRIMARY KEY (resource, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rev INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    object TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

pub(crate) fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(db_err("cannot set the busy timeout"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(db_err("cannot enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::internal(format!(
            "the database refused WAL mode (got {mode})"
        )));
    }
    conn.execute_batch("PRAGMA synchronous=FULL;")
        .map_err(db_err("cannot set synchronous=FULL"))?;
    Ok(())
}

pub(crate) fn read_meta(conn: &Connection, key: &str) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`, loading every object into memory.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::internal(format!("cannot open the store lock: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::internal(format!(
                    "the store {} is in use by another process",
                    path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::internal(format!("cannot lock the store: {e}")))
            }
        }

        let conn = Connection::open(path).map_err(db_err("cannot open the store"))?;
        configure(&conn)?;
        conn.execute_batch(SCHEMA)
            .map_err(db_err("cannot create the schema"))?;
        let revision = read_meta(&conn, "revision").map_err(db_err("cannot read the revision"))?;
        let compacted =
            read_meta(&conn, "compacted").map_err(db_err("cannot read the compacted revision"))?;

        let mut resources: HashMap<String, ResIndex> = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT resource, namespace, name, object FROM objects")
                .map_err(db_err("cannot load objects"))?;
            let mut rows = stmt.query([]).map_err(db_err("cannot load objects"))?;
            while let Some(row) = rows.next().map_err(db_err("cannot load objects"))? {
                let resource: String = row.get(0).map_err(db_err("cannot load objects"))?;
                let namespace: String = row.get(1).map_err(db_err("cannot load objects"))?;
                let name: String = row.get(2).map_err(db_err("cannot load objects"))?;
                let text: String = row.get(3).map_err(db_err("cannot load objects"))?;
                let obj: Value = serde_json::from_str(&text).map_err(|e| {
                    Error::internal(format!(
                        "stored object {resource} {namespace}/{name} is corrupt: {e}"
                    ))
                })?;
                resources
                    .entry(resource)
                    .or_default()
                    .put((namespace, name), Arc::new(obj));
            }
        }

        let mut ring = VecDeque::new();
        if opts.watch_cache > 0 {
            let from = compacted.max(revision.saturating_sub(opts.watch_cache as u64));
            ring = crate::watch::read_events(&conn, from, revision, usize::MAX)
                .map_err(db_err("cannot load recent events"))?
                .into();
        }

        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            state: RwLock::new(State {
                resources,
                revision,
                compacted,
                ring,
                subscribers: Vec::new(),
            }),
            opts,
        });
        let (tx, rx) = mpsc::channel();
        let writer_inner = inner.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run_writer(writer_inner, conn, rx))
            .map_err(|e| Error::internal(format!("cannot start the store writer: {e}")))?;
        Ok(SqliteStore {
            inner,
            tx: Some(tx),
            writer: Some(writer),
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn submit(&self, op: Op) -> Result<Arc<Value>> {
        let (reply, answer) = mpsc::sync_channel(1);
        let gone = || Error::internal("the store writer has stopped");
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(Request { op, reply })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!("the store writer panicked");
            }
        }
    }
}

impl Store for SqliteStore {
    fn get(&self, res: &'static Resource, namespace: &str, name: &str) -> Result<Arc<Value>> {
        let namespace = ops::scope_namespace(res, namespace);
        self.inner
            .read()
            .get(&res.key(), namespace, name)
            .ok_or_else(|| crate::not_found(res, name))
    }

    fn list(
        &self,
        res: &'static Resource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Result<ObjectList> {
        let namespace = namespace.map(|ns| ops::scope_namespace(res, ns));
        let st = self.inner.read();
        let items = st
            .resources
            .get(&res.key())
            .map(|idx| idx.list(namespace, labels, fields))
            .unwrap_or_default();
        Ok(ObjectList {
            items,
            revision: st.revision,
        })
    }

    fn create(&self, res: &'static Resource, obj: Value) -> Result<Arc<Value>> {
        self.submit(Op::Create(res, obj))
    }

    fn update(&self, res: &'static Resource, obj: Value) -> Result<Arc<Value>> {
        self.submit(Op::Update(res, obj))
    }

    fn update_status(&self, res: &'static Resource, obj: Value) -> Result<Arc<Value>> {
        self.submit(Op::UpdateStatus(res, obj))
    }

    fn delete(
        &self,
        res: &'static Resource,
        namespace: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Arc<Value>> {
        self.submit(Op::Delete(
            res,
            namespace.to_string(),
            name.to_string(),
            pre.clone(),
        ))
    }

    fn watch(
        &self,
        res: Option<&'static Resource>,
        namespace: Option<&str>,
        from_revision: u64,
    ) -> Result<Watch> {
        let filter = Filter {
            resource: res.map(Resource::key),
            // Cluster-scoped objects have no namespace to match.
            namespace: namespace
                .filter(|_| res.is_none_or(|r| r.namespaced))
                .map(str::to_string),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(self.inner.opts.watch_buffer.max(1));
        let overflow = Arc::new(AtomicBool::new(false));
        let mut st = self.inner.write();
        if from_revision < st.compacted {
            return Err(too_old(from_revision, st.compacted));
        }
        let head = st.revision;
        let mut replay = VecDeque::new();
        let mut backlog = None;
        if from_revision < head {
            let cached = st
                .ring
                .front()
                .is_some_and(|e| e.revision <= from_revision + 1);
            if cached {
                replay.extend(
                    st.ring
                        .iter()
                        .filter(|e| e.revision > from_revision && filter.matches(e))
                        .cloned(),
                );
            } else {
                backlog = Some(Backlog::new(self.inner.path.clone(), from_revision, head));
            }
        }
        st.subscribers.push(Subscriber {
            filter: filter.clone(),
            tx,
            overflow: overflow.clone(),
        });
        drop(st);
        Ok(Watch::new(
            self.inner.clone(),
            filter,
            from_revision,
            replay,
            backlog,
            rx,
            overflow,
        ))
    }

    fn revision(&self) -> u64 {
        self.inner.read().revision
    }

    fn compacted_revision(&self) -> u64 {
        self.inner.read().compacted
    }

    fn compact(&self, up_to: u64) -> Result<()> {
        self.submit(Op::Compact(up_to)).map(|_| ())
    }
}

fn run_writer(inner: Arc<Inner>, mut conn: Connection, rx: mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        process_batch(&inner, &mut conn, batch);
    }
    // The store is gone: end every live watch so that consumers see the stream close.
    inner.write().subscribers.clear();
}

fn process_batch(inner: &Inner, conn: &mut Connection, batch: Vec<Request>) {
    let mut pending: HashMap<(String, String, String), Option<Arc<Value>>> = HashMap::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut replies = Vec::with_capacity(batch.len());
    let mut compact_to = None;
    let (base, compacted) = {
        let st = inner.read();
        let base = st.revision;
        for Request { op, reply } in batch {
            let next = base + changes.len() as u64 + 1;
            let res = match &op {
                Op::Create(r, _) | Op::Update(r, _) | Op::UpdateStatus(r, _) => *r,
                Op::Delete(r, ..) => *r,
                Op::Compact(up_to) => {
                    let current = next - 1;
                    let answer = if *up_to > current {
                        Err(Error::bad_request(format!(
                            "cannot compact to {up_to}: the current revision is {current}"
                        )))
                    } else {
                        compact_to = compact_to.max(Some(*up_to));
                        Ok(Arc::new(Value::Null))
                    };
                    replies.push((reply, answer));
                    continue;
                }
            };
            let key = res.key();
            let outcome = {
                let lookup = |ns: &str, name: &str| -> Option<Arc<Value>> {
                    match pending.get(&(key.clone(), ns.to_string(), name.to_string())) {
                        Some(v) => v.clone(),
                        None => st.get(&key, ns, name),
                    }
                };
                // A bug in one write must not take the writer (and every later write) down.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    ops::plan(op, &lookup, next)
                }))
                .unwrap_or_else(|_| Err(Error::internal("the store failed to apply the write")))
            };
            let answer = match outcome {
                Ok(Outcome::Unchanged(obj)) => Ok(obj),
                Ok(Outcome::Write {
                    ty,
                    namespace,
                    name,
                    object,
                    remove,
                }) => {
                    let object = Arc::new(object);
                    pending.insert(
                        (key.clone(), namespace.clone(), name.clone()),
                        (!remove).then(|| object.clone()),
                    );
                    changes.push(Change {
                        event: Arc::new(WatchEvent {
                            ty,
                            revision: next,
                            resource: key,
                            object: object.clone(),
                        }),
                        namespace,
                        name,
                        remove,
                    });
                    Ok(object)
                }
                Err(e) => Err(e),
            };
            replies.push((reply, answer));
        }
        (base, st.compacted)
    };

    let head = base + changes.len() as u64;
    let retain = inner.opts.retain_events as u64;
    let auto = head.saturating_sub(retain);
    let compact_to = compact_to.max(Some(auto)).filter(|c| *c > compacted);

    if !changes.is_empty() || compact_to.is_some() {
        let committed = commit(conn, &changes, head, compact_to).or_else(|e| {
            // An error reported after the commit reached the log (say, from the sync) must
            // not fork memory from disk: trust what the database says it holds.
            match read_meta(conn, "revision") {
                Ok(rev) if rev == head && head > base => Ok(()),
                _ => Err(e),
            }
        });
        if let Err(e) = committed {
            tracing::error!(error = %e, "store transaction failed");
            let err = Error::internal(format!("the store could not persist the write: {e}"));
            for (reply, _) in replies {
                // A caller that gave up waiting is not an error.
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
        publish(inner, changes, head, compact_to);
    }
    for (reply, answer) in replies {
        let _ = reply.send(answer);
    }
}

fn commit(
    conn: &mut Connection,
    changes: &[Change],
    head: u64,
    compact_to: Option<u64>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO objects (resource, namespace, name, rev, object) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut del = tx.prepare_cached(
            "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (rev, type, resource, namespace, name, object) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for c in changes {
            let ev = &c.event;
            let text = serde_json::to_string(&*ev.object)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            let rev = ev.revision as i64;
            if c.remove {
                del.execute(params![ev.resource, c.namespace, c.name])?;
            } else {
                put.execute(params![ev.resource, c.namespace, c.name, rev, text])?;
            }
            event.execute(params![
                rev,
                ev.ty.as_str(),
                ev.resource,
                c.namespace,
                c.name,
                text
            ])?;
        }
        let mut set_meta =
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
        set_meta.execute(params!["revision", head as i64])?;
        if let Some(c) = compact_to {
            tx.execute("DELETE FROM events WHERE rev <= ?1", [c as i64])?;
            set_meta.execute(params!["compacted", c as i64])?;
        }
    }
    tx.commit()
}

/// Makes a committed batch visible: the index, the revision, the event cache and the live
/// watchers change together under one lock, so a watch registered at any point sees each
/// event exactly once.
fn publish(inner: &Inner, changes: Vec<Change>, head: u64, compact_to: Option<u64>) {
    let cache = inner.opts.watch_cache;
    let mut st = inner.write();
    for c in &changes {
        let index = st.resources.entry(c.event.resource.clone()).or_default();
        let key = (c.namespace.clone(), c.name.clone());
        if c.remove {
            index.remove(&key);
        } else {
            index.put(key, c.event.object.clone());
        }
    }
    st.revision = head;
    if let Some(c) = compact_to {
        st.compacted = c;
    }
    st.subscribers
        .retain(|s| changes.iter().all(|c| s.offer(&c.event)));
    if cache > 0 {
        st.ring.extend(changes.into_iter().map(|c| c.event));
        let excess = st.ring.len().saturating_sub(cache);
        st.ring.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use crate::EventType;

    #[test]
    fn watches_move_across_tasks() {
        fn send<T: Send + 'static>() {}
        send::<crate::Watch>();
        send::<crate::WatchEvent>();
    }

    #[test]
    fn event_type_names() {
        for t in [EventType::Added, EventType::Modified, EventType::Deleted] {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
    }
}
