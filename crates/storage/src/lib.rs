//! Storage pool drivers behind one Driver trait.
