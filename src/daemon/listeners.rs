//! What the listener tasks (the control socket and the metrics endpoint, which live in
//! the binary's runtime) made of the configuration published last, so that a reload's
//! answer says whether its `[control]` and `[metrics]` changes took effect.
//!
//! A reload publishes the configuration, then waits (a few seconds at most, holding the
//! configuration lock, so no other reload publishes meanwhile) until each attached
//! listener reported on that publication. A bind that failed is a "not applied" line of
//! the answer; the listener keeps serving where it was and retries on the next reload.

use super::reload::NotApplied;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The listeners that report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The control socket.
    Control,
    /// The Prometheus endpoint.
    Metrics,
}

impl Listener {
    /// The configuration section it follows (`[control]`, `[metrics]`).
    pub fn section(self) -> &'static str {
        match self {
            Listener::Control => "[control]",
            Listener::Metrics => "[metrics]",
        }
    }
}

#[derive(Default)]
struct State {
    /// Publications so far.
    published: u64,
    /// Listeners attached (0 in tests that drive the daemon without its binary).
    attached: u8,
    /// The last report of each: (publication, outcome).
    control: Option<(u64, Result<(), String>)>,
    metrics: Option<(u64, Result<(), String>)>,
}

/// Reports of the listener tasks; see the module docs.
#[derive(Default)]
pub struct ListenerReports {
    state: Mutex<State>,
    cond: Condvar,
}

impl ListenerReports {
    /// A listener task starts reporting.
    pub fn attach(&self) {
        self.lock().attached += 1;
    }

    /// A listener's outcome for the configuration published last.
    pub fn report(&self, which: Listener, outcome: Result<(), String>) {
        let mut s = self.lock();
        let entry = Some((s.published, outcome));
        match which {
            Listener::Control => s.control = entry,
            Listener::Metrics => s.metrics = entry,
        }
        self.cond.notify_all();
    }

    /// Counts a publication; the number to wait for.
    pub(super) fn published(&self) -> u64 {
        let mut s = self.lock();
        s.published += 1;
        s.published
    }

    /// Waits until every attached listener reported on publication `n` (or `within`
    /// passed); the failures.
    pub(super) fn wait(&self, n: u64, within: Duration) -> Vec<NotApplied> {
        let deadline = Instant::now() + within;
        let mut s = self.lock();
        loop {
            let done =
                |r: &Option<(u64, Result<(), String>)>| r.as_ref().is_some_and(|(g, _)| *g >= n);
            let reported = usize::from(done(&s.control)) + usize::from(done(&s.metrics));
            if reported >= usize::from(s.attached) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return vec![NotApplied::ListenersSilent(within)];
            }
            s = self
                .cond
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let mut out = Vec::new();
        for (which, r) in [
            (Listener::Control, &s.control),
            (Listener::Metrics, &s.metrics),
        ] {
            if let Some((g, Err(e))) = r
                && *g >= n
            {
                out.push(NotApplied::Listener {
                    which,
                    why: e.clone(),
                });
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_reload_waits_for_every_attached_listener_and_names_the_failures() {
        let r = Arc::new(ListenerReports::default());
        // Nothing attached: nothing to wait for.
        let n = r.published();
        assert!(r.wait(n, Duration::from_secs(5)).is_empty());
        r.attach();
        r.attach();
        let n = r.published();
        let r2 = r.clone();
        let t = std::thread::spawn(move || {
            r2.report(Listener::Control, Ok(()));
            r2.report(Listener::Metrics, Err("127.0.0.1:1: address in use".into()));
        });
        let lines = r.wait(n, Duration::from_secs(30));
        t.join().unwrap();
        let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec!["not applied: [metrics] 127.0.0.1:1: address in use".to_string()]
        );
        // A listener that has not reported on the newest publication is waited for.
        let n = r.published();
        r.report(Listener::Control, Ok(()));
        let lines = r.wait(n, Duration::from_millis(50));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].to_string().contains("did not confirm"),
            "{lines:?}"
        );
    }
}
