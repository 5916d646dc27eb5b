//! A small blocking client for the vmsnap API, configured from a kubeconfig exactly as kubectl
//! is: `$KUBECONFIG` when set, else the default data dir's kubeconfig.

use api::registry::Resource;
use api::{Error, ErrorKind, Result};
use base64::Engine;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// `/var/lib/vmsnap` as root, else `$XDG_DATA_HOME/vmsnap` (or `~/.local/share/vmsnap`).
pub fn default_data_dir() -> PathBuf {
    if rustix_is_root() {
        return PathBuf::from("/var/lib/vmsnap");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("vmsnap");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/vmsnap")
}

fn rustix_is_root() -> bool {
    // /proc/self is owned by the effective uid; avoids a libc dependency for one call.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        // kubectl accepts a list; the first entry is where we read the current context.
        Some(k) => std::env::split_paths(&k)
            .next()
            .unwrap_or_else(|| PathBuf::from(k)),
        None => default_data_dir().join("kubeconfig"),
    }
}

#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    pub server: String,
    token: String,
    pub namespace: String,
}

fn cfg_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::FailedPrecondition,
        format!("kubeconfig {}: {msg}", path.display()),
    )
}

impl Client {
    pub fn from_env() -> Result<Client> {
        Self::from_kubeconfig(&kubeconfig_path())
    }

    pub fn from_kubeconfig(path: &Path) -> Result<Client> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            cfg_err(
                path,
                format!("{e} (is `vmsnap serve` running? set $KUBECONFIG to point elsewhere)"),
            )
        })?;
        let kc: Value = serde_saphyr::from_str(&text).map_err(|e| cfg_err(path, e))?;
        let ctx_name = kc["current-context"].as_str().unwrap_or("");
        let find = |list: &str, name: &str| -> Value {
            kc[list]
                .as_array()
                .and_then(|a| a.iter().find(|e| e["name"].as_str() == Some(name)).cloned())
                .unwrap_or(Value::Null)
        };
        let ctx = find("contexts", ctx_name);
        let ctx = &ctx["context"];
        let cluster = find("clusters", ctx["cluster"].as_str().unwrap_or(""));
        let user = find("users", ctx["user"].as_str().unwrap_or(""));
        let server = cluster["cluster"]["server"]
            .as_str()
            .ok_or_else(|| cfg_err(path, "no server in the current context"))?;
        let ca = cluster["cluster"]["certificate-authority-data"]
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        let token = user["user"]["token"].as_str().unwrap_or("").to_string();
        let namespace = ctx["namespace"].as_str().unwrap_or("default").to_string();
        Self::new(server, ca.as_deref(), &token, &namespace)
    }

    pub fn new(
        server: &str,
        ca_pem: Option<&[u8]>,
        token: &str,
        namespace: &str,
    ) -> Result<Client> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder();
        if let Some(pem) = ca_pem {
            let cert = Certificate::from_pem(pem)
                .map_err(|e| Error::bad_request(format!("bad CA certificate: {e}")))?;
            tls = tls.root_certs(RootCerts::new_with_certs(&[cert.to_owned()]));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Client {
            agent,
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// The URL path of a collection or an item.
    pub fn path(res: &Resource, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut p = if res.group.is_empty() {
            format!("/api/{}", res.storage_version())
        } else {
            format!("/apis/{}/{}", res.group, res.storage_version())
        };
        if res.namespaced {
            if let Some(ns) = namespace {
                p.push_str(&format!("/namespaces/{ns}"));
            }
        }
        p.push('/');
        p.push_str(res.plural);
        if let Some(n) = name {
            p.push('/');
            p.push_str(n);
        }
        p
    }

    /// Sends a request and returns status and body. Non-2xx answers are not errors here.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        accept: Option<&str>,
    ) -> Result<(u16, Vec<u8>)> {
        let url = format!("{}{}", self.server, path);
        // An empty token sends a header the server rejects, which is what an anonymous client gets.
        let auth = if self.token.is_empty() {
            "Bearer -".to_string()
        } else {
            format!("Bearer {}", self.token)
        };
        let conn = |e: ureq::Error| {
            Error::new(
                ErrorKind::Timeout,
                format!("cannot reach {}: {e}", self.server),
            )
        };
        let mut resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url).header("Authorization", &auth);
                if let Some(a) = accept {
                    r = r.header("Accept", a);
                }
                r.call().map_err(conn)?
            }
            ("DELETE", None) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call()
                .map_err(conn)?,
            ("DELETE", Some((ct, b))) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .header("Content-Type", ct)
                .force_send_body()
                .send(b)
                .map_err(conn)?,
            (m, body) => {
                let (ct, b) = body.unwrap_or(("application/json", b"{}"));
                let req = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    other => return Err(Error::bad_request(format!("unsupported method {other}"))),
                };
                req.header("Authorization", &auth)
                    .header("Content-Type", ct)
                    .send(b)
                    .map_err(conn)?
            }
        };
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(512 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| Error::internal(format!("reading the response: {e}")))?;
        Ok((status, body))
    }

    /// POSTs a body streamed from `reader` (`len` bytes), for uploads too large to buffer.
    /// Answers JSON like every other call.
    pub fn post_stream(
        &self,
        path: &str,
        content_type: &str,
        reader: &mut dyn Read,
        len: u64,
    ) -> Result<Value> {
        let url = format!("{}{}", self.server, path);
        let auth = if self.token.is_empty() {
            "Bearer -".to_string()
        } else {
            format!("Bearer {}", self.token)
        };
        let mut resp = self
            .agent
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", content_type)
            .header("Content-Length", &len.to_string())
            .send(ureq::SendBody::from_reader(reader))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("upload to {} failed: {e}", self.server),
                )
            })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| Error::internal(format!("reading the response: {e}")))?;
        Self::decode(status, &bytes)
    }

    fn decode(status: u16, bytes: &[u8]) -> Result<Value> {
        let v: Value = serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
        if (200..300).contains(&status) {
            Ok(v)
        } else if v["kind"] == "Status" {
            Err(Error::from_status(&v))
        } else {
            Err(Error::internal(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(bytes)
            )))
        }
    }

    fn json(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<Value> {
        let (status, bytes) = self.raw(method, path, body, None)?;
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if (200..300).contains(&status) {
            Ok(v)
        } else if v["kind"] == "Status" {
            Err(Error::from_status(&v))
        } else {
            Err(Error::internal(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            )))
        }
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Result<Value> {
        self.json("GET", &Self::path(res, Some(ns), Some(name)), None)
    }

    pub fn list(
        &self,
        res: &Resource,
        ns: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Value> {
        let mut p = Self::path(res, ns, None);
        if let Some(l) = label_selector {
            p.push_str(&format!("?labelSelector={}", encode(l)));
        }
        self.json("GET", &p, None)
    }

    /// A Table, as kubectl asks for it.
    pub fn table(&self, path: &str) -> Result<Value> {
        let (status, bytes) = self.raw(
            "GET",
            path,
            None,
            Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
        )?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("bad response: {e}")))?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(Error::from_status(&v))
        }
    }

    pub fn create(&self, res: &Resource, ns: &str, obj: &Value) -> Result<Value> {
        let body = serde_json::to_vec(obj)?;
        self.json(
            "POST",
            &Self::path(res, Some(ns), None),
            Some(("application/json", &body)),
        )
    }

    pub fn replace(&self, res: &Resource, ns: &str, obj: &Value) -> Result<Value> {
        let body = serde_json::to_vec(obj)?;
        self.json(
            "PUT",
            &Self::path(res, Some(ns), Some(api::meta::name(obj))),
            Some(("application/json", &body)),
        )
    }

    pub fn update_status(&self, res: &Resource, ns: &str, obj: &Value) -> Result<Value> {
        let body = serde_json::to_vec(obj)?;
        let p = format!(
            "{}/status",
            Self::path(res, Some(ns), Some(api::meta::name(obj)))
        );
        self.json("PUT", &p, Some(("application/json", &body)))
    }

    pub fn patch_merge(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value> {
        let body = serde_json::to_vec(patch)?;
        self.json(
            "PATCH",
            &Self::path(res, Some(ns), Some(name)),
            Some(("application/merge-patch+json", &body)),
        )
    }

    pub fn delete(&self, res: &Resource, ns: &str, name: &str) -> Result<Value> {
        let body =
            br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background"}"#;
        self.json(
            "DELETE",
            &Self::path(res, Some(ns), Some(name)),
            Some(("application/json", body)),
        )
    }

    /// A raw JSON request to any path (the platform API, metrics).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(serde_json::to_vec).transpose()?;
        self.json(
            method,
            path,
            bytes.as_deref().map(|b| ("application/json", b)),
        )
    }

    /// Follows a watch: calls `f` with each event until it returns false or the server ends
    /// the stream.
    pub fn watch(
        &self,
        res: &Resource,
        ns: Option<&str>,
        field_selector: Option<&str>,
        from: &str,
        timeout_secs: u64,
        mut f: impl FnMut(&Value) -> bool,
    ) -> Result<()> {
        let mut p = format!(
            "{}?watch=true&resourceVersion={from}&timeoutSeconds={timeout_secs}",
            Self::path(res, ns, None)
        );
        if let Some(fs) = field_selector {
            p.push_str(&format!("&fieldSelector={}", encode(fs)));
        }
        let url = format!("{}{}", self.server, p);
        let mut resp = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| Error::new(ErrorKind::Timeout, format!("watch failed: {e}")))?;
        if resp.status().as_u16() != 200 {
            let mut s = String::new();
            let _ = resp.body_mut().as_reader().read_to_string(&mut s);
            return Err(serde_json::from_str::<Value>(&s)
                .map(|v| Error::from_status(&v))
                .unwrap_or_else(|_| Error::internal(s)));
        }
        let reader = BufReader::new(resp.body_mut().with_config().limit(u64::MAX).reader());
        for line in reader.lines() {
            let line = line.map_err(|e| Error::internal(format!("watch stream: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let ev: Value = serde_json::from_str(&line)?;
            if ev["type"] == "ERROR" {
                return Err(Error::from_status(&ev["object"]));
            }
            if !f(&ev) {
                break;
            }
        }
        Ok(())
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
