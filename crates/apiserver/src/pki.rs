//! The cluster's own CA, server certificate, admin token and kubeconfig, generated on first
//! start and reused afterwards so that kubeconfigs handed out earlier keep working.

use api::{Error, Result};
use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", path.display()))
}

/// Writes a file readable only by its owner, atomically, so a crash never leaves a torn key.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err("cannot create", &tmp, e))?;
    f.write_all(data)
        .map_err(|e| io_err("cannot write", &tmp, e))?;
    f.sync_all().map_err(|e| io_err("cannot sync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("cannot rename", &tmp, e))
}

fn rc(e: rcgen::Error) -> Error {
    Error::internal(format!("certificate generation failed: {e}"))
}

impl Pki {
    /// Loads the PKI from `dir/pki`, creating whatever is missing. The server certificate is
    /// reissued when the listen address is not among its names.
    pub fn load_or_create(data_dir: &Path, listen: SocketAddr) -> Result<Pki> {
        let dir = data_dir.join("pki");
        fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        let p = |n: &str| -> PathBuf { dir.join(n) };
        let (ca_key_path, ca_path) = (p("ca.key"), p("ca.crt"));
        if !ca_path.exists() || !ca_key_path.exists() {
            let key = KeyPair::generate().map_err(rc)?;
            let cert = ca_params()?.self_signed(&key).map_err(rc)?;
            write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
            write_private(&ca_path, cert.pem().as_bytes())?;
            // A new CA invalidates any server certificate signed by an old one.
            let _ = fs::remove_file(p("server.crt"));
        }
        let ca_pem =
            fs::read_to_string(&ca_path).map_err(|e| io_err("cannot read", &ca_path, e))?;
        let ca_key_pem =
            fs::read_to_string(&ca_key_path).map_err(|e| io_err("cannot read", &ca_key_path, e))?;

        let names_path = p("server.names");
        let want_names = server_names(listen);
        let have_names = fs::read_to_string(&names_path).unwrap_or_default();
        if !p("server.crt").exists()
            || !p("server.key").exists()
            || have_names.trim() != want_names.join(",")
        {
            let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(rc)?;
            // Signing needs only the CA's subject and key; the parameters are rebuilt the same
            // way they were issued, which avoids parsing X.509 back.
            let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
            let key = KeyPair::generate().map_err(rc)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
            params
                .distinguished_name
                .push(DnType::CommonName, "vmsnap-apiserver");
            for n in &want_names {
                match n.parse::<IpAddr>() {
                    Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                    Err(_) => params
                        .subject_alt_names
                        .push(SanType::DnsName(n.clone().try_into().map_err(rc)?)),
                }
            }
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2045, 1, 1);
            let cert = params.signed_by(&key, &issuer).map_err(rc)?;
            write_private(&p("server.key"), key.serialize_pem().as_bytes())?;
            write_private(&p("server.crt"), cert.pem().as_bytes())?;
            write_private(&names_path, want_names.join(",").as_bytes())?;
        }
        let token_path = data_dir.join("token");
        if !token_path.exists() {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_private(&token_path, token.as_bytes())?;
        }
        let read =
            |path: PathBuf| fs::read_to_string(&path).map_err(|e| io_err("cannot read", &path, e));
        Ok(Pki {
            ca_pem,
            cert_pem: read(p("server.crt"))?,
            key_pem: read(p("server.key"))?,
            token: read(token_path)?.trim().to_string(),
        })
    }

    pub fn rustls_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut self.cert_pem.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::internal(format!("bad server certificate: {e}")))?;
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|e| Error::internal(format!("bad server key: {e}")))?
            .ok_or_else(|| Error::internal("no server key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("tls: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::internal(format!("tls: {e}")))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A kubeconfig that works with kubectl as is.
    pub fn kubeconfig(&self, listen: SocketAddr) -> String {
        let host = match listen.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: vmsnap\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: vmsnap-admin\n  user:\n    token: {token}\ncontexts:\n- name: vmsnap\n  context:\n    cluster: vmsnap\n    user: vmsnap-admin\n    namespace: default\ncurrent-context: vmsnap\n",
            port = listen.port(),
            token = self.token
        )
    }
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "vmsnap-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    Ok(params)
}

fn server_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    names
}
