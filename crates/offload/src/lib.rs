//! flowd offload layer (see docs/architecture.md).
