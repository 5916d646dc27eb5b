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

/// The bearer token and CA of the current kubeconfig context.
fn credentials() -> Result<(String, Option<Vec<u8>>)> {
    use base64::Engine;
    let path = client::kubeconfig_path();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::precondition(format!("kubeconfig {}: {e}", path.display())))?;
    let kc: Value = serde_saphyr::from_str(&text)
        .map_err(|e| Error::precondition(format!("kubeconfig {}: {e}", path.display())))?;
    let ctx_name = kc["current-context"].as_str().unwrap_or("");
    let find = |list: &str, name: &str| -> Value {
        kc[list]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["name"].as_str() == Some(name)).cloned())
            .unwrap_or(Value::Null)
    };
    let ctx = find("contexts", ctx_name);
    let cluster = find("clusters", ctx["context"]["cluster"].as_str().unwrap_or(""));
    let user = find("users", ctx["context"]["user"].as_str().unwrap_or(""));
    let ca = cluster["cluster"]["certificate-authority-data"]
        .as_str()
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
    Ok((user["user"]["token"].as_str().unwrap_or("").to_string(), ca))
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
    let (token, ca) = credentials()?;
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if let Some(pem) = &ca {
        let cert = Certificate::from_pem(pem)
            .map_err(|e| Error::bad_request(format!("bad CA certificate: {e}")))?;
        tls = tls.root_certs(RootCerts::new_with_certs(&[cert.to_owned()]));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!(
        "{}/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/{ns}/datavolumes/{name}/upload",
        c.server
    );
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
    let mut resp = agent
        .post(&url)
        .header(
            "Authorization",
            &format!("Bearer {}", if token.is_empty() { "-" } else { &token }),
        )
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", &len.to_string())
        .send(ureq::SendBody::from_reader(&mut reader))
        .map_err(|e| {
            Error::new(
                ErrorKind::Timeout,
                format!("upload to {} failed: {e}", c.server),
            )
        })?;
    bar.finish_and_clear();
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_vec()
        .map_err(|e| Error::internal(format!("reading the upload answer: {e}")))?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        return Err(if v["kind"] == "Status" {
            Error::from_status(&v)
        } else {
            Error::internal(format!(
                "upload answered HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ))
        });
    }
    eprintln!(
        "uploaded {} ({}, {} format) into datavolume {ns}/{name}",
        path.display(),
        human(len),
        v["image"]["format"].as_str().unwrap_or("?")
    );
    Ok(())
}
