//! Prometheus metrics: the `flowctl stats` counters, published every second under
//! stable names through the `metrics` crate and its Prometheus exporter.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `flowd_flows` | gauge | `placement` = offloaded, software |
//! | `flowd_upcalls_total`, `flowd_upcall_drops_total` | counter | |
//! | `flowd_flow_setups_total` | counter | |
//! | `flowd_offload_software_flows` | gauge | `reason` |
//! | `flowd_migrations_total` | counter | `kind` |
//! | `flowd_fib_events_total`, `flowd_fib_resyncs_total` | counter | |
//! | `flowd_revalidator_runs_total` | counter | |
//! | `flowd_datapath_total` | counter | `counter` (rx_packets, cache_hits, ...) |

use super::handler::Handler;
use crate::control::proto::{Request, Response, ResponseBody};
use crate::control::server::ControlHandler;
use metrics::{counter, gauge};
use std::net::SocketAddr;

/// Starts the exporter's HTTP listener (inside the current tokio runtime).
pub fn install(listen: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
        .map_err(|e| format!("metrics exporter on {listen}: {e}"))
}

/// Publishes the current counters once.
pub fn publish(h: &Handler) {
    let Response::Ok(ResponseBody::Stats(s)) = h.handle(Request::Stats) else {
        return;
    };
    gauge!("flowd_flows", "placement" => "offloaded").set(s.flows_offloaded as f64);
    gauge!("flowd_flows", "placement" => "software")
        .set(s.flows.saturating_sub(s.flows_offloaded) as f64);
    counter!("flowd_upcalls_total").absolute(s.upcalls);
    counter!("flowd_upcall_drops_total").absolute(s.upcall_drops);
    counter!("flowd_flow_setups_total").absolute(s.flow_setups);
    for (reason, n) in &s.offload_failed_by_reason {
        gauge!("flowd_offload_software_flows", "reason" => reason.clone()).set(*n as f64);
    }
    for (kind, n) in &s.migrations_by_kind {
        counter!("flowd_migrations_total", "kind" => kind.clone()).absolute(*n);
    }
    counter!("flowd_fib_events_total").absolute(s.fib_events);
    counter!("flowd_fib_resyncs_total").absolute(s.resyncs);
    counter!("flowd_revalidator_runs_total").absolute(s.revalidator_runs);
    for (name, n) in &s.other {
        counter!("flowd_datapath_total", "counter" => name.clone()).absolute(*n);
    }
}
