//! Reconcilers and the small runtime that drives them.
