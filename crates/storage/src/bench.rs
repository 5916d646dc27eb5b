//! Benchmarks (placeholder replaced below).
