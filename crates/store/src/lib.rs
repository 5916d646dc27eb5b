//! The Store trait, its SQLite backend, and the watch hub.
