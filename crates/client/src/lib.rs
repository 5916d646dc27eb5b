//! HTTP client for the vmsnap API, configured from a kubeconfig.
