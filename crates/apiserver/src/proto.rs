//! Just enough of Kubernetes' protobuf encoding to accept what kubectl's typed clients send
//! for built-in kinds (`kubectl create namespace` posts a protobuf Namespace). Only object
//! metadata is decoded; anything richer must come as JSON, and gets 415 otherwise.

use api::{Error, ErrorKind};
use serde_json::{json, Map, Value};

const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn next(&mut self) -> Option<Option<(u64, Field<'a>)>> {
        if self.buf.is_empty() {
            return Some(None);
        }
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => {
                self.varint()?;
                Field::Varint
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                if len > self.buf.len() {
                    return None;
                }
                let (b, rest) = self.buf.split_at(len);
                self.buf = rest;
                Field::Bytes(b)
            }
            1 => {
                self.buf = self.buf.get(8..)?;
                Field::Other
            }
            5 => {
                self.buf = self.buf.get(4..)?;
                Field::Other
            }
            _ => return None,
        };
        Some(Some((num, field)))
    }
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Some(out)
}

fn string(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn map_entry(b: &[u8]) -> Option<(String, String)> {
    let (mut k, mut v) = (String::new(), String::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) => v = string(x)?,
            _ => {}
        }
    }
    Some((k, v))
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                meta.insert("name".into(), string(x)?.into());
            }
            (2, Field::Bytes(x)) => {
                meta.insert("generateName".into(), string(x)?.into());
            }
            (3, Field::Bytes(x)) => {
                meta.insert("namespace".into(), string(x)?.into());
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                labels.insert(k, v.into());
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                annotations.insert(k, v.into());
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Some(Value::Object(meta))
}

/// Decodes a protobuf-encoded Namespace into its JSON form.
pub fn decode_namespace(body: &[u8]) -> Result<Value, Error> {
    let bad = || Error::bad_request("malformed protobuf body");
    let body = body.strip_prefix(MAGIC).ok_or_else(bad)?;
    let (mut kind, mut raw) = (String::new(), None);
    for (n, f) in fields(body).ok_or_else(bad)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm).ok_or_else(bad)? {
                    if let (2, Field::Bytes(k)) = (tn, tf) {
                        kind = string(k).ok_or_else(bad)?;
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = Some(r),
            _ => {}
        }
    }
    if kind != "Namespace" {
        return Err(Error::new(
            ErrorKind::UnsupportedMediaType,
            format!("protobuf is accepted only for Namespace objects (got {kind:?}); send JSON"),
        ));
    }
    let mut meta = json!({});
    for (n, f) in fields(raw.ok_or_else(bad)?).ok_or_else(bad)? {
        if let (1, Field::Bytes(m)) = (n, f) {
            meta = object_meta(m).ok_or_else(bad)?;
        }
    }
    Ok(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}))
}
