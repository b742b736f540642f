//! `flowd`: the daemon, its configuration check, and the lab.
//!
//! ```text
//! flowd --config /etc/flowd/flowd.toml [--keep-offloads]
//! flowd --check-config /etc/flowd/flowd.toml
//! flowd lab [--vm]
//! ```
//! Logs go to stderr through `tracing`, filtered by `RUST_LOG` (default `info`).

use clap::{Parser, Subcommand};
use flowd::config::Config;
use flowd::control::server::{ControlHandler, ControlServer, RunningServer, ServerOptions};
use flowd::daemon::listeners::{Listener, ListenerReports};
use flowd::daemon::metrics::{self, MetricsEndpoint};
use flowd::daemon::{Daemon, handler};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "flowd",
    version,
    about = "A vswitch for SR-IOV hypervisors with tc flower offload"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        default_value = "/etc/flowd/flowd.toml"
    )]
    config: PathBuf,
    /// Validate the configuration file, explain every error with its line, and exit.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// On shutdown, leave the offloaded filters in place (a restart without traffic
    /// loss: the next start sweeps what no flow re-claims).
    #[arg(long)]
    keep_offloads: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a whole hypervisor in network namespaces, run flowd on it, show a
    /// route-change migration and an MTU refusal, and tear it all down.
    Lab {
        /// Run the lab inside a VM with Debian's kernel, so that real tc flower rules
        /// carry the traffic.
        #[arg(long)]
        vm: bool,
        /// Keep going after the lab is built (until Ctrl-C) to explore with flowctl.
        #[arg(long)]
        hold: bool,
        /// The BGP EVPN lab instead: three hypervisors running FRR, two of them flowd,
        /// with no static remote VTEP or MAC (needs `apt-get install frr`).
        #[arg(long)]
        evpn: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} ports, {} networks, {} rules)",
                path.display(),
                cfg.ports.len(),
                cfg.networks.len(),
                cfg.rules.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// The signals flowd handles, caught from the moment this returns: before the control
/// socket answers, so that a SIGHUP sent as soon as it does (a supervisor's reload right
/// after start) is a reload, neither lost (a disposition inherited as ignored, as under
/// `nohup`) nor fatal (the default).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (within the runtime).
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Serves the signals until SIGTERM or SIGINT: SIGHUP reloads.
async fn signals(sigs: Signals, daemon: Arc<Daemon>) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = sigs;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); return; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); return; }
            _ = hup.recv() => {
                let d = daemon.clone();
                match tokio::task::spawn_blocking(move || d.reload(false)).await {
                    Ok(Ok(r)) if !r.not_applied.is_empty() => {
                        let not_applied: Vec<String> = r.not_applied.iter().map(ToString::to_string).collect();
                        tracing::warn!(changes = ?r.applied, ?not_applied, "SIGHUP: configuration reloaded in part");
                    }
                    Ok(Ok(r)) => tracing::info!(changes = ?r.applied, "SIGHUP: configuration reloaded"),
                    Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: reload refused, configuration unchanged"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed"),
                }
            }
        }
    }
}

/// The configuration in force, as the daemon publishes it (after every successful
/// reload, even one that changed nothing: a move that failed is then retried).
type Follow = tokio::sync::watch::Receiver<Arc<Config>>;

/// Serves the control socket until `shutdown`, moving it whenever a reload publishes
/// another `[control] socket`: the new socket is bound and served first, then the old
/// one stops (its connections in progress finish) and its file is removed. A new path
/// that cannot be bound is logged and the old socket keeps serving. On shutdown, the
/// socket in use is removed.
async fn control_socket(
    first: ControlServer,
    handler: Arc<dyn ControlHandler>,
    mut follow: Follow,
    reports: Arc<Daemon>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let reports = reports.listener_reports();
    let mut current = first.spawn(handler.clone());
    tracing::info!(socket = %current.path().display(), "control socket ready");
    tokio::pin!(shutdown);
    reports.attach();
    loop {
        let want = follow.borrow_and_update().control.socket.clone();
        current = move_control_socket(current, &want, &handler, reports).await;
        tokio::select! {
            _ = &mut shutdown => break,
            more = follow.changed() => if more.is_err() {
                // The daemon is gone: no more reloads, serve until shutdown.
                (&mut shutdown).await;
                break;
            },
        }
    }
    current.stop().await;
}

/// Moves the control socket to `want` (if it differs); the socket served afterwards.
/// The outcome is reported as soon as it is known: before the old socket stops, which
/// waits for the connection that asked for the reload, itself waiting for the report.
async fn move_control_socket(
    current: RunningServer,
    want: &std::path::Path,
    handler: &Arc<dyn ControlHandler>,
    reports: &ListenerReports,
) -> RunningServer {
    if current.path() == want {
        reports.report(Listener::Control, Ok(()));
        return current;
    }
    let old = current.path().to_path_buf();
    match ControlServer::bind(want, ServerOptions::default()) {
        Ok(server) => {
            let next = server.spawn(handler.clone());
            reports.report(Listener::Control, Ok(()));
            current.stop().await;
            tracing::info!(
                from = %old.display(),
                to = %want.display(),
                "reload: control socket moved"
            );
            next
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                socket = %old.display(),
                "reload: cannot move the control socket; still serving on the old one"
            );
            let why = format!(
                "socket {}: {e}; still serving on {}",
                want.display(),
                old.display()
            );
            reports.report(Listener::Control, Err(why));
            current
        }
    }
}

/// Serves the Prometheus endpoint where the configuration in force says, following
/// reloads: on a change, the new address is bound first, then the old endpoint stops.
/// A failed bind is logged and the previous endpoint (if any) keeps serving. The
/// recorder is installed the first time metrics are enabled; the counters are published
/// every second while they are.
async fn metrics_endpoint(h: Arc<handler::Handler>, mut follow: Follow) {
    let mut current: Option<Endpoint> = None;
    let mut publishing = false;
    let reports = h.0.clone();
    reports.listener_reports().attach();
    loop {
        let want = follow.borrow_and_update().metrics.map(|m| m.listen);
        let mut outcome = Ok(());
        if let Some(addr) = want {
            match metrics::recorder() {
                Ok(handle) => {
                    if !publishing {
                        publishing = true;
                        tokio::spawn(publish_metrics(h.clone(), follow.clone()));
                    }
                    let moved;
                    (current, moved) = move_metrics(current, addr, handle).await;
                    outcome = moved;
                }
                Err(e) => {
                    tracing::error!(error = %e, "metrics disabled");
                    outcome = Err(format!("metrics disabled: {e}"));
                }
            }
        } else if let Some((_, old)) = current.take() {
            let addr = old.local_addr();
            old.stop().await;
            tracing::info!(listen = %addr, "reload: metrics endpoint stopped");
        }
        reports
            .listener_reports()
            .report(Listener::Metrics, outcome);
        if follow.changed().await.is_err() {
            // The daemon is gone: keep the endpoint until the process ends.
            return std::future::pending().await;
        }
    }
}

/// An endpoint and the address it was configured with (port 0 binds another port).
type Endpoint = (SocketAddr, MetricsEndpoint);

/// Moves the metrics endpoint to `addr` (if it differs); the endpoint served afterwards.
async fn move_metrics(
    current: Option<Endpoint>,
    addr: SocketAddr,
    handle: PrometheusHandle,
) -> (Option<Endpoint>, Result<(), String>) {
    let mut old = match current {
        Some((listen, ep)) if listen == addr => return (Some((listen, ep)), Ok(())),
        other => other,
    };
    let was = old.as_ref().map(|(listen, ep)| (*listen, ep.local_addr()));
    let mut bound = MetricsEndpoint::bind(addr, handle.clone());
    // The same port on an overlapping address (0.0.0.0 and 127.0.0.1) is refused while
    // ours holds it: stop the old endpoint first, and put it back if the new one still
    // cannot listen.
    if let (Err(e), Some((listen, local))) = (&bound, was)
        && e.addr_in_use()
        && local.port() == addr.port()
    {
        if let Some((_, ep)) = old.take() {
            ep.stop().await;
        }
        bound = MetricsEndpoint::bind(addr, handle.clone());
        if bound.is_err() {
            old = MetricsEndpoint::bind(local, handle)
                .ok()
                .map(|ep| (listen, ep));
        }
    }
    match bound {
        Ok(next) => {
            if let Some((_, ep)) = old {
                ep.stop().await;
            }
            let previous = was.map(|(_, local)| local.to_string());
            tracing::info!(
                listen = %next.local_addr(),
                previous = previous.as_deref().unwrap_or("none"),
                "metrics endpoint listening"
            );
            (Some((addr, next)), Ok(()))
        }
        Err(e) => {
            let serving = old
                .as_ref()
                .map_or("metrics are not served".to_string(), |(_, ep)| {
                    format!("still serving on {}", ep.local_addr())
                });
            let why = format!("listen {addr}: {e}; {serving}");
            match (&old, was) {
                (Some((_, ep)), _) => tracing::error!(
                    error = %e,
                    listen = %ep.local_addr(),
                    "cannot move the metrics endpoint; still serving on the old address"
                ),
                (None, Some(_)) => tracing::error!(
                    error = %e,
                    "cannot move the metrics endpoint, nor serve on the old address again: \
                     metrics are not served"
                ),
                (None, None) => tracing::error!(error = %e, "cannot start the metrics endpoint"),
            }
            (old, Err(why))
        }
    }
}

/// Publishes the counters every second while `[metrics]` is configured.
async fn publish_metrics(h: Arc<handler::Handler>, config: Follow) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if config.borrow().metrics.is_none() {
            continue;
        }
        let h = h.clone();
        let _ = tokio::task::spawn_blocking(move || metrics::publish(&h.0)).await;
    }
}

fn run(path: PathBuf, keep_offloads: bool) -> ExitCode {
    // Before any thread: glibc's settings for big flow tables (see the module).
    let tuned = flowd::daemon::malloc::tune();
    tracing::debug!(mmap_threshold = ?tuned.mmap_threshold, "malloc settings");
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flowd-ctl")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flowd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let sigs = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("flowd: cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
        let server = match ControlServer::bind(&cfg.control.socket, ServerOptions::default()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("flowd: control socket: {e}");
                return ExitCode::from(1);
            }
        };
        let daemon = match tokio::task::spawn_blocking(move || Daemon::start(cfg, Some(path))).await
        {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                eprintln!("flowd: {e}");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("flowd: start-up failed: {e}");
                return ExitCode::from(1);
            }
        };
        let h = Arc::new(handler::Handler(daemon.clone()));
        tokio::spawn(metrics_endpoint(h.clone(), daemon.subscribe_config()));
        let follow = daemon.subscribe_config();
        control_socket(
            server,
            h,
            follow,
            daemon.clone(),
            signals(sigs, daemon.clone()),
        )
        .await;
        let d = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || d.shutdown(keep_offloads)).await;
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    if let Some(path) = &cli.check_config {
        return check_config(path);
    }
    match cli.command {
        Some(Command::Lab { vm, hold, evpn }) if evpn => flowd::lab::evpn::main(vm, hold),
        Some(Command::Lab { vm, hold, .. }) => flowd::lab::main(vm, hold),
        None => run(cli.config, cli.keep_offloads),
    }
}
