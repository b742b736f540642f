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
use flowd::control::server::{ControlServer, ServerOptions};
use flowd::daemon::{Daemon, handler, metrics};
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

async fn signals(daemon: Arc<Daemon>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); return; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); return; }
            _ = hup.recv() => {
                let d = daemon.clone();
                match tokio::task::spawn_blocking(move || d.reload()).await {
                    Ok(Ok(lines)) => tracing::info!(changes = ?lines, "SIGHUP: configuration reloaded"),
                    Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: reload refused, configuration unchanged"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed"),
                }
            }
        }
    }
}

fn run(path: PathBuf, keep_offloads: bool) -> ExitCode {
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
        let socket = cfg.control.socket.clone();
        let metrics_listen = cfg.metrics.map(|m| m.listen);
        let server = match ControlServer::bind(&socket, ServerOptions::default()) {
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
        if let Some(listen) = metrics_listen {
            match metrics::install(listen) {
                Ok(()) => {
                    let h = h.clone();
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(Duration::from_secs(1));
                        loop {
                            tick.tick().await;
                            let h = h.clone();
                            let _ = tokio::task::spawn_blocking(move || metrics::publish(&h)).await;
                        }
                    });
                }
                Err(e) => tracing::error!(error = %e, "metrics disabled"),
            }
        }
        tracing::info!(socket = %socket.display(), "control socket ready");
        server.run(h, signals(daemon.clone())).await;
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
        Some(Command::Lab { vm, hold }) => flowd::lab::main(vm, hold),
        None => run(cli.config, cli.keep_offloads),
    }
}
