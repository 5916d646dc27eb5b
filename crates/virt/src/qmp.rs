//! QMP client: one unix-socket connection, commands matched to replies by `id`, events collected.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Deadline of a QMP command unless the caller gives one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Events kept for [`Qmp::events`]; older ones are dropped.
const EVENT_BACKLOG: usize = 256;

/// An asynchronous QMP event such as `SHUTDOWN`, `STOP` or `RESUME`.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
    /// Seconds and microseconds since the epoch, as QEMU reports them.
    pub timestamp: (i64, i64),
}

type Pending = HashMap<u64, oneshot::Sender<Result<Value>>>;

struct Shared {
    path: PathBuf,
    pending: Mutex<Pending>,
    events: Mutex<VecDeque<QmpEvent>>,
    event_tx: broadcast::Sender<QmpEvent>,
    closed: AtomicBool,
}

struct Inner {
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    next_id: AtomicU64,
    greeting: Value,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A connected, capability-negotiated QMP session. Cheap to clone.
#[derive(Clone)]
pub struct Qmp {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("path", &self.inner.shared.path)
            .finish()
    }
}

impl Qmp {
    /// Connects to the QMP socket at `path` and leaves capability negotiation mode, all within
    /// `timeout`.
    pub async fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Qmp> {
        let path = path.as_ref().to_path_buf();
        let what = format!("QMP connect to {}", path.display());
        tokio::time::timeout(timeout, Self::connect_inner(path))
            .await
            .map_err(|_| Error::timeout(what, timeout))?
    }

    async fn connect_inner(path: PathBuf) -> Result<Qmp> {
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| Error::io(format!("cannot connect to {}", path.display()), e))?;
        let (read, writer) = stream.into_split();
        let mut reader = BufReader::new(read);
        let greeting = read_json_line(&mut reader, &path).await?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Protocol(format!(
                "unexpected QMP greeting: {greeting}"
            )));
        }
        let (event_tx, _) = broadcast::channel(EVENT_BACKLOG);
        let shared = Arc::new(Shared {
            path: path.clone(),
            pending: Mutex::new(HashMap::new()),
            events: Mutex::new(VecDeque::new()),
            event_tx,
            closed: AtomicBool::new(false),
        });
        let reader_task = tokio::spawn(read_loop(reader, Arc::clone(&shared)));
        let qmp = Qmp {
            inner: Arc::new(Inner {
                shared,
                writer: tokio::sync::Mutex::new(writer),
                next_id: AtomicU64::new(1),
                greeting,
                reader: reader_task,
            }),
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// The greeting QEMU sent, with its version.
    pub fn greeting(&self) -> &Value {
        &self.inner.greeting
    }

    /// Runs `command` with the default deadline.
    pub async fn execute(&self, command: &str, args: Option<Value>) -> Result<Value> {
        self.execute_with_timeout(command, args, DEFAULT_TIMEOUT)
            .await
    }

    /// Runs `command` and returns its `return` value, or fails once `timeout` has passed.
    pub async fn execute_with_timeout(
        &self,
        command: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed(shared.path.display().to_string()));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = args {
            msg["arguments"] = args;
        }
        let (tx, rx) = oneshot::channel();
        lock(&shared.pending).insert(id, tx);
        let mut line = msg.to_string();
        line.push('\n');

        // The write runs in its own task so that a caller giving up half way never leaves half
        // a command on the socket, which would garble the next one.
        let inner = Arc::clone(&self.inner);
        let write = tokio::spawn(async move {
            let mut w = inner.writer.lock().await;
            w.write_all(line.as_bytes()).await
        });
        let exchange = async {
            match write.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::io(format!("cannot send QMP {command}"), e)),
                Err(e) => return Err(Error::Protocol(format!("QMP writer task failed: {e}"))),
            }
            match rx.await {
                Ok(reply) => reply,
                Err(_) => Err(Error::Closed(shared.path.display().to_string())),
            }
        };
        let result = tokio::time::timeout(timeout, exchange).await;
        lock(&shared.pending).remove(&id);
        match result {
            Err(_) => Err(Error::timeout(format!("QMP {command}"), timeout)),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Error::Qmp { class, desc, .. })) => Err(Error::Qmp {
                command: command.to_string(),
                class,
                desc,
            }),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Events received so far (the most recent [`EVENT_BACKLOG`]).
    pub fn events(&self) -> Vec<QmpEvent> {
        lock(&self.inner.shared.events).iter().cloned().collect()
    }

    /// Removes and returns the events received so far.
    pub fn take_events(&self) -> Vec<QmpEvent> {
        lock(&self.inner.shared.events).drain(..).collect()
    }

    /// A stream of events received from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.inner.shared.event_tx.subscribe()
    }

    /// Waits for an event called `name`, including one already collected and not taken.
    pub async fn wait_event(&self, name: &str, timeout: Duration) -> Result<QmpEvent> {
        let mut rx = self.subscribe();
        if let Some(ev) = self.events().into_iter().rev().find(|e| e.name == name) {
            return Ok(ev);
        }
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.name == name => return Ok(ev),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(Error::Closed(self.inner.shared.path.display().to_string()))
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::timeout(format!("waiting for QMP event {name}"), timeout))?
    }

    /// True once the socket has closed (QEMU exited or dropped us).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Ordering::SeqCst)
    }

    /// `query-status`: the run state, such as `running` or `paused`.
    pub async fn status(&self) -> Result<String> {
        let v = self.execute("query-status", None).await?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::Protocol(format!("query-status returned {v}")))
    }
}

async fn read_json_line(reader: &mut BufReader<OwnedReadHalf>, path: &Path) -> Result<Value> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .await
        .map_err(|e| Error::io(format!("cannot read from {}", path.display()), e))?;
    if n == 0 {
        return Err(Error::Closed(path.display().to_string()));
    }
    serde_json::from_str(line.trim())
        .map_err(|e| Error::Protocol(format!("invalid QMP JSON {line:?}: {e}")))
}

async fn read_loop(mut reader: BufReader<OwnedReadHalf>, shared: Arc<Shared>) {
    loop {
        let msg = match read_json_line(&mut reader, &shared.path).await {
            Ok(msg) => msg,
            Err(Error::Protocol(e)) => {
                tracing::warn!(path = %shared.path.display(), "skipping QMP message: {e}");
                continue;
            }
            Err(e) => {
                tracing::debug!(path = %shared.path.display(), "QMP reader stops: {e}");
                break;
            }
        };
        if let Some(name) = msg.get("event").and_then(Value::as_str) {
            let ts = msg.get("timestamp");
            let field = |k| {
                ts.and_then(|t| t.get(k))
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            };
            let ev = QmpEvent {
                name: name.to_string(),
                data: msg.get("data").cloned().unwrap_or(Value::Null),
                timestamp: (field("seconds"), field("microseconds")),
            };
            {
                let mut events = lock(&shared.events);
                if events.len() == EVENT_BACKLOG {
                    events.pop_front();
                }
                events.push_back(ev.clone());
            }
            let _ = shared.event_tx.send(ev);
            continue;
        }
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            tracing::warn!("QMP reply without id: {msg}");
            continue;
        };
        let reply = if let Some(ret) = msg.get("return") {
            Ok(ret.clone())
        } else if let Some(err) = msg.get("error") {
            Err(Error::Qmp {
                command: String::new(),
                class: str_field(err, "class"),
                desc: str_field(err, "desc"),
            })
        } else {
            Err(Error::Protocol(format!("QMP reply without return: {msg}")))
        };
        if let Some(tx) = lock(&shared.pending).remove(&id) {
            let _ = tx.send(reply);
        }
    }
    shared.closed.store(true, Ordering::SeqCst);
    // Dropping the senders wakes every waiter with "closed".
    lock(&shared.pending).clear();
}

pub(crate) fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these short critical sections cannot leave the data inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
