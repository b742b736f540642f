//! Zero-copy packet views and representations (see each submodule).
