//! flowd FIB watcher (see docs/architecture.md).
