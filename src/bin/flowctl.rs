//! flowctl: talks to a running flowd over its control socket.
//!
//! Exit codes: 0 success, 1 error from the daemon (or no daemon), 2 usage error.
//!
//! `dump-flows` (without `--summary`) streams: rows are printed as the daemon sends
//! them, in constant memory. With `--json` they form one JSON array, one row per line,
//! closed once the daemon's trailer arrived; a dump cut short (the daemon died) leaves
//! it unclosed and exits 1. A reader that stops early (`| head`) ends flowctl quietly,
//! with success.

use clap::{Args, Parser, Subcommand};
use datapath::Megaflow;
use flowd::config::{DEFAULT_CONTROL_SOCKET, RuleActionsConfig};
use flowd::control::client::{Answer, DEFAULT_TIMEOUT, SocketRows, request_streamed};
use flowd::control::proto::{FlowFilter, FlowSelect};
use flowd::control::{Request, Response, format, request};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "flowctl",
    version,
    about = "Inspect and control a running flowd"
)]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Print the daemon's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List flows with their counters and where they run.
    DumpFlows {
        /// Only flows carried by a tc filter (or the simulated eswitch).
        #[arg(long, conflicts_with = "software")]
        offloaded: bool,
        /// Only flows in flowd's software datapath.
        #[arg(long)]
        software: bool,
        /// Only flows entering on this port (a name `show` lists).
        #[arg(long, value_name = "NAME")]
        port: Option<String>,
        /// Only flows of this network (entering on its representors, or in its VNI).
        #[arg(long, value_name = "NAME")]
        network: Option<String>,
        /// Only flows toward or from this remote VTEP.
        #[arg(long, value_name = "IP")]
        remote: Option<std::net::IpAddr>,
        /// Only software flows kept there for this reason category (`mtu`, `no_route`,
        /// `neighbour`, ... as `dump-flows` and `stats` show them).
        #[arg(long, value_name = "CATEGORY", conflicts_with = "offloaded")]
        reason: Option<String>,
        /// At most this many flows.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Count the selected flows (by placement and port) instead of listing them.
        #[arg(long)]
        summary: bool,
    },
    /// List ports.
    Show,
    /// List remote tunnel endpoints and how they resolve.
    Tunnels,
    /// Show what the slow path does with a flow, and why.
    ///
    /// FLOW is in datapath syntax, e.g.
    /// `in_port(1),eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02),eth_type(0x0800)`.
    Trace {
        /// The flow in datapath syntax.
        flow: String,
    },
    /// Delete every flow; traffic re-creates what it needs.
    DelFlows,
    /// Show counters.
    Stats,
    /// Add, delete or list rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Re-read the configuration file and apply what changed.
    Reload {
        /// Apply a file with no representor, which unplugs every VF (refused without).
        #[arg(long)]
        allow_empty: bool,
    },
    /// Each network's stations and flood list, with their origin (static, evpn,
    /// learned).
    Fdb {
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Add a rule.
    Add(RuleAdd),
    /// Delete the rule with this priority and match.
    Del {
        /// Its priority.
        #[arg(long)]
        priority: u16,
        /// Its match in datapath flow syntax.
        #[arg(long = "match", value_name = "MATCH")]
        matches: String,
    },
    /// List rules.
    List,
}

#[derive(Args, Debug)]
struct RuleAdd {
    /// Higher wins.
    #[arg(long)]
    priority: u16,
    /// Match in datapath flow syntax (`<all>` matches everything).
    #[arg(long = "match", value_name = "MATCH")]
    matches: String,
    /// Datapath actions, `normal` or `drop`.
    #[arg(long)]
    actions: String,
}

/// A usage error found after clap: the message, for exit code 2.
struct Usage(String);

fn check_flow(what: &str, text: &str) -> Result<String, Usage> {
    text.parse::<Megaflow>()
        .map(|m| m.to_string())
        .map_err(|e| Usage(format!("bad {what} `{text}`: {e}")))
}

fn to_request(cmd: Command) -> Result<Request, Usage> {
    Ok(match cmd {
        Command::DumpFlows {
            offloaded,
            software,
            port,
            network,
            remote,
            reason,
            limit,
            summary,
        } => {
            let filter = match (offloaded, software || reason.is_some()) {
                (true, _) => FlowFilter::Offloaded,
                (_, true) => FlowFilter::Software,
                _ => FlowFilter::All,
            };
            let select = FlowSelect {
                port,
                network,
                remote,
                reason,
                limit,
            };
            if summary {
                Request::DumpFlows {
                    filter,
                    select,
                    summary,
                    stream: 0,
                }
            } else {
                Request::dump_flows_streamed(filter, select)
            }
        }
        Command::Show => Request::Show,
        Command::Tunnels => Request::Tunnels,
        Command::Trace { flow } => {
            check_flow("flow", &flow)?;
            Request::Trace { flow }
        }
        Command::DelFlows => Request::DelFlows,
        Command::Stats => Request::Stats,
        Command::Rules { command } => match command {
            RulesCommand::Add(a) => {
                check_flow("match", &a.matches)?;
                a.actions
                    .parse::<RuleActionsConfig>()
                    .map_err(|e| Usage(format!("bad actions `{}`: {e}", a.actions)))?;
                Request::RulesAdd {
                    priority: a.priority,
                    r#match: a.matches,
                    actions: a.actions,
                }
            }
            RulesCommand::Del { priority, matches } => {
                check_flow("match", &matches)?;
                Request::RulesDel {
                    priority,
                    r#match: matches,
                }
            }
            RulesCommand::List => Request::RulesList,
        },
        Command::Reload { allow_empty } => Request::Reload { allow_empty },
        Command::Fdb { network } => Request::Fdb { network },
    })
}

fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`flowctl dump-flows | head`) is not an error.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    ExitCode::SUCCESS
}

/// Prints a streamed dump's rows as they come; flushes whenever the next row needs a
/// read from the socket.
fn print_rows(mut rows: SocketRows, json: bool) -> ExitCode {
    let stdout = std::io::stdout();
    let mut w = format::RowWriter::new(std::io::BufWriter::new(stdout.lock()), json);
    loop {
        if rows.would_wait() && w.flush().is_err() {
            return ExitCode::SUCCESS; // The reader is gone (`| head`): stop quietly.
        }
        let Some(row) = rows.next() else { break };
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let _ = w.flush();
                eprintln!("flowctl: {e}");
                return ExitCode::from(1);
            }
        };
        if w.row(&row).is_err() {
            return ExitCode::SUCCESS;
        }
    }
    // A closed pipe here is not an error either.
    let _ = w.finish();
    ExitCode::SUCCESS
}

/// Prints a whole answer.
fn print_response(resp: Result<Response, flowd::control::ClientError>, json: bool) -> ExitCode {
    match resp {
        Ok(Response::Ok(body)) if json => {
            let json = serde_json::to_string_pretty(&body.to_json()).unwrap_or_default();
            print(&(json + "\n"))
        }
        Ok(Response::Ok(body)) => print(&format::body(&body)),
        Ok(Response::Err { message }) => {
            eprintln!("flowctl: {message}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("flowctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let req = match to_request(cli.command) {
        Ok(r) => r,
        Err(Usage(msg)) => {
            eprintln!("flowctl: {msg}");
            return ExitCode::from(2);
        }
    };
    if !req.streams() {
        return print_response(request(&cli.socket, &req), cli.json);
    }
    match request_streamed(&cli.socket, &req, DEFAULT_TIMEOUT) {
        Ok(Answer::Rows(rows)) => print_rows(rows, cli.json),
        // A daemon that does not stream answers whole.
        Ok(Answer::Whole(resp)) => print_response(Ok(resp), cli.json),
        Err(e) => print_response(Err(e), cli.json),
    }
}
