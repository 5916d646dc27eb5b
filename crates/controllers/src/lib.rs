//! Reconcilers and the small runtime that drives them.

pub mod bootstrap;
pub mod events;
pub mod gc;
pub mod kubevirt;
pub mod runtime;

pub use runtime::{Action, Mapper, ObjectKey, Reconciler, Runtime};
