//! Getting data into a volume: HTTP imports, uploads and host-assisted copies. Images land in
//! a temp file inside the pool (`.tmp-import-<uid>`, which the driver's recovery removes after
//! a crash), are inspected with `qemu-img info`, and are written into a freshly re-created
//! volume with `qemu-img convert -n --target-is-zero`, so a retried import never mixes old and
//! new data. Raw-to-raw copies use the sparse copier.

use super::errors::StorageResultExt;
use super::pools::Pools;
use super::util::{self, format_quantity};
use crate::runtime::{update_status_with, ObjectKey};
use api::{meta, Error, ErrorKind};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use storage::{Attachment, Driver, Format, VolName};

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub format: String,
    pub virtual_size: u64,
    pub actual_size: u64,
}

fn failed(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Invalid, msg)
}

/// Inspects an untrusted image. Only raw and qcow2 without a backing file are accepted: a
/// backing file would let an image read any file of the host.
pub fn image_info(path: &Path) -> api::Result<ImageInfo> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::internal(format!("cannot run qemu-img: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!(
            "the image is not a valid disk image: {}",
            err.trim().trim_start_matches("qemu-img: ")
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::internal(format!("qemu-img info gave bad JSON: {e}")))?;
    let format = v["format"].as_str().unwrap_or("").to_string();
    if v["backing-filename"].is_string() {
        return Err(failed("images with a backing file are not accepted"));
    }
    if format != "raw" && format != "qcow2" {
        return Err(failed(format!(
            "image format {format:?} is not supported; use raw or qcow2"
        )));
    }
    if v["format-specific"]["data"]["corrupt"] == true {
        return Err(failed("the qcow2 image is marked corrupt"));
    }
    Ok(ImageInfo {
        format,
        virtual_size: v["virtual-size"].as_u64().unwrap_or(0),
        actual_size: v["actual-size"].as_u64().unwrap_or(0),
    })
}

/// Runs `qemu-img convert` into an existing, zeroed target, reporting progress in percent.
fn qemu_convert(
    src: &Path,
    src_fmt: &str,
    dst: &Attachment,
    progress: &(dyn Fn(f64) + Sync),
) -> api::Result<()> {
    let mut child = Command::new("qemu-img")
        .args([
            "convert",
            "-p",
            "-n",
            "--target-is-zero",
            "-f",
            src_fmt,
            "-O",
            dst.format.as_str(),
        ])
        .arg(src)
        .arg(&dst.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::internal(format!("cannot run qemu-img: {e}")))?;
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    if let Some(mut out) = child.stdout.take() {
        let mut buf = [0u8; 256];
        let mut line = String::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b == b'\r' || b == b'\n' {
                    // "    (45.00/100%)"
                    if let Some(p) = line
                        .trim()
                        .trim_start_matches('(')
                        .split('/')
                        .next()
                        .and_then(|p| p.parse::<f64>().ok())
                    {
                        progress(p);
                    }
                    line.clear();
                } else {
                    line.push(b as char);
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::internal(format!("qemu-img: {e}")))?;
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(failed(format!(
            "cannot convert the image: {}",
            err.trim().trim_start_matches("qemu-img: ")
        )));
    }
    Ok(())
}

/// Deletes and re-creates a volume so it is thin and zeroed again.
pub fn reset_volume(driver: &dyn Driver, vol: &VolName, size: u64) -> api::Result<()> {
    match driver.delete_volume(vol) {
        Ok(()) => {}
        Err(e) if e.kind() == storage::ErrorKind::NotFound => {}
        Err(e) => return Err(super::errors::api_error(e)),
    }
    driver.create_volume(vol, size).api()
}

/// Writes an image file into a volume: checks it, re-creates the volume, converts.
pub fn write_image(
    driver: &dyn Driver,
    vol: &VolName,
    size: u64,
    image: &Path,
    progress: &(dyn Fn(f64) + Sync),
) -> api::Result<()> {
    let info = image_info(image)?;
    if info.virtual_size > size {
        return Err(failed(format!(
            "the image's virtual size {} ({} bytes) is larger than the volume ({} bytes); request a larger size",
            format_quantity(info.virtual_size),
            info.virtual_size,
            size
        )));
    }
    driver.ensure_space("import", info.actual_size).api()?;
    reset_volume(driver, vol, size)?;
    let att = driver.attachment(vol).api()?;
    qemu_convert(image, &info.format, &att, progress)
}

/// Copies a volume into a (re-created) volume of another pool or driver.
pub fn copy_volume(
    src: &dyn Driver,
    src_vol: &VolName,
    dst: &dyn Driver,
    dst_vol: &VolName,
    size: u64,
    progress: &(dyn Fn(f64) + Sync),
) -> api::Result<()> {
    let usage = src.usage(src_vol).api()?;
    if usage.size > size {
        return Err(failed(format!(
            "the target ({} bytes) is smaller than the source ({} bytes)",
            size, usage.size
        )));
    }
    dst.ensure_space(&format!("copy of {src_vol}"), usage.allocated)
        .api()?;
    reset_volume(dst, dst_vol, size)?;
    let from = src.attachment(src_vol).api()?;
    let to = dst.attachment(dst_vol).api()?;
    if from.format == Format::Raw && to.format == Format::Raw {
        let report = |done: u64, total: u64| {
            if total > 0 {
                progress(done as f64 * 100.0 / total as f64)
            }
        };
        storage::sparse_copy(&from.path, &to.path, &report).api()?;
        if size > usage.size {
            dst.resize_volume(dst_vol, size).api()?;
        }
        progress(100.0);
        Ok(())
    } else {
        qemu_convert(&from.path, from.format.as_str(), &to, progress)
    }
}

/// A temp file in the pool, removed on drop (and by the driver's recovery after a crash).
pub struct TempImage(pub PathBuf);

impl TempImage {
    pub fn new(driver: &dyn Driver, what: &str, uid: &str) -> TempImage {
        TempImage(driver.root().join(format!(".tmp-{what}-{uid}")))
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Downloads `url` into `dst`, refusing up front when the pool cannot hold it twice (the
/// download and the converted volume).
pub fn download(
    driver: &dyn Driver,
    url: &str,
    dst: &Path,
    progress: &(dyn Fn(f64) + Sync),
) -> api::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(15)))
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| failed(format!("cannot fetch {url}: {e}")))?;
    let status = resp.status();
    if status.as_u16() != 200 {
        return Err(failed(format!("fetching {url} answered HTTP {status}")));
    }
    let len: Option<u64> = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Some(len) = len {
        driver
            .ensure_space(&format!("import of {url}"), len.saturating_mul(2))
            .api()?;
    }
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut file = std::fs::File::create(dst)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", dst.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| failed(format!("download of {url} failed: {e}")))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .map_err(|e| write_error(driver, e))?;
        done += n as u64;
        if let Some(len) = len.filter(|l| *l > 0) {
            progress(done as f64 * 100.0 / len as f64);
        }
    }
    file.sync_all().map_err(|e| write_error(driver, e))?;
    if let Some(len) = len {
        if done != len {
            return Err(failed(format!(
                "download of {url} ended after {done} of {len} bytes"
            )));
        }
    }
    Ok(())
}

fn write_error(driver: &dyn Driver, e: std::io::Error) -> Error {
    if matches!(e.raw_os_error(), Some(28) | Some(122)) {
        Error::new(
            ErrorKind::TooLarge,
            format!("the pool {} ran out of space: {e}", driver.root().display()),
        )
    } else {
        Error::internal(format!(
            "cannot write into the pool {}: {e}",
            driver.root().display()
        ))
    }
}

/// Writes throttled progress ("45.3%") into a DataVolume's status.
pub fn progress_writer<'a>(
    pools: &'a Pools,
    key: &ObjectKey,
    from: f64,
    to: f64,
) -> impl Fn(f64) + Sync + 'a {
    let last = Mutex::new((Instant::now() - Duration::from_secs(10), -1.0f64));
    let key = key.clone();
    move |pct: f64| {
        let overall = from + (to - from) * pct.clamp(0.0, 100.0) / 100.0;
        let mut l = last.lock().expect("progress lock");
        if l.0.elapsed() < Duration::from_millis(500) || (overall - l.1).abs() < 0.1 {
            return;
        }
        *l = (Instant::now(), overall);
        let text = format!("{overall:.1}%");
        let _ = update_status_with(pools.store.as_ref(), util::data_volumes(), &key, |o| {
            o["status"]["progress"] = json!(text);
        });
    }
}

fn uploads_in_progress() -> &'static Mutex<HashSet<String>> {
    static SET: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    SET.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Frees the upload slot of a DataVolume when the upload ends, however it ends.
struct UploadSlot(String);

impl Drop for UploadSlot {
    fn drop(&mut self) {
        uploads_in_progress()
            .lock()
            .expect("uploads lock")
            .remove(&self.0);
    }
}

/// Receives an upload for a DataVolume whose source is `upload: {}` and which is UploadReady:
/// streams the body into a temp file in the pool, then writes it into the volume and marks
/// the DataVolume Succeeded. A failed upload leaves the DataVolume UploadReady for a retry.
pub async fn receive_upload(
    pools: Arc<Pools>,
    namespace: &str,
    name: &str,
    content_length: Option<u64>,
    mut body: BoxStream<'static, std::io::Result<Bytes>>,
) -> api::Result<Value> {
    let dvs = util::data_volumes();
    let dv = pools.store.get(dvs, namespace, name)?;
    if !dv["spec"]["source"]["upload"].is_object() {
        return Err(Error::bad_request(format!(
            "datavolume {namespace}/{name} does not take uploads: its source is not upload"
        )));
    }
    let phase = dv["status"]["phase"].as_str().unwrap_or("Pending");
    match phase {
        "UploadReady" => {}
        "Succeeded" => {
            return Err(Error::conflict(format!(
                "datavolume {namespace}/{name} already holds an uploaded image"
            )));
        }
        other => {
            return Err(Error::precondition(format!(
                "datavolume {namespace}/{name} is not ready for an upload yet (phase {other}); wait for UploadReady"
            )));
        }
    }
    let uid = meta::uid(&dv).to_string();
    if !uploads_in_progress()
        .lock()
        .expect("uploads lock")
        .insert(uid.clone())
    {
        return Err(Error::conflict(format!(
            "an upload into datavolume {namespace}/{name} is already in progress"
        )));
    }
    let _slot = UploadSlot(uid.clone());
    let (_, class, vol) = pools.bound_claim(namespace, name)?;
    let driver = class.driver.clone();
    if let Some(len) = content_length {
        driver
            .ensure_space(
                &format!("upload into {namespace}/{name}"),
                len.saturating_mul(2),
            )
            .api()?;
    }
    let key = ObjectKey::new(namespace, name);
    let tmp = TempImage::new(driver.as_ref(), "upload", &uid);
    {
        let progress = progress_writer(&pools, &key, 0.0, 50.0);
        let mut file = tokio::fs::File::create(&tmp.0)
            .await
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", tmp.0.display())))?;
        let mut done = 0u64;
        use tokio::io::AsyncWriteExt;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| Error::bad_request(format!("the upload was cut off: {e}")))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| write_error(driver.as_ref(), e))?;
            done += chunk.len() as u64;
            if let Some(len) = content_length.filter(|l| *l > 0) {
                progress(done as f64 * 100.0 / len as f64);
            }
        }
        file.sync_all()
            .await
            .map_err(|e| write_error(driver.as_ref(), e))?;
        if let Some(len) = content_length {
            if done != len {
                return Err(Error::bad_request(format!(
                    "the upload ended after {done} of {len} bytes"
                )));
            }
        }
    }
    let p2 = pools.clone();
    let key2 = key.clone();
    let summary = tokio::task::spawn_blocking(move || -> api::Result<Value> {
        let size = driver.usage(&vol).api()?.size;
        let info = image_info(&tmp.0)?;
        let progress = progress_writer(&p2, &key2, 50.0, 100.0);
        write_image(driver.as_ref(), &vol, size, &tmp.0, &progress)?;
        Ok(json!({"format": info.format, "virtualSize": info.virtual_size, "bytes": std::fs::metadata(&tmp.0).map(|m| m.len()).unwrap_or(0)}))
    })
    .await
    .map_err(|e| Error::internal(format!("upload task panicked: {e}")))?;
    match summary {
        Ok(s) => {
            super::datavolume::mark_succeeded(&pools, &key, "Upload Successful")?;
            pools.normal(
                &dv,
                "UploadSucceeded",
                &format!(
                    "uploaded a {} image ({} bytes virtual)",
                    s["format"].as_str().unwrap_or("?"),
                    s["virtualSize"]
                ),
            );
            Ok(
                json!({"kind": "UploadResult", "namespace": namespace, "name": name, "image": s, "phase": "Succeeded"}),
            )
        }
        Err(e) => {
            pools.warn(&dv, "UploadFailed", &e.message);
            let msg = e.message.clone();
            let _ = update_status_with(pools.store.as_ref(), dvs, &key, |o| {
                o["status"]["progress"] = json!("N/A");
                api::set_condition(o, "Running", false, "UploadFailed", &msg);
            });
            Err(e)
        }
    }
}
