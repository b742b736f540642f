//! Flow cache: exact-match cache and megaflow classifier.
