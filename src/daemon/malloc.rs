//! glibc malloc settings for a daemon that holds a million flows (issue 15).
//!
//! With glibc's defaults the daemon's RSS was about 400 bytes per flow above its heap.
//! Most of it: the flow maps' old tables, freed as the maps doubled. glibc's mmap
//! threshold is *dynamic*: it rises to the size of each mapped block freed (up to 32
//! MiB), so after the first big table is freed, the next ones up to that size come from
//! the arenas and, once freed, stay there as free memory counted in RSS. A fixed
//! threshold ([`MMAP_THRESHOLD`]) keeps every big block (tables, lists of many flows) in
//! its own mapping, given back to the kernel when freed; small blocks are unchanged.
//!
//! The environment still decides: a parameter glibc's own variables set
//! (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_ARENA_MAX`, or `GLIBC_TUNABLES` naming
//! `glibc.malloc.mmap_threshold` / `glibc.malloc.arena_max`) is left as they set it.
//! Measured figures: docs/operations.md, *Sizing*.

/// Blocks of at least this many bytes get a mapping of their own (glibc's default
/// starts at 128 KiB and moves; this one stays).
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// What [`plan`] decided: the `mallopt` calls to make (`None`: left alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MallocPlan {
    /// `M_MMAP_THRESHOLD`.
    pub mmap_threshold: Option<usize>,
}

/// The settings to apply, given the environment (`env` reads a variable).
pub fn plan(env: impl Fn(&str) -> Option<String>) -> MallocPlan {
    let tunables = env("GLIBC_TUNABLES").unwrap_or_default();
    let set = |var: &str, tunable: &str| env(var).is_some() || tunables.contains(tunable);
    MallocPlan {
        mmap_threshold: (!set("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"))
            .then_some(MMAP_THRESHOLD),
    }
}

/// Applies [`plan`] for this process's environment; returns what took effect. Call it
/// first thing, before any thread starts. Nothing happens with another C library.
pub fn tune() -> MallocPlan {
    let p = plan(|v| std::env::var(v).ok());
    MallocPlan {
        mmap_threshold: p.mmap_threshold.filter(|t| set_mmap_threshold(*t)),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: usize) -> bool {
    let Ok(v) = libc::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: mallopt only changes malloc's parameters; any value is checked by glibc.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, v) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_threshold_is_fixed_unless_the_environment_sets_it() {
        assert_eq!(plan(env(&[])).mmap_threshold, Some(MMAP_THRESHOLD));
        assert_eq!(
            plan(env(&[("MALLOC_ARENA_MAX", "1")])).mmap_threshold,
            Some(MMAP_THRESHOLD)
        );
        assert_eq!(
            plan(env(&[("MALLOC_MMAP_THRESHOLD_", "65536")])).mmap_threshold,
            None
        );
        let t = [("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")];
        assert_eq!(plan(env(&t)).mmap_threshold, None);
        let t = [("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")];
        assert_eq!(plan(env(&t)).mmap_threshold, Some(MMAP_THRESHOLD));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_threshold() {
        assert!(set_mmap_threshold(MMAP_THRESHOLD));
        assert!(
            !set_mmap_threshold(usize::MAX),
            "too big for mallopt: refused"
        );
    }
}
