//! Request handling: authentication, path parsing, and one function per verb.

use crate::{discovery, table, watch, AdmissionRequest, Operation, State, MAX_BODY};
use api::registry::{self, Resource};
use api::{meta, Error, ErrorKind, FieldValidation};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use store::{Preconditions, Store};

pub(crate) fn router(state: Arc<State>, extra: Option<Router>, public: Option<Router>) -> Router {
    let authed_extra = extra.unwrap_or_default();
    let st = state.clone();
    let mut app = Router::new().fallback(move |req: Request| {
        let st = st.clone();
        async move { handle(st, req).await }
    });
    // Extra routes sit behind the same bearer-token check as the Kubernetes API.
    let tok = state.token.clone();
    let authed_extra = authed_extra.layer(axum::middleware::from_fn(
        move |req: Request, next: axum::middleware::Next| {
            let tok = tok.clone();
            async move {
                if !authorized(req.headers(), &tok) {
                    return error_response(&unauthorized());
                }
                next.run(req).await
            }
        },
    ));
    app = app.merge(authed_extra);
    if let Some(p) = public {
        app = app.merge(p);
    }
    app
}

fn unauthorized() -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        "Unauthorized: a valid bearer token is required",
    )
}

/// Compares in constant time so the token cannot be guessed byte by byte.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = given.strip_prefix("Bearer ") else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn error_response(e: &Error) -> Response {
    let code = StatusCode::from_u16(e.kind.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code.is_server_error() {
        tracing::warn!(error = %e, "request failed");
    }
    json_response(code, &e.to_status())
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

/// A parsed resource path.
pub(crate) struct Target {
    pub res: &'static Resource,
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

fn not_found_path(path: &str) -> Error {
    Error::not_found(format!(
        "the server could not find the requested resource ({path})"
    ))
}

fn parse_target(path: &str) -> Result<Target, Error> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found_path(path)),
    };
    let find = |plural: &str| {
        registry::by_plural(group, plural)
            .filter(|r| r.serves(version))
            .ok_or_else(|| not_found_path(path))
    };
    let mk = |res, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        res,
        version: version.to_string(),
        namespace: ns.map(String::from),
        name: name.map(String::from),
        sub: sub.map(String::from),
    };
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if group.is_empty() && matches!(*plural, "status" | "finalize") && tail.is_empty() =>
        {
            mk(find("namespaces")?, None, Some(ns), Some(plural))
        }
        ["namespaces", ns, plural, tail @ ..] => {
            let res = find(plural)?;
            if !res.namespaced {
                return Err(not_found_path(path));
            }
            match tail {
                [] => mk(res, Some(ns), None, None),
                [name] => mk(res, Some(ns), Some(name), None),
                [name, sub] => mk(res, Some(ns), Some(name), Some(sub)),
                _ => return Err(not_found_path(path)),
            }
        }
        [plural] => mk(find(plural)?, None, None, None),
        [plural, name] => {
            let res = find(plural)?;
            if res.namespaced {
                return Err(not_found_path(path));
            }
            mk(res, None, Some(name), None)
        }
        [plural, name, sub] => {
            let res = find(plural)?;
            if res.namespaced {
                return Err(not_found_path(path));
            }
            mk(res, None, Some(name), Some(sub))
        }
        _ => return Err(not_found_path(path)),
    };
    if let Some(sub) = &t.sub {
        if sub != "status" || !t.res.has_status {
            return Err(not_found_path(path));
        }
    }
    if let Some(n) = &t.name {
        // A name that is not DNS-1123 can exist nowhere, so it is simply not found; this also
        // keeps such names away from anything downstream that might turn them into paths.
        if meta::validate_subdomain(n).is_some() {
            return Err(Error::not_found(format!(
                "{}.{} {:?} not found",
                t.res.plural, t.res.group, n
            )));
        }
    }
    Ok(t)
}

async fn handle(state: Arc<State>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if method == Method::GET && matches!(path.as_str(), "/healthz" | "/readyz" | "/livez") {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response();
    }
    if !authorized(req.headers(), &state.token) {
        return error_response(&unauthorized());
    }
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| url_decode_pairs(q).into_iter().collect())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let result = match (method.clone(), path.trim_end_matches('/')) {
        (Method::GET, "/version") => Ok(json_response(StatusCode::OK, &discovery::version())),
        (Method::GET, "/metrics") => {
            let text = state.metrics.as_ref().map(|m| m()).unwrap_or_default();
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                text,
            )
                .into_response())
        }
        (Method::GET, "/api") => Ok(json_response(StatusCode::OK, &discovery::api_versions())),
        (Method::GET, "/apis") => Ok(json_response(StatusCode::OK, &discovery::api_group_list())),
        (Method::GET, "/openapi/v3") => {
            Ok(json_response(StatusCode::OK, &discovery::openapi_root()))
        }
        (Method::GET, "/openapi/v2") => Err(not_found_path(&path)),
        (Method::GET, p) if p.starts_with("/openapi/v3/") => {
            let rest = &p["/openapi/v3/".len()..];
            let (g, v) = match rest.split('/').collect::<Vec<_>>().as_slice() {
                ["api", v] => (String::new(), v.to_string()),
                ["apis", g, v] => (g.to_string(), v.to_string()),
                _ => (String::from("-"), String::new()),
            };
            discovery::openapi_group_version(&g, &v)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| not_found_path(&path))
        }
        (Method::GET, p) if is_discovery(p) => {
            discovery_doc(p).ok_or_else(|| not_found_path(&path))
        }
        (_, p) if p.starts_with("/apis/subresources.kubevirt.io/") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            vm_action(&state, &method, p, &body).await
        }
        (Method::POST | Method::PUT, p) if p.starts_with("/apis/upload.cdi.kubevirt.io/") => {
            upload(&state, p, req).await
        }
        _ => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            resource_request(&state, method, &path, &query, &headers, body).await
        }
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// Reads at most [`MAX_BODY`] bytes. A larger body is still drained (up to a hard cap) so the
/// client reads the 413 instead of a broken pipe.
async fn read_body(body: axum::body::Body) -> Result<bytes::Bytes, Error> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Error::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if total > 16 * MAX_BODY {
                break;
            }
        }
    }
    if total > MAX_BODY {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "the request body ({total} bytes) is larger than the limit of {MAX_BODY} bytes"
            ),
        ));
    }
    Ok(buf.freeze())
}

/// `/apis/subresources.kubevirt.io/v1/namespaces/{ns}/{resource}/{name}/{action}`
async fn vm_action(
    state: &State,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Response, Error> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["apis", "subresources.kubevirt.io", "v1", "namespaces", ns, resource, name, action] =
        segs.as_slice()
    else {
        return Err(not_found_path(path));
    };
    if !matches!(*resource, "virtualmachines" | "virtualmachineinstances")
        || meta::validate_subdomain(name).is_some()
    {
        return Err(not_found_path(path));
    }
    let Some(vm) = state.vm_actions.as_ref() else {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "this server runs no VMs",
        ));
    };
    if *method == Method::GET {
        let stream = vm.stream(resource, ns, name, action).await?;
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            axum::body::Body::from_stream(stream),
        )
            .into_response());
    }
    let opts = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        decode_body("application/json", body)?
    };
    let out = vm.action(resource, ns, name, action, opts).await?;
    Ok(json_response(StatusCode::OK, &out))
}

/// `/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/{ns}/datavolumes/{name}/upload`: the body
/// streams straight into the volume, so the usual body limit does not apply here.
async fn upload(state: &State, path: &str, req: Request) -> Result<Response, Error> {
    use futures::StreamExt;
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["apis", "upload.cdi.kubevirt.io", "v1beta1", "namespaces", ns, "datavolumes", name, "upload"] =
        segs.as_slice()
    else {
        return Err(not_found_path(path));
    };
    if meta::validate_subdomain(name).is_some() {
        return Err(not_found_path(path));
    }
    let Some(up) = state.uploads.as_ref() else {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "this server takes no uploads",
        ));
    };
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let stream = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())))
        .boxed();
    let out = up.upload(ns, name, len, stream).await?;
    Ok(json_response(StatusCode::OK, &out))
}

fn is_discovery(p: &str) -> bool {
    let segs: Vec<&str> = p.trim_matches('/').split('/').collect();
    matches!(segs.as_slice(), ["api", _] | ["apis", _] | ["apis", _, _])
}

fn discovery_doc(p: &str) -> Option<Response> {
    let segs: Vec<&str> = p.trim_matches('/').split('/').collect();
    let doc = match segs.as_slice() {
        ["api", v] => discovery::resource_list("", v),
        ["apis", g] => discovery::api_group(g),
        ["apis", g, v] => discovery::resource_list(g, v),
        _ => None,
    }?;
    Some(json_response(StatusCode::OK, &doc))
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match u8::from_str_radix(
                        std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                        16,
                    ) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Decodes a JSON or YAML body. Malformed input is a 400 and changes nothing.
pub(crate) fn decode_body(ct: &str, body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::bad_request("the request body is empty"));
    }
    if ct == "application/vnd.kubernetes.protobuf" {
        return crate::proto::decode_namespace(body);
    }
    let v: Value = if ct.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| Error::bad_request("the YAML body is not UTF-8"))?;
        serde_saphyr::from_str(text)
            .map_err(|e| Error::bad_request(format!("malformed YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::bad_request(format!("malformed JSON: {e}")))?
    };
    if !v.is_object() {
        return Err(Error::bad_request("the request body must be an object"));
    }
    Ok(v)
}

/// Sets `apiVersion` to the version the client asked for; served versions share one shape.
pub(crate) fn present(res: &Resource, version: &str, obj: &Value) -> Value {
    let mut o = obj.clone();
    if version != res.storage_version() {
        o["apiVersion"] = Value::String(res.api_version(version));
    }
    o
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> api::Result<T> + Send + 'static,
) -> api::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("worker failed: {e}")))?
}

fn run_hooks(
    state: &State,
    res: &'static Resource,
    op: Operation,
    sub: Option<&str>,
    object: Option<&mut Value>,
    old: Option<&Value>,
) -> api::Result<()> {
    let mut object = object;
    for h in &state.hooks {
        let snapshot = object.as_deref().cloned();
        let req = AdmissionRequest {
            resource: res,
            operation: op,
            subresource: sub,
            object: snapshot.as_ref(),
            old,
            store: state.store.as_ref(),
        };
        h.admit(&req, object.as_deref_mut())?;
    }
    Ok(())
}

async fn resource_request(
    state: &Arc<State>,
    method: Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, Error> {
    let t = parse_target(path)?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let want_table = table::wants_table(accept.as_deref());
    let include_object = query.get("includeObject").map(String::as_str) == Some("Object");
    let fv = FieldValidation::parse(query.get("fieldValidation").map(String::as_str));
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
    let ct = content_type(headers);
    let is_watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method, t.name.is_some()) {
        (Method::GET, false) if is_watch => {
            watch::serve_watch(state.clone(), t, query, want_table).await
        }
        (Method::GET, false) => list(state, &t, query, want_table, include_object),
        (Method::GET, true) => {
            let obj = state.store.get(
                t.res,
                t.namespace.as_deref().unwrap_or(""),
                t.name.as_deref().unwrap_or(""),
            )?;
            let obj = present(t.res, &t.version, &obj);
            if want_table {
                let rv = meta::resource_version(&obj).parse().unwrap_or(0);
                Ok(json_response(
                    StatusCode::OK,
                    &table::table(t.res, &[&obj], rv, include_object),
                ))
            } else {
                Ok(json_response(StatusCode::OK, &obj))
            }
        }
        (Method::POST, false) => create(state, &t, decode_body(&ct, &body)?, fv, dry_run).await,
        (Method::PUT, true) => update(state, &t, decode_body(&ct, &body)?, fv, dry_run).await,
        (Method::PATCH, true) => patch(state, &t, &ct, &body, fv, dry_run).await,
        (Method::DELETE, true) => delete(state, &t, &ct, &body).await,
        (Method::DELETE, false) => delete_collection(state, &t, query).await,
        (m, _) => Err(Error::new(
            ErrorKind::MethodNotAllowed,
            format!("method {m} is not allowed on {path}"),
        )),
    }
}

fn selectors(
    query: &HashMap<String, String>,
) -> Result<(meta::LabelSelector, meta::FieldSelector), Error> {
    let labels =
        meta::LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields =
        meta::FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
    Ok((labels, fields))
}

fn list(
    state: &State,
    t: &Target,
    query: &HashMap<String, String>,
    want_table: bool,
    include_object: bool,
) -> Result<Response, Error> {
    let (labels, fields) = selectors(query)?;
    let list = state
        .store
        .list(t.res, t.namespace.as_deref(), &labels, &fields)?;
    if want_table {
        let presented: Vec<Value> = list
            .items
            .iter()
            .map(|o| present(t.res, &t.version, o))
            .collect();
        let refs: Vec<&Value> = presented.iter().collect();
        return Ok(json_response(
            StatusCode::OK,
            &table::table(t.res, &refs, list.revision, include_object),
        ));
    }
    // Lists can be large: write the items straight into the body instead of building a tree.
    let mut out = Vec::with_capacity(64 + list.items.len() * 1024);
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{}\"}},\"items\":[",
            t.res.list_kind(),
            t.res.api_version(&t.version),
            list.revision
        )
        .as_bytes(),
    );
    for (i, o) in list.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if t.version == t.res.storage_version() {
            serde_json::to_writer(&mut out, o.as_ref())
        } else {
            serde_json::to_writer(&mut out, &present(t.res, &t.version, o))
        }
        .map_err(|e| Error::internal(e.to_string()))?;
    }
    out.extend_from_slice(b"]}");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response())
}

/// Checks the namespace in the path against the body, and that it exists and is not going away.
fn place_in_namespace(state: &State, t: &Target, obj: &mut Value) -> Result<(), Error> {
    let body_ns = meta::namespace(obj).to_string();
    if !t.res.namespaced {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        return Ok(());
    }
    let Some(ns) = t.namespace.as_deref() else {
        return Err(Error::bad_request(format!(
            "{} is namespaced: create it under /namespaces/<namespace>/",
            t.res.kind
        )));
    };
    if !body_ns.is_empty() && body_ns != ns {
        return Err(Error::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.insert("namespace".into(), Value::String(ns.to_string()));
    }
    let nsres = registry::by_plural("", "namespaces").expect("namespaces are registered");
    match state.store.get(nsres, "", ns) {
        Ok(n) if meta::is_deleting(&n) => Err(Error::new(
            ErrorKind::Forbidden,
            format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.is(ErrorKind::NotFound) => Err(Error::not_found(format!(
            "namespaces \"{ns}\" not found"
        ))
        .with_subject("", "namespaces", ns)),
        Err(e) => Err(e),
    }
}

fn check_api_version(t: &Target, obj: &Value) -> Result<(), Error> {
    let want = t.res.api_version(&t.version);
    match obj["apiVersion"].as_str() {
        Some(v) if v == want => Ok(()),
        Some(v) => Err(Error::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({want})"
        ))),
        None => Err(Error::bad_request("apiVersion is required")),
    }
}

async fn create(
    state: &Arc<State>,
    t: &Target,
    mut obj: Value,
    fv: FieldValidation,
    dry_run: bool,
) -> Result<Response, Error> {
    check_api_version(t, &obj)?;
    place_in_namespace(state, t, &mut obj)?;
    let admitted = api::admit(t.res, obj, fv)?;
    let mut obj = admitted.object;
    run_hooks(state, t.res, Operation::Create, None, Some(&mut obj), None)?;
    if dry_run {
        return Ok(with_warnings(
            json_response(StatusCode::CREATED, &present(t.res, &t.version, &obj)),
            &admitted.warnings,
        ));
    }
    let store = state.store.clone();
    let res = t.res;
    let created = blocking(move || store.create(res, obj)).await?;
    Ok(with_warnings(
        json_response(StatusCode::CREATED, &present(t.res, &t.version, &created)),
        &admitted.warnings,
    ))
}

fn check_name(t: &Target, obj: &mut Value) -> Result<(), Error> {
    let want = t.name.as_deref().unwrap_or("");
    match obj["metadata"]["name"].as_str() {
        Some(n) if n == want => Ok(()),
        None | Some("") => {
            meta::ensure_object(obj, "metadata").insert("name".into(), Value::String(want.into()));
            Ok(())
        }
        Some(n) => Err(Error::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({want})"
        ))),
    }
}

async fn write(
    state: &Arc<State>,
    t: &Target,
    mut obj: Value,
    fv: FieldValidation,
    dry_run: bool,
) -> Result<(Value, Vec<String>), Error> {
    check_api_version(t, &obj)?;
    check_name(t, &mut obj)?;
    let ns = t.namespace.clone().unwrap_or_default();
    if t.res.namespaced {
        meta::ensure_object(&mut obj, "metadata")
            .insert("namespace".into(), Value::String(ns.clone()));
    }
    let old = state
        .store
        .get(t.res, &ns, t.name.as_deref().unwrap_or(""))?;
    let is_status = t.sub.as_deref() == Some("status");
    let (mut obj, warnings) = if is_status {
        let mut o = (*old).clone();
        o["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
        o["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
        (o, Vec::new())
    } else {
        let a = api::admit(t.res, obj, fv)?;
        (a.object, a.warnings)
    };
    run_hooks(
        state,
        t.res,
        Operation::Update,
        t.sub.as_deref(),
        Some(&mut obj),
        Some(&old),
    )?;
    if dry_run {
        return Ok((obj, warnings));
    }
    let store = state.store.clone();
    let res = t.res;
    let stored = blocking(move || {
        if is_status {
            store.update_status(res, obj)
        } else {
            store.update(res, obj)
        }
    })
    .await?;
    Ok(((*stored).clone(), warnings))
}

async fn update(
    state: &Arc<State>,
    t: &Target,
    obj: Value,
    fv: FieldValidation,
    dry_run: bool,
) -> Result<Response, Error> {
    let (stored, warnings) = write(state, t, obj, fv, dry_run).await?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &present(t.res, &t.version, &stored)),
        &warnings,
    ))
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

async fn patch(
    state: &Arc<State>,
    t: &Target,
    ct: &str,
    body: &[u8],
    fv: FieldValidation,
    dry_run: bool,
) -> Result<Response, Error> {
    enum Kind {
        Merge(Value),
        Json(json_patch::Patch),
    }
    let kind = match ct {
        "application/merge-patch+json" => Kind::Merge(decode_any(body, false)?),
        "application/apply-patch+yaml" => Kind::Merge(decode_any(body, true)?),
        "application/json-patch+json" => Kind::Json(
            serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("malformed JSON patch: {e}")))?,
        ),
        // Built-in kinds (core, storage.k8s.io) get strategic merge from kubectl by default. Their
        // lists have no merge keys vmsnap relies on, so a merge patch with the directives
        // removed gives the same result.
        "application/strategic-merge-patch+json" if matches!(t.res.group, "" | "storage.k8s.io") => {
            let mut p = decode_any(body, false)?;
            strip_smp_directives(&mut p);
            Kind::Merge(p)
        }
        "application/strategic-merge-patch+json" => {
            return Err(Error::new(
                ErrorKind::UnsupportedMediaType,
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for custom resources; use --type merge or --type json)",
            ))
        }
        other => {
            return Err(Error::new(ErrorKind::UnsupportedMediaType, format!("unsupported patch content type {other:?}")))
        }
    };
    let pinned_rv = match &kind {
        Kind::Merge(p) => p["metadata"]["resourceVersion"].is_string(),
        Kind::Json(_) => false,
    };
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    // Retry on conflicts the patch did not ask for, as kube-apiserver does.
    for attempt in 0..5 {
        let current = state.store.get(t.res, &ns, &name)?;
        let mut doc = present(t.res, &t.version, &current);
        match &kind {
            Kind::Merge(p) => merge_patch(&mut doc, p),
            Kind::Json(p) => json_patch::patch(&mut doc, p).map_err(|e| {
                Error::new(
                    ErrorKind::Invalid,
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?,
        }
        if !pinned_rv {
            doc["metadata"]["resourceVersion"] =
                Value::String(meta::resource_version(&current).to_string());
        }
        match write(state, t, doc, fv, dry_run).await {
            Ok((stored, warnings)) => {
                return Ok(with_warnings(
                    json_response(StatusCode::OK, &present(t.res, &t.version, &stored)),
                    &warnings,
                ))
            }
            Err(e) if e.is(ErrorKind::Conflict) && !pinned_rv && attempt < 4 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::conflict("the object kept changing; try again"))
}

fn strip_smp_directives(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|k, _| !k.starts_with('$'));
        for x in m.values_mut() {
            strip_smp_directives(x);
        }
    }
}

fn decode_any(body: &[u8], yaml: bool) -> Result<Value, Error> {
    decode_body(
        if yaml {
            "application/yaml"
        } else {
            "application/json"
        },
        body,
    )
}

async fn delete(state: &Arc<State>, t: &Target, ct: &str, body: &[u8]) -> Result<Response, Error> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let mut pre = Preconditions::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let opts = decode_body(
            if ct.is_empty() {
                "application/json"
            } else {
                ct
            },
            body,
        )?;
        pre.uid = opts["preconditions"]["uid"].as_str().map(String::from);
        pre.resource_version = opts["preconditions"]["resourceVersion"]
            .as_str()
            .map(String::from);
    }
    let old = state.store.get(t.res, &ns, &name)?;
    run_hooks(state, t.res, Operation::Delete, None, None, Some(&old))?;
    let store = state.store.clone();
    let res = t.res;
    let (ns2, name2) = (ns.clone(), name.clone());
    let out = blocking(move || store.delete(res, &ns2, &name2, &pre)).await?;
    if meta::is_deleting(&out) && !meta::finalizers(&out).is_empty() {
        // Still present, held by finalizers: kube-apiserver answers with the object.
        return Ok(json_response(
            StatusCode::OK,
            &present(t.res, &t.version, &out),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": t.res.group, "kind": t.res.plural, "uid": meta::uid(&out)}
        }),
    ))
}

async fn delete_collection(
    state: &Arc<State>,
    t: &Target,
    query: &HashMap<String, String>,
) -> Result<Response, Error> {
    let (labels, fields) = selectors(query)?;
    let list = state
        .store
        .list(t.res, t.namespace.as_deref(), &labels, &fields)?;
    let mut deleted = Vec::new();
    for o in list.items {
        run_hooks(state, t.res, Operation::Delete, None, None, Some(&o))?;
        let store = state.store.clone();
        let res = t.res;
        let (ns, name) = (meta::namespace(&o).to_string(), meta::name(&o).to_string());
        match blocking(move || store.delete(res, &ns, &name, &Preconditions::default())).await {
            Ok(v) => deleted.push(present(t.res, &t.version, &v)),
            Err(e) if e.is(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": t.res.list_kind(), "apiVersion": t.res.api_version(&t.version), "metadata": {"resourceVersion": state.store.revision().to_string()}, "items": deleted}),
    ))
}
