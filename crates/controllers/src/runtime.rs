//! The controller runtime, in the spirit of kube-rs: a watch feeds a de-duplicating work queue;
//! a reconcile reads current state, takes one step, and returns an [`Action`]. Errors requeue
//! with exponential backoff. The same key is never reconciled twice at once.

use api::registry::Resource;
use api::{meta, Error, ErrorKind};
use futures::future::BoxFuture;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;
use tokio::sync::Notify;

/// Identifies one object of a reconciler's kind. Cluster-scoped objects have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
    pub fn of(obj: &Value) -> Self {
        ObjectKey::new(meta::namespace(obj), meta::name(obj))
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What to do after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long, even if nothing changes.
    Requeue(Duration),
    /// Wait for the next change of the object or of something it watches.
    AwaitChange,
}

impl Action {
    pub fn requeue_ms(ms: u64) -> Self {
        Action::Requeue(Duration::from_millis(ms))
    }
}

/// Maps a change of a watched object to the keys of the reconciler's kind that care.
pub type Mapper = Arc<dyn Fn(&Value) -> Vec<ObjectKey> + Send + Sync>;

pub trait Reconciler: Send + Sync + 'static {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;
    /// The kind this reconciler owns.
    fn resource(&self) -> &'static Resource;
    /// Other kinds whose changes should wake objects of this kind.
    fn watches(&self) -> Vec<(&'static Resource, Mapper)> {
        Vec::new()
    }
    /// How many keys may be reconciled at once.
    fn concurrency(&self) -> usize {
        4
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>>;
}

/// Maps a watched object to the owner of the reconciler's kind named in its ownerReferences.
pub fn map_to_owner(kind: &'static str) -> Mapper {
    Arc::new(move |obj: &Value| {
        obj["metadata"]["ownerReferences"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .filter(|r| r["kind"] == kind)
                    .filter_map(|r| r["name"].as_str())
                    .map(|n| ObjectKey::new(meta::namespace(obj), n))
                    .collect()
            })
            .unwrap_or_default()
    })
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<ObjectKey>,
    queued: HashSet<ObjectKey>,
    active: HashSet<ObjectKey>,
    /// Keys that changed while being reconciled: they run again once the current pass ends.
    dirty: HashSet<ObjectKey>,
    failures: HashMap<ObjectKey, u32>,
}

/// A de-duplicating work queue with delayed adds.
#[derive(Clone)]
pub struct WorkQueue {
    state: Arc<Mutex<QueueState>>,
    notify: Arc<Notify>,
}

impl Default for WorkQueue {
    fn default() -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(QueueState::default())),
            notify: Arc::new(Notify::new()),
        }
    }
}

impl WorkQueue {
    pub fn add(&self, key: ObjectKey) {
        let mut st = self.state.lock().expect("queue lock");
        if st.active.contains(&key) {
            st.dirty.insert(key);
            return;
        }
        if st.queued.insert(key.clone()) {
            st.queue.push_back(key);
            drop(st);
            self.notify.notify_one();
        }
    }

    pub fn add_after(&self, key: ObjectKey, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    async fn next(&self) -> ObjectKey {
        loop {
            {
                let mut st = self.state.lock().expect("queue lock");
                if let Some(k) = st.queue.pop_front() {
                    st.queued.remove(&k);
                    st.active.insert(k.clone());
                    return k;
                }
            }
            self.notify.notified().await;
        }
    }

    fn done(&self, key: &ObjectKey, failed: bool) -> Duration {
        let mut st = self.state.lock().expect("queue lock");
        st.active.remove(key);
        let backoff = if failed {
            let n = st.failures.entry(key.clone()).or_insert(0);
            *n = (*n + 1).min(16);
            // 200 ms doubling up to 30 s.
            Duration::from_millis((200u64 << (*n - 1).min(8)).min(30_000))
        } else {
            st.failures.remove(key);
            Duration::ZERO
        };
        if st.dirty.remove(key) {
            drop(st);
            self.add(key.clone());
        }
        backoff
    }
}

/// Runs reconcilers against a store until the process ends.
pub struct Runtime {
    store: Arc<dyn Store>,
    reconcilers: Vec<Arc<dyn Reconciler>>,
}

impl Runtime {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Runtime {
            store,
            reconcilers: Vec::new(),
        }
    }

    pub fn register(&mut self, r: Arc<dyn Reconciler>) -> &mut Self {
        self.reconcilers.push(r);
        self
    }

    /// Starts every reconciler; returns once they are all watching.
    pub fn start(self) {
        for r in self.reconcilers {
            let q = WorkQueue::default();
            spawn_feed(
                self.store.clone(),
                r.resource(),
                q.clone(),
                Arc::new(|o: &Value| vec![ObjectKey::of(o)]),
            );
            for (res, mapper) in r.watches() {
                spawn_feed(self.store.clone(), res, q.clone(), mapper);
            }
            for _ in 0..r.concurrency().max(1) {
                let (r, q) = (r.clone(), q.clone());
                tokio::spawn(async move {
                    loop {
                        let key = q.next().await;
                        let started = std::time::Instant::now();
                        let result = r.reconcile(&key).await;
                        let elapsed = started.elapsed();
                        match result {
                            Ok(action) => {
                                q.done(&key, false);
                                if let Action::Requeue(d) = action {
                                    q.add_after(key, d);
                                }
                            }
                            Err(e) => {
                                let backoff = q.done(&key, true);
                                if e.is(ErrorKind::Conflict) {
                                    tracing::debug!(controller = r.name(), %key, error = %e, "conflict; retrying");
                                } else if !e.is(ErrorKind::NotFound) {
                                    tracing::warn!(controller = r.name(), %key, error = %e, ?elapsed, "reconcile failed; retrying in {:?}", backoff);
                                }
                                q.add_after(key, backoff);
                            }
                        }
                    }
                });
            }
        }
    }
}

/// Lists `res` and enqueues everything, then follows its watch; on expiry, lists again.
fn spawn_feed(store: Arc<dyn Store>, res: &'static Resource, q: WorkQueue, mapper: Mapper) {
    tokio::spawn(async move {
        loop {
            let everything = api::meta::LabelSelector::default();
            let fields = api::meta::FieldSelector::default();
            let list = match store.list(res, None, &everything, &fields) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(resource = res.plural, error = %e, "list failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for o in &list.items {
                for k in mapper(o) {
                    q.add(k);
                }
            }
            let mut w = match store.watch(Some(res), None, list.revision) {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!(resource = res.plural, error = %e, "watch failed; relisting");
                    continue;
                }
            };
            while let Some(ev) = w.next().await {
                match ev {
                    Ok(ev) => {
                        for k in mapper(&ev.object) {
                            q.add(k);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    });
}

/// Returns NotFound as None, so reconcilers can treat a vanished object as done.
pub fn ignore_not_found<T>(r: api::Result<T>) -> api::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `status` of `obj`, re-reading and retrying when the object moved on meanwhile. The
/// closure computes the new status from the freshest object, so no update is lost.
pub fn update_status_with(
    store: &dyn Store,
    res: &'static Resource,
    key: &ObjectKey,
    mut f: impl FnMut(&mut Value),
) -> api::Result<Arc<Value>> {
    for _ in 0..8 {
        let cur = store.get(res, &key.namespace, &key.name)?;
        let mut next = (*cur).clone();
        f(&mut next);
        if next["status"] == cur["status"] {
            return Ok(cur);
        }
        match store.update_status(res, next) {
            Ok(v) => return Ok(v),
            Err(e) if e.is(ErrorKind::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::conflict(format!("status of {key} kept changing")))
}

/// Same as [`update_status_with`] for the main resource (spec, metadata).
pub fn update_with(
    store: &dyn Store,
    res: &'static Resource,
    key: &ObjectKey,
    mut f: impl FnMut(&mut Value),
) -> api::Result<Arc<Value>> {
    for _ in 0..8 {
        let cur = store.get(res, &key.namespace, &key.name)?;
        let mut next = (*cur).clone();
        f(&mut next);
        if next == *cur {
            return Ok(cur);
        }
        match store.update(res, next) {
            Ok(v) => return Ok(v),
            Err(e) if e.is(ErrorKind::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::conflict(format!("{key} kept changing")))
}
