//! Guest agent client over the virtio-serial chardev socket.
//!
//! The agent has no request ids, so the stream is put into a known state with
//! `guest-sync-delimited`: the agent prefixes its reply with a 0xFF byte, and everything before
//! that marker (late replies to timed-out commands, parser errors) is discarded. A connection is
//! re-synced after any timeout or error, and re-opened after any I/O failure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::error::{Error, Result};
use crate::qmp::str_field;

/// Deadline of an agent command unless changed with [`Qga::with_deadline`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one sync attempt; a silent agent must not eat a whole long deadline.
const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
const EXEC_POLL: Duration = Duration::from_millis(20);
const SYNC_MARKER: u8 = 0xFF;

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    synced: bool,
}

struct Inner {
    path: PathBuf,
    conn: tokio::sync::Mutex<Option<Conn>>,
    next_sync: AtomicU64,
}

/// Guest agent client. Clones share one connection; commands are serialised on it.
#[derive(Clone)]
pub struct Qga {
    inner: Arc<Inner>,
    deadline: Duration,
}

impl std::fmt::Debug for Qga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qga")
            .field("path", &self.inner.path)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Output of a finished `guest-exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; 128 + signal number when the process was killed by a signal.
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// What `guest-fsfreeze-status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeStatus {
    Thawed,
    Frozen,
    Other(String),
}

impl Qga {
    /// A client for the agent socket at `path`. Connects lazily, so the agent need not be up yet.
    pub fn new(path: impl AsRef<Path>) -> Qga {
        Qga {
            inner: Arc::new(Inner {
                path: path.as_ref().to_path_buf(),
                conn: tokio::sync::Mutex::new(None),
                next_sync: AtomicU64::new(process_seed()),
            }),
            deadline: DEFAULT_TIMEOUT,
        }
    }

    /// The same connection with a different per-command deadline.
    pub fn with_deadline(&self, deadline: Duration) -> Qga {
        Qga {
            inner: Arc::clone(&self.inner),
            deadline,
        }
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `command` and returns its `return` value, within this handle's deadline.
    pub async fn execute(&self, command: &str, args: Option<Value>) -> Result<Value> {
        let deadline = self.deadline;
        let started = Instant::now();
        let mut guard = self.inner.conn.lock().await;
        // Waiting for another command counts against this one's deadline.
        let left = deadline.saturating_sub(started.elapsed());
        let result = tokio::time::timeout(left, self.exchange(&mut guard, command, args)).await;
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                match &e {
                    // The agent answered; the stream is still in step.
                    Error::Agent { .. } => {}
                    Error::Protocol(_) => {
                        if let Some(c) = guard.as_mut() {
                            c.synced = false;
                        }
                    }
                    _ => *guard = None,
                }
                Err(e)
            }
            Err(_) => {
                // A late reply may still arrive: the next command must re-sync first.
                if let Some(c) = guard.as_mut() {
                    c.synced = false;
                }
                Err(Error::timeout(format!("guest agent {command}"), deadline))
            }
        }
    }

    async fn exchange(
        &self,
        slot: &mut Option<Conn>,
        command: &str,
        args: Option<Value>,
    ) -> Result<Value> {
        if slot.is_none() {
            let stream = UnixStream::connect(&self.inner.path).await.map_err(|e| {
                Error::io(
                    format!("cannot connect to {}", self.inner.path.display()),
                    e,
                )
            })?;
            let (r, w) = stream.into_split();
            *slot = Some(Conn {
                reader: BufReader::new(r),
                writer: w,
                synced: false,
            });
        }
        let Some(conn) = slot.as_mut() else {
            return Err(Error::Closed(self.inner.path.display().to_string()));
        };
        if !conn.synced {
            self.sync_conn(conn).await?;
        }
        // Out of step until the reply is read: if this future is dropped half way (a caller's
        // own timeout), the next command re-syncs instead of reading our reply as its own.
        conn.synced = false;
        let mut msg = json!({ "execute": command });
        if let Some(args) = args {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        conn.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| Error::io(format!("cannot send guest agent {command}"), e))?;
        let reply = read_line(&mut conn.reader, &self.inner.path).await?;
        conn.synced = true;
        let reply: Value = serde_json::from_slice(trim_json(&reply)).map_err(|e| {
            Error::Protocol(format!(
                "invalid agent reply {:?}: {e}",
                String::from_utf8_lossy(&reply)
            ))
        })?;
        if let Some(ret) = reply.get("return") {
            Ok(ret.clone())
        } else if let Some(err) = reply.get("error") {
            Err(Error::Agent {
                command: command.to_string(),
                class: str_field(err, "class"),
                desc: str_field(err, "desc"),
            })
        } else {
            Err(Error::Protocol(format!(
                "agent reply without return: {reply}"
            )))
        }
    }

    /// Sends 0xFF (resets the agent's parser) and `guest-sync-delimited`, then skips input up to
    /// the agent's 0xFF marker and a reply that echoes our id.
    async fn sync_conn(&self, conn: &mut Conn) -> Result<()> {
        let id = self.inner.next_sync.fetch_add(1, Ordering::SeqCst) & ((1 << 52) - 1);
        let mut out = vec![SYNC_MARKER];
        out.extend_from_slice(
            json!({ "execute": "guest-sync-delimited", "arguments": { "id": id } })
                .to_string()
                .as_bytes(),
        );
        out.push(b'\n');
        conn.writer
            .write_all(&out)
            .await
            .map_err(|e| Error::io("cannot send guest-sync-delimited", e))?;
        let wait = async {
            loop {
                let mut skipped = Vec::new();
                let n = conn
                    .reader
                    .read_until(SYNC_MARKER, &mut skipped)
                    .await
                    .map_err(|e| Error::io("cannot read guest agent sync reply", e))?;
                if n == 0 {
                    return Err(Error::Closed(self.inner.path.display().to_string()));
                }
                if skipped.last() != Some(&SYNC_MARKER) {
                    continue;
                }
                let line = read_line(&mut conn.reader, &self.inner.path).await?;
                // A stale marker from an earlier sync is followed by an older id: keep looking.
                if let Ok(v) = serde_json::from_slice::<Value>(trim_json(&line)) {
                    if v.get("return").and_then(Value::as_u64) == Some(id) {
                        return Ok(());
                    }
                }
            }
        };
        tokio::time::timeout(SYNC_TIMEOUT.min(self.deadline), wait)
            .await
            .map_err(|_| Error::timeout("guest agent sync", SYNC_TIMEOUT.min(self.deadline)))??;
        conn.synced = true;
        Ok(())
    }

    /// Forces a re-sync now, within the deadline.
    pub async fn sync(&self) -> Result<()> {
        let mut guard = self.inner.conn.lock().await;
        if let Some(c) = guard.as_mut() {
            c.synced = false;
        }
        drop(guard);
        self.ping().await
    }

    /// `guest-ping`.
    pub async fn ping(&self) -> Result<()> {
        self.execute("guest-ping", None).await.map(|_| ())
    }

    /// Pings until the agent answers or `timeout` passes; returns how long it took.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let short = self.with_deadline(Duration::from_secs(2));
        loop {
            let err = match short.ping().await {
                Ok(()) => return Ok(start.elapsed()),
                Err(e) => e,
            };
            if start.elapsed() >= timeout {
                tracing::debug!("guest agent not ready: {err}");
                return Err(Error::timeout("waiting for the guest agent", timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `guest-info`.
    pub async fn info(&self) -> Result<Value> {
        self.execute("guest-info", None).await
    }

    /// `guest-get-osinfo`.
    pub async fn get_osinfo(&self) -> Result<Value> {
        self.execute("guest-get-osinfo", None).await
    }

    /// `guest-fsfreeze-status`.
    pub async fn fsfreeze_status(&self) -> Result<FreezeStatus> {
        let v = self.execute("guest-fsfreeze-status", None).await?;
        Ok(match v.as_str() {
            Some("thawed") => FreezeStatus::Thawed,
            Some("frozen") => FreezeStatus::Frozen,
            Some(other) => FreezeStatus::Other(other.to_string()),
            None => return Err(Error::Protocol(format!("fsfreeze-status returned {v}"))),
        })
    }

    /// Freezes the guest's filesystems. The guard thaws them: explicitly with
    /// [`FreezeGuard::thaw`], or in a background task when dropped. If the freeze itself fails
    /// or times out, a thaw is issued before returning the error, since the guest may have
    /// frozen some filesystems anyway.
    pub async fn fsfreeze_freeze(&self) -> Result<FreezeGuard> {
        let requested_at = Instant::now();
        match self.execute("guest-fsfreeze-freeze", None).await {
            Ok(v) => Ok(FreezeGuard {
                qga: self.clone(),
                requested_at,
                frozen_at: Instant::now(),
                filesystems: v.as_u64().unwrap_or(0),
                thawed: false,
            }),
            Err(e) => {
                if let Err(te) = thaw_with_retries(self).await {
                    tracing::error!("thaw after failed freeze failed: {te}");
                }
                Err(e)
            }
        }
    }

    /// `guest-fsfreeze-thaw`: returns the number of filesystems thawed.
    pub async fn fsfreeze_thaw(&self) -> Result<u64> {
        let v = self.execute("guest-fsfreeze-thaw", None).await?;
        Ok(v.as_u64().unwrap_or(0))
    }

    /// Thaws the guest if it reports being frozen (for example after a daemon crash mid-freeze).
    /// Returns whether a thaw was needed.
    pub async fn thaw_if_frozen(&self) -> Result<bool> {
        match self.fsfreeze_status().await? {
            FreezeStatus::Thawed => Ok(false),
            _ => {
                self.fsfreeze_thaw().await?;
                Ok(true)
            }
        }
    }

    /// Starts `path args...` in the guest with captured output and returns its guest pid.
    pub async fn exec_spawn(&self, path: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<i64> {
        let mut a = json!({ "path": path, "arg": args, "capture-output": true });
        if let Some(input) = stdin {
            a["input-data"] = json!(base64::engine::general_purpose::STANDARD.encode(input));
        }
        let v = self.execute("guest-exec", Some(a)).await?;
        v.get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::Protocol(format!("guest-exec returned {v}")))
    }

    /// `guest-exec-status`: `None` while the process runs.
    pub async fn exec_status(&self, pid: i64) -> Result<Option<ExecOutput>> {
        let v = self
            .execute("guest-exec-status", Some(json!({ "pid": pid })))
            .await?;
        if !v.get("exited").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(None);
        }
        let decode = |key: &str| -> Result<Vec<u8>> {
            match v.get(key).and_then(Value::as_str) {
                Some(s) => base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| Error::Protocol(format!("bad base64 in {key}: {e}"))),
                None => Ok(Vec::new()),
            }
        };
        let exit_code = match (
            v.get("exitcode").and_then(Value::as_i64),
            v.get("signal").and_then(Value::as_i64),
        ) {
            (Some(code), _) => code as i32,
            (None, Some(sig)) => 128 + sig as i32,
            (None, None) => -1,
        };
        Ok(Some(ExecOutput {
            exit_code,
            stdout: decode("out-data")?,
            stderr: decode("err-data")?,
        }))
    }

    /// Runs `path args...` in the guest, feeding `stdin`, and waits for it within this handle's
    /// deadline (the whole run, not each poll).
    pub async fn exec(
        &self,
        path: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput> {
        let start = Instant::now();
        let pid = self.exec_spawn(path, args, stdin).await?;
        loop {
            let left = self.deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::timeout(format!("guest-exec {path}"), self.deadline));
            }
            if let Some(out) = self.with_deadline(left).exec_status(pid).await? {
                return Ok(out);
            }
            tokio::time::sleep(EXEC_POLL.min(left)).await;
        }
    }

    /// Runs `sh -c script` in the guest.
    pub async fn sh(&self, script: &str) -> Result<ExecOutput> {
        self.exec("/bin/sh", &["-c", script], None).await
    }
}

/// Holds a guest freeze. Thaw it with [`FreezeGuard::thaw`]; dropping it unthawed starts a
/// background thaw so a guest is never left frozen.
#[must_use = "dropping the guard thaws the guest in the background"]
pub struct FreezeGuard {
    qga: Qga,
    requested_at: Instant,
    frozen_at: Instant,
    filesystems: u64,
    thawed: bool,
}

/// Timings of a freeze that ended with a thaw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreezeWindow {
    /// From sending the freeze to the thaw's reply: how long guest writes could have blocked.
    pub window: Duration,
    /// How long the freeze command took.
    pub freeze_took: Duration,
    /// How long the thaw command took.
    pub thaw_took: Duration,
    pub filesystems: u64,
}

impl std::fmt::Debug for FreezeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreezeGuard")
            .field("filesystems", &self.filesystems)
            .field("frozen_for", &self.frozen_at.elapsed())
            .field("thawed", &self.thawed)
            .finish()
    }
}

impl FreezeGuard {
    /// Number of filesystems the agent froze.
    pub fn filesystems(&self) -> u64 {
        self.filesystems
    }

    /// When the freeze command was sent.
    pub fn requested_at(&self) -> Instant {
        self.requested_at
    }

    /// When the freeze command answered.
    pub fn frozen_at(&self) -> Instant {
        self.frozen_at
    }

    /// Time since the freeze command was sent.
    pub fn elapsed(&self) -> Duration {
        self.requested_at.elapsed()
    }

    /// Thaws now. On failure the guard still thaws in the background.
    pub async fn thaw(mut self) -> Result<FreezeWindow> {
        let started = Instant::now();
        let result = thaw_with_retries(&self.qga).await;
        match result {
            Ok(_) => {
                self.thawed = true;
                Ok(FreezeWindow {
                    window: self.requested_at.elapsed(),
                    freeze_took: self.frozen_at.duration_since(self.requested_at),
                    thaw_took: started.elapsed(),
                    filesystems: self.filesystems,
                })
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        if self.thawed {
            return;
        }
        let qga = self.qga.clone();
        tracing::warn!("freeze guard dropped while frozen: thawing in the background");
        let task = async move {
            if let Err(e) = thaw_with_retries(&qga).await {
                tracing::error!(path = %qga.path().display(), "background thaw failed: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(task);
            }
            Err(_) => {
                // No runtime (dropped from plain code): thaw on a thread of our own.
                std::thread::spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(task),
                        Err(e) => tracing::error!("cannot start a runtime to thaw: {e}"),
                    }
                });
            }
        }
    }
}

/// Thaw tries a few times: a thaw racing a timed-out freeze may find the agent busy.
async fn thaw_with_retries(qga: &Qga) -> Result<u64> {
    let mut last = None;
    for attempt in 0..5 {
        match qga.fsfreeze_thaw().await {
            Ok(n) => return Ok(n),
            Err(e) => {
                tracing::warn!(attempt, "guest thaw failed: {e}");
                last = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
    }
    Err(last.unwrap_or_else(|| Error::Guest("thaw failed".into())))
}

async fn read_line(reader: &mut BufReader<OwnedReadHalf>, path: &Path) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| Error::io(format!("cannot read from {}", path.display()), e))?;
    if n == 0 {
        return Err(Error::Closed(path.display().to_string()));
    }
    Ok(line)
}

fn trim_json(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace() && *c != SYNC_MARKER)
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// Sync ids start from a per-process value so that a reply meant for a previous daemon's sync
/// is not mistaken for ours.
fn process_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ ((std::process::id() as u64) << 32)) & ((1 << 48) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_json_strips_marker_and_whitespace() {
        assert_eq!(trim_json(b"\xff{\"return\": 1}\r\n"), b"{\"return\": 1}");
        assert_eq!(trim_json(b"  \n"), b"");
    }
}
