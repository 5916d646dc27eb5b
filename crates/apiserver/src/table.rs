//! `meta.k8s.io/v1` Table responses, built from the printer columns in the registry.

use api::meta;
use api::registry::{ColumnType, Resource};
use serde_json::{json, Value};

/// Whether the client asked for a Table (`Accept: application/json;as=Table;...`).
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .any(|part| part.split(';').any(|p| p.trim() == "as=Table"))
    })
}

pub fn column_definitions(res: &Resource) -> Vec<Value> {
    let mut cols = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    for c in res.columns {
        let (ty, format) = match c.ty {
            ColumnType::String => ("string", ""),
            ColumnType::Date => ("date", ""),
            ColumnType::Boolean => ("boolean", ""),
            ColumnType::Integer => ("integer", ""),
        };
        cols.push(json!({"name": c.name, "type": ty, "format": format, "description": c.description, "priority": c.priority}));
    }
    cols
}

fn cell(obj: &Value, ty: ColumnType, path: &str) -> Value {
    let v = meta::json_path(obj, path);
    match (ty, v) {
        (_, None) => Value::Null,
        (ColumnType::Date, Some(Value::String(s))) => Value::String(meta::age(s)),
        (ColumnType::String, Some(Value::Array(a))) => Value::String(
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        (_, Some(v)) => v.clone(),
    }
}

pub fn row(res: &Resource, obj: &Value, include_object: bool) -> Value {
    let mut cells = vec![Value::String(meta::name(obj).to_string())];
    for c in res.columns {
        cells.push(cell(obj, c.ty, c.path));
    }
    let object = if include_object {
        obj.clone()
    } else {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"].clone()})
    };
    json!({"cells": cells, "object": object})
}

pub fn table(res: &Resource, objs: &[&Value], revision: u64, include_object: bool) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "columnDefinitions": column_definitions(res),
        "rows": objs.iter().map(|o| row(res, o, include_object)).collect::<Vec<_>>(),
    })
}
