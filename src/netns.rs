//! Network namespaces for the lab and the integration tests.
//!
//! Every namespace is a [`Netns`] guard: created with a unique name, deleted on drop
//! (also when the caller panics or fails), which removes every device inside it and the
//! veth peers of those devices in other namespaces.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command line through `sh -c`; an error carries its output.
pub fn try_sh(cmd: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| format!("spawn `{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs a command line through `sh -c`; panics with its output on failure (tests).
pub fn sh(cmd: &str) -> String {
    try_sh(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether namespaces can be built here (root, with iproute2).
pub fn can_netns() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip").arg("-V").output().is_ok()
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its `ip netns` name.
    pub name: String,
    owned: bool,
}

impl Netns {
    /// Creates `<prefix><pid>n<counter>` (unique per process and call).
    pub fn new(prefix: &str) -> Self {
        let name = format!(
            "{prefix}{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self::named(&name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates a namespace with exactly this name (replacing a stale one of a previous,
    /// killed run).
    pub fn named(name: &str) -> Result<Self, String> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        try_sh(&format!("ip netns add {name}"))?;
        let ns = Self {
            name: name.to_string(),
            owned: true,
        };
        ns.try_ip("link set lo up")?;
        Ok(ns)
    }

    /// A handle on an existing namespace that does not delete it on drop.
    pub fn borrowed(name: &str) -> Self {
        Self {
            name: name.to_string(),
            owned: false,
        }
    }

    /// Runs `ip -n <ns> ARGS`.
    pub fn try_ip(&self, args: &str) -> Result<String, String> {
        try_sh(&format!("ip -n {} {args}", self.name))
    }

    /// Runs `ip -n <ns> ARGS`; panics on failure.
    pub fn ip(&self, args: &str) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a command line inside the namespace; panics on failure.
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }

    /// Runs a command line inside the namespace; whether it succeeded, and its output.
    pub fn try_exec(&self, cmd: &str) -> (bool, String) {
        match Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
        {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (false, e.to_string()),
        }
    }

    /// The namespace's file (what `setns` and fibwatch's `Config::netns` take).
    pub fn path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// The interface index of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> Option<datapath::IfIndex> {
        let out = self.try_ip(&format!("-o link show dev {dev}")).ok()?;
        out.split(':')
            .next()?
            .trim()
            .parse()
            .ok()
            .map(datapath::IfIndex)
    }

    /// The MAC address of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let out = self.ip(&format!("-br link show dev {dev}"));
        let text = out.split_whitespace().nth(2).unwrap_or_default();
        let mut mac = [0u8; 6];
        for (m, part) in mac.iter_mut().zip(text.split(':')) {
            *m = u8::from_str_radix(part, 16).unwrap_or(0);
        }
        mac
    }

    /// A counter of `dev` (`rx_packets`, `tx_bytes`, ...).
    pub fn counter(&self, dev: &str, stat: &str) -> u64 {
        self.try_exec(&format!("cat /sys/class/net/{dev}/statistics/{stat}"))
            .1
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Moves the calling thread into this namespace (sockets opened afterwards live in
    /// it). Use from a dedicated thread.
    pub fn enter(&self) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let path = self.path();
        let f = std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        // SAFETY: a valid namespace file descriptor; affects only this thread.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "setns {}: {}",
                self.name,
                std::io::Error::last_os_error()
            ))
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }
}
