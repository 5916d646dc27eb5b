//! kubectl-like verbs over the vmsnap API: the same objects, the same output shapes.

use api::registry::{self, Resource};
use api::{meta, Error, ErrorKind, Result};
use client::Client;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn resource(name: &str) -> Result<&'static Resource> {
    registry::lookup(name).ok_or_else(|| {
        Error::not_found(format!(
            "the server doesn't have a resource type \"{name}\""
        ))
    })
}

/// Reads manifests from files or stdin (`-`), splitting YAML documents and `List` objects.
pub fn read_manifests(files: &[String]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for f in files {
        let text = if f == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Error::bad_request(e.to_string()))?;
            s
        } else {
            std::fs::read_to_string(f).map_err(|e| Error::not_found(format!("{f}: {e}")))?
        };
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| Error::bad_request(format!("error parsing {f}: {e}")))?;
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            if d["kind"].as_str().is_some_and(|k| k.ends_with("List")) && d["items"].is_array() {
                out.extend(d["items"].as_array().cloned().unwrap_or_default());
            } else {
                out.push(d);
            }
        }
    }
    Ok(out)
}

fn res_of(obj: &Value) -> Result<&'static Resource> {
    let (av, kind) = (
        obj["apiVersion"].as_str().unwrap_or(""),
        obj["kind"].as_str().unwrap_or(""),
    );
    registry::by_kind(av, kind).ok_or_else(|| {
        Error::not_found(format!(
            "no matches for kind \"{kind}\" in version \"{av}\""
        ))
    })
}

fn display_name(res: &Resource, name: &str) -> String {
    if res.group.is_empty() {
        format!("{}/{}", res.singular, name)
    } else {
        format!("{}.{}/{}", res.singular, res.group, name)
    }
}

/// A JSON merge patch that turns `current` into `modified`, deleting what `original` (the last
/// applied configuration) had and `modified` dropped: kubectl's three-way merge for types
/// without strategic-merge metadata.
fn three_way(original: &Value, modified: &Value, current: &Value) -> Value {
    let mut patch = Map::new();
    if let (Some(m), Some(c)) = (modified.as_object(), current.as_object()) {
        for (k, mv) in m {
            match c.get(k) {
                Some(cv) if cv == mv => {}
                Some(cv) if mv.is_object() && cv.is_object() => {
                    let sub = three_way(&original[k], mv, cv);
                    if sub.as_object().is_some_and(|s| !s.is_empty()) {
                        patch.insert(k.clone(), sub);
                    }
                }
                _ => {
                    patch.insert(k.clone(), mv.clone());
                }
            }
        }
        if let Some(o) = original.as_object() {
            for k in o.keys() {
                if !m.contains_key(k) && c.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
        }
    }
    Value::Object(patch)
}

pub fn apply(c: &Client, files: &[String]) -> Result<()> {
    let mut failed = None;
    for mut obj in read_manifests(files)? {
        let res = res_of(&obj)?;
        let ns = match meta::namespace(&obj) {
            "" => c.namespace.clone(),
            ns => ns.to_string(),
        };
        let name = meta::name(&obj).to_string();
        let mut applied = obj.clone();
        if let Some(a) = applied["metadata"]["annotations"].as_object_mut() {
            a.remove(LAST_APPLIED);
        }
        let applied_text = serde_json::to_string(&applied)?;
        meta::set_annotation(&mut obj, LAST_APPLIED, &(applied_text + "\n"));
        let result = match c.get(res, &ns, &name) {
            Err(e) if e.is(ErrorKind::NotFound) => c.create(res, &ns, &obj).map(|_| "created"),
            Err(e) => Err(e),
            Ok(current) => {
                let original: Value = meta::annotation(&current, LAST_APPLIED)
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Value::Null);
                let patch = three_way(&original, &obj, &current);
                if patch.as_object().is_some_and(|p| p.is_empty()) {
                    Ok("unchanged")
                } else {
                    c.patch_merge(res, &ns, &name, &patch).map(|_| "configured")
                }
            }
        };
        match result {
            Ok(verb) => println!("{} {verb}", display_name(res, &name)),
            Err(e) => {
                eprintln!(
                    "Error from server ({}): error when applying {}: {}",
                    e.kind.reason(),
                    display_name(res, &name),
                    e.message
                );
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) => Err(Error::new(e.kind, "some objects could not be applied")),
        None => Ok(()),
    }
}

fn print_yaml(v: &Value) -> Result<()> {
    let s = serde_saphyr::to_string(v).map_err(|e| Error::internal(e.to_string()))?;
    print!("{s}");
    if !s.ends_with('\n') {
        println!();
    }
    Ok(())
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) if s.is_empty() => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints a server Table the way kubectl does: upper-case headers, padded columns.
pub fn print_table(t: &Value, wide: bool, with_namespace: bool) {
    let cols = t["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let keep: Vec<usize> = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = keep
        .iter()
        .map(|&i| cols[i]["name"].as_str().unwrap_or("").to_uppercase())
        .collect();
    if with_namespace {
        header.insert(0, "NAMESPACE".into());
    }
    rows.push(header);
    for r in t["rows"].as_array().cloned().unwrap_or_default() {
        let cells = r["cells"].as_array().cloned().unwrap_or_default();
        let mut row: Vec<String> = keep
            .iter()
            .map(|&i| cells.get(i).map(cell_text).unwrap_or_default())
            .collect();
        if with_namespace {
            row.insert(
                0,
                r["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        rows.push(row);
    }
    if rows.len() == 1 {
        eprintln!("No resources found");
        return;
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

pub fn get(
    c: &Client,
    resource_arg: &str,
    name: Option<&str>,
    output: Option<&str>,
    all: bool,
    selector: Option<&str>,
) -> Result<()> {
    let res = resource(resource_arg)?;
    let ns = if all && name.is_none() {
        None
    } else {
        Some(c.namespace.as_str())
    };
    match output {
        Some("yaml") | Some("json") => {
            let v = match name {
                Some(n) => c.get(res, ns.unwrap_or(""), n)?,
                None => c.list(res, ns, selector)?,
            };
            if output == Some("yaml") {
                print_yaml(&v)
            } else {
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(())
            }
        }
        Some("name") => {
            let v = match name {
                Some(n) => serde_json::json!({"items": [c.get(res, ns.unwrap_or(""), n)?]}),
                None => c.list(res, ns, selector)?,
            };
            for o in v["items"].as_array().cloned().unwrap_or_default() {
                println!("{}", display_name(res, meta::name(&o)));
            }
            Ok(())
        }
        None | Some("wide") => {
            let mut path = Client::path(res, ns, name);
            if let Some(s) = selector {
                path.push_str(&format!("?labelSelector={}", client::encode(s)));
            }
            let t = c.table(&path)?;
            print_table(&t, output == Some("wide"), all && res.namespaced);
            Ok(())
        }
        Some(other) => Err(Error::bad_request(format!(
            "unsupported output format {other:?} (use yaml, json, name or wide)"
        ))),
    }
}

pub fn describe(c: &Client, resource_arg: &str, name: &str) -> Result<()> {
    let res = resource(resource_arg)?;
    let obj = c.get(res, &c.namespace, name)?;
    println!("Name:         {}", meta::name(&obj));
    if res.namespaced {
        println!("Namespace:    {}", meta::namespace(&obj));
    }
    println!("API Version:  {}", obj["apiVersion"].as_str().unwrap_or(""));
    println!("Kind:         {}", res.kind);
    let mut body = obj.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    print_yaml(&body)?;
    let evres = registry::by_plural("", "events").expect("events registered");
    let fs = format!(
        "involvedObject.name={},involvedObject.uid={}",
        name,
        meta::uid(&obj)
    );
    let path = format!(
        "{}?fieldSelector={}",
        Client::path(
            evres,
            Some(meta::namespace(&obj))
                .filter(|n| !n.is_empty())
                .or(Some("default")),
            None
        ),
        client::encode(&fs)
    );
    let evs = c.request("GET", &path, None)?;
    println!("Events:");
    let items = evs["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("  <none>");
    } else {
        println!(
            "  {:<8} {:<22} {:<8} {:<12} Message",
            "Type", "Reason", "Age", "From"
        );
        for e in items {
            println!(
                "  {:<8} {:<22} {:<8} {:<12} {}",
                e["type"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                meta::age(e["lastTimestamp"].as_str().unwrap_or("")),
                e["source"]["component"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn wait_gone(c: &Client, res: &Resource, ns: &str, name: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        match c.get(res, ns, name) {
            Err(e) if e.is(ErrorKind::NotFound) => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) if start.elapsed() > timeout => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "timed out waiting for {} to be deleted",
                        display_name(res, name)
                    ),
                ))
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn delete(
    c: &Client,
    resource_arg: Option<&str>,
    name: Option<&str>,
    files: &[String],
    wait: bool,
) -> Result<()> {
    let mut targets: Vec<(&'static Resource, String, String)> = Vec::new();
    if !files.is_empty() {
        for o in read_manifests(files)? {
            let res = res_of(&o)?;
            let ns = match meta::namespace(&o) {
                "" => c.namespace.clone(),
                n => n.to_string(),
            };
            targets.push((res, ns, meta::name(&o).to_string()));
        }
    } else {
        let (Some(r), Some(n)) = (resource_arg, name) else {
            return Err(Error::bad_request(
                "usage: vmsnap delete RESOURCE NAME, or -f FILE",
            ));
        };
        targets.push((resource(r)?, c.namespace.clone(), n.to_string()));
    }
    for (res, ns, name) in &targets {
        c.delete(res, ns, name)?;
        println!("{} deleted", display_name(res, name));
    }
    if wait {
        for (res, ns, name) in &targets {
            wait_gone(c, res, ns, name, Duration::from_secs(120))?;
        }
    }
    Ok(())
}

/// Parses a Go-style duration (`30s`, `5m`, `1h30m`).
pub fn parse_timeout(s: &str) -> Result<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let mut unit = ch.to_string();
        if ch == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next().unwrap_or('s'));
        }
        let n: f64 = num
            .parse()
            .map_err(|_| Error::bad_request(format!("invalid duration {s:?}")))?;
        num.clear();
        total += n * match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(Error::bad_request(format!("invalid duration {s:?}"))),
        };
    }
    if !num.is_empty() {
        total += num
            .parse::<f64>()
            .map_err(|_| Error::bad_request(format!("invalid duration {s:?}")))?;
    }
    Ok(Duration::from_secs_f64(total))
}

/// `--for condition=Ready`, `--for condition=Ready=false`, or `--for delete`.
pub fn wait(c: &Client, resource_arg: &str, name: &str, for_: &str, timeout: &str) -> Result<()> {
    let res = resource(resource_arg)?;
    let timeout = parse_timeout(timeout)?;
    let ns = c.namespace.clone();
    if for_ == "delete" {
        wait_gone(c, res, &ns, name, timeout)?;
        println!("{} condition met", display_name(res, name));
        return Ok(());
    }
    let cond = for_
        .strip_prefix("condition=")
        .ok_or_else(|| Error::bad_request("--for must be condition=NAME[=value] or delete"))?;
    let (ty, want) = match cond.split_once('=') {
        Some((t, v)) => (t.to_string(), v.eq_ignore_ascii_case("true")),
        None => (cond.to_string(), true),
    };
    wait_for(c, res, &ns, name, timeout, |o| {
        api::condition(o, &ty) == Some(want) && observed_current(o, &ty)
    })?;
    println!("{} condition met", display_name(res, name));
    Ok(())
}

fn observed_current(o: &Value, ty: &str) -> bool {
    let generation = meta::generation(o);
    let observed = o["status"]["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter().find(|c| {
                c["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(ty))
            })
        })
        .and_then(|c| c["observedGeneration"].as_i64());
    observed.is_none_or(|g| g >= generation)
}

/// Waits until `done` holds for the object, following a watch rather than polling.
pub fn wait_for(
    c: &Client,
    res: &Resource,
    ns: &str,
    name: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let start = Instant::now();
    loop {
        let cur = c.get(res, ns, name)?;
        if done(&cur) {
            return Ok(cur);
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "timed out waiting for the condition on {}",
                    display_name(res, name)
                ),
            ));
        }
        let mut found = None;
        let rv = meta::resource_version(&cur).to_string();
        let r = c.watch(
            res,
            Some(ns),
            Some(&format!("metadata.name={name}")),
            &rv,
            left.as_secs().max(1),
            |ev| {
                if done(&ev["object"]) {
                    found = Some(ev["object"].clone());
                    return false;
                }
                true
            },
        );
        if let Some(v) = found {
            return Ok(v);
        }
        if let Err(e) = r {
            if !e.is(ErrorKind::Expired) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
