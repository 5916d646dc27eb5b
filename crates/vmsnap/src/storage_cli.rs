//! Storage verbs: `vmsnap storage usage`, `vmsnap image-upload`.
//!
//! Usage comes from objects the storage controllers keep fresh: StorageProfile `status.pool`
//! per pool and the `vmsnap.io/allocated-bytes` annotation per claim.

use api::registry::lookup;
use api::{Error, ErrorKind, Result};
use clap::{Args, Subcommand};
use client::Client;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum StorageCmd {
    /// Space used per pool and per volume.
    Usage {
        /// Output format: table (default) or json.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
}

#[derive(Args)]
pub struct ImageUploadArgs {
    /// What to upload into; only `dv` (a DataVolume) is supported.
    pub kind: String,
    /// The DataVolume's name.
    pub name: String,
    /// Size of the new DataVolume, e.g. 2Gi (required unless --no-create).
    #[arg(long)]
    pub size: Option<String>,
    /// The raw or qcow2 image to upload.
    #[arg(long = "image-path")]
    pub image_path: PathBuf,
    /// StorageClass of the new DataVolume (default: the default class).
    #[arg(long)]
    pub storage_class: Option<String>,
    /// Upload into an existing DataVolume instead of creating one.
    #[arg(long)]
    pub no_create: bool,
    /// Wait until the DataVolume is Succeeded (the upload already waits for the conversion).
    #[arg(long)]
    pub wait: bool,
    /// How long to wait for the DataVolume to be ready for the upload.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

fn res(name: &str) -> Result<&'static api::Resource> {
    lookup(name).ok_or_else(|| Error::internal(format!("{name} is not registered")))
}

/// Bytes as a short human figure: 1.5Gi, 300Mi, 12Ki.
fn human(bytes: u64) -> String {
    const UNITS: &[(&str, u64)] = &[
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (u, size) in UNITS {
        if bytes >= *size {
            let v = bytes as f64 / *size as f64;
            return if v >= 100.0 || v.fract() < 0.05 {
                format!("{v:.0}{u}")
            } else {
                format!("{v:.1}{u}")
            };
        }
    }
    format!("{bytes}B")
}

pub fn storage(c: &Client, cmd: StorageCmd) -> Result<()> {
    match cmd {
        StorageCmd::Usage { output } => usage(c, output.as_deref()),
    }
}

fn usage(c: &Client, output: Option<&str>) -> Result<()> {
    let profiles = c.list(res("storageprofiles")?, None, None)?;
    let claims = c.list(res("persistentvolumeclaims")?, None, None)?;
    let mut pools = Vec::new();
    for p in profiles["items"].as_array().into_iter().flatten() {
        let pool = &p["status"]["pool"];
        if !pool.is_object() {
            continue;
        }
        pools.push(json!({
            "storageClass": p["status"]["storageClass"],
            "driver": pool["driver"],
            "path": pool["path"],
            "total": pool["total"],
            "used": pool["used"],
            "free": pool["free"],
            "reserve": pool["reserve"],
            "cloneStrategy": p["status"]["cloneStrategy"],
            "snapshotClass": p["status"]["snapshotClass"],
        }));
    }
    let mut volumes = Vec::new();
    for pvc in claims["items"].as_array().into_iter().flatten() {
        let allocated = pvc["metadata"]["annotations"]["vmsnap.io/allocated-bytes"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok());
        let size = pvc["status"]["capacity"]["storage"]
            .as_str()
            .and_then(api::types::parse_quantity);
        volumes.push(json!({
            "namespace": pvc["metadata"]["namespace"],
            "claim": pvc["metadata"]["name"],
            "storageClass": pvc["spec"]["storageClassName"],
            "phase": pvc["status"]["phase"],
            "volume": pvc["spec"]["volumeName"],
            "size": size,
            "allocated": allocated,
        }));
    }
    if output == Some("json") {
        let doc = json!({"pools": pools, "volumes": volumes});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header([
        "STORAGECLASS",
        "DRIVER",
        "TOTAL",
        "USED",
        "FREE",
        "RESERVE",
        "CLONE",
        "POOL",
    ]);
    let n = |v: &Value| v.as_u64().map(human).unwrap_or_else(|| "-".into());
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for p in &pools {
        t.add_row([
            s(&p["storageClass"]),
            s(&p["driver"]),
            n(&p["total"]),
            n(&p["used"]),
            n(&p["free"]),
            n(&p["reserve"]),
            s(&p["cloneStrategy"]),
            s(&p["path"]),
        ]);
    }
    println!("{t}\n");
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header([
        "CLAIM",
        "STORAGECLASS",
        "STATUS",
        "SIZE",
        "ALLOCATED",
        "VOLUME",
    ]);
    for v in &volumes {
        t.add_row([
            format!("{}/{}", s(&v["namespace"]), s(&v["claim"])),
            s(&v["storageClass"]),
            s(&v["phase"]),
            n(&v["size"]),
            n(&v["allocated"]),
            s(&v["volume"]),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub fn image_upload(c: &Client, args: ImageUploadArgs) -> Result<()> {
    if args.kind != "dv" && args.kind != "datavolume" {
        return Err(Error::bad_request(format!(
            "cannot upload into a {:?}; use `image-upload dv NAME`",
            args.kind
        )));
    }
    if !args.no_create && args.size.is_none() {
        return Err(Error::bad_request(
            "--size is required to create the DataVolume (or pass --no-create)",
        ));
    }
    let ns = c.namespace.clone();
    if !args.no_create {
        create_upload_dv(
            c,
            &ns,
            &args.name,
            args.size.as_deref().unwrap_or(""),
            args.storage_class.as_deref(),
        )?;
    }
    upload_into(
        c,
        &ns,
        &args.name,
        &args.image_path,
        Duration::from_secs(args.timeout_secs),
    )?;
    if args.wait {
        wait_phase(
            c,
            &ns,
            &args.name,
            "Succeeded",
            Duration::from_secs(args.timeout_secs),
        )?;
    }
    println!(
        "datavolume {ns}/{} holds {}",
        args.name,
        args.image_path.display()
    );
    Ok(())
}

/// Used by `vmsnap demo`.
#[allow(dead_code)]
/// Creates an upload DataVolume `name` of `size` and uploads the raw or qcow2 image at `path`
/// into it, with a progress bar; returns once the DataVolume is Succeeded.
pub fn upload_image(
    c: &Client,
    ns: &str,
    name: &str,
    size: &str,
    path: &Path,
    class: Option<&str>,
) -> Result<()> {
    create_upload_dv(c, ns, name, size, class)?;
    upload_into(c, ns, name, path, Duration::from_secs(120))?;
    wait_phase(c, ns, name, "Succeeded", Duration::from_secs(60)).map(|_| ())
}

fn create_upload_dv(
    c: &Client,
    ns: &str,
    name: &str,
    size: &str,
    class: Option<&str>,
) -> Result<()> {
    if api::types::parse_quantity(size).is_none_or(|s| s == 0) {
        return Err(Error::bad_request(format!(
            "--size {size:?} is not a positive quantity such as 2Gi"
        )));
    }
    let mut storage = json!({"resources": {"requests": {"storage": size}}});
    if let Some(cl) = class {
        storage["storageClassName"] = json!(cl);
    }
    let dv = json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"source": {"upload": {}}, "storage": storage},
    });
    match c.create(res("datavolumes")?, ns, &dv) {
        Ok(_) => Ok(()),
        Err(e) if e.is(ErrorKind::AlreadyExists) => {
            let cur = c.get(res("datavolumes")?, ns, name)?;
            if !cur["spec"]["source"]["upload"].is_object() {
                return Err(Error::already_exists(format!(
                    "datavolume {ns}/{name} exists and does not take uploads"
                )));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Polls a DataVolume until it reaches `phase`; Failed ends the wait with its message.
fn wait_phase(c: &Client, ns: &str, name: &str, phase: &str, timeout: Duration) -> Result<Value> {
    let start = Instant::now();
    loop {
        let dv = c.get(res("datavolumes")?, ns, name)?;
        let cur = dv["status"]["phase"].as_str().unwrap_or("");
        if cur == phase {
            return Ok(dv);
        }
        if cur == "Failed" {
            let msg = dv["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or("no message");
            return Err(Error::precondition(format!(
                "datavolume {ns}/{name} failed: {msg}"
            )));
        }
        if cur == "Succeeded" {
            return Err(Error::conflict(format!(
                "datavolume {ns}/{name} is already Succeeded"
            )));
        }
        if start.elapsed() > timeout {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("datavolume {ns}/{name} is {cur:?}, not {phase}, after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Counts bytes read into the progress bar.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn upload_into(c: &Client, ns: &str, name: &str, path: &Path, timeout: Duration) -> Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::bad_request(format!("cannot open {}: {e}", path.display())))?;
    let len = file
        .metadata()
        .map_err(|e| Error::bad_request(format!("cannot stat {}: {e}", path.display())))?
        .len();
    wait_phase(c, ns, name, "UploadReady", timeout)?;
    let path_url =
        format!("/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/{ns}/datavolumes/{name}/upload");
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} uploading [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut reader = Counting {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        bar: bar.clone(),
    };
    let v = c.post_stream(&path_url, "application/octet-stream", &mut reader, len);
    bar.finish_and_clear();
    let v = v?;
    eprintln!(
        "uploaded {} ({}, {} format) into datavolume {ns}/{name}",
        path.display(),
        human(len),
        v["image"]["format"].as_str().unwrap_or("?")
    );
    Ok(())
}
