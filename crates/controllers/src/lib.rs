//! Reconcilers and the small runtime that drives them.

pub mod bootstrap;
pub mod clone;
pub mod context;
pub mod events;
pub mod gc;
pub mod kubevirt;
pub mod metrics;
pub mod runtime;
pub mod snapshot;
pub mod storage;
pub mod vm;

pub use context::Context;
pub use runtime::{Action, Mapper, ObjectKey, Reconciler, Runtime};
