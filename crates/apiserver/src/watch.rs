//! Watch: newline-delimited JSON events on a chunked response, flushed per event, with
//! bookmarks and a server-side timeout, as kubectl's reflector expects.

use crate::routes::{error_response, present};
use crate::{table, State};
use api::{meta, Error};
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::routes::Target;

fn line(ty: &str, object: Value) -> bytes::Bytes {
    let mut v = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
    v.push(b'\n');
    bytes::Bytes::from(v)
}

pub(crate) async fn serve_watch(
    state: Arc<State>,
    t: Target,
    query: &HashMap<String, String>,
    want_table: bool,
) -> Result<Response, Error> {
    let labels =
        meta::LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields =
        meta::FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1800)
        .min(3600);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let include_object = query.get("includeObject").map(String::as_str) == Some("Object");
    // No resourceVersion (or "0") means: the current state as ADDED events, then changes.
    let (initial, from) = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => {
            let l = state
                .store
                .list(t.res, t.namespace.as_deref(), &labels, &fields)?;
            (l.items, l.revision)
        }
        Some(rv) => (
            Vec::new(),
            rv.parse::<u64>()
                .map_err(|_| Error::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let mut w = match state.store.watch(Some(t.res), t.namespace.as_deref(), from) {
        Ok(w) => w,
        Err(e) => return Ok(error_response(&e)),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
    let res = t.res;
    let version = t.version.clone();
    let bookmark_version = version.clone();
    let render = move |o: &Value| -> Value {
        let o = present(res, &version, o);
        if want_table {
            let rv = meta::resource_version(&o).parse().unwrap_or(0);
            table::table(res, &[&o], rv, include_object)
        } else {
            o
        }
    };
    tokio::spawn(async move {
        for o in &initial {
            if tx.send(line("ADDED", render(o))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let mut last = from;
        loop {
            tokio::select! {
                ev = w.next() => match ev {
                    Some(Ok(ev)) => {
                        last = ev.revision;
                        if !labels.matches(meta::labels(&ev.object)) || !fields.matches(&ev.object) {
                            continue;
                        }
                        if tx.send(line(ev.ty.as_str(), render(&ev.object))).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(line("ERROR", e.to_status())).await;
                        return;
                    }
                    None => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let b = json!({"kind": res.kind, "apiVersion": res.api_version(&bookmark_version), "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(line("BOOKMARK", b)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
