//! Kubernetes-compatible HTTP API: discovery, OpenAPI, CRUD, patch, watch, tables, auth.
