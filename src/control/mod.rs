//! The control socket: flowctl's protocol ([`proto`]), the daemon's server ([`server`]),
//! the blocking client ([`client`]), flowctl's human output ([`format`]), the
//! connection slots the daemon's listeners share ([`slots`]) and the streamed
//! `dump-flows` answer ([`stream`]).
//!
//! Newline-delimited JSON over a Unix socket (mode 0600 in a 0700 directory, so only
//! root talks to the daemon). The daemon implements [`ControlHandler`]; the server calls
//! it on tokio's blocking pool, one request at a time per connection.

pub mod client;
pub mod format;
pub mod proto;
pub mod server;
pub mod slots;
pub mod stream;

pub use client::{ClientError, request};
pub use proto::{FlowFilter, Request, Response, ResponseBody};
pub use server::{ControlHandler, ControlServer, RunningServer, ServeError, ServerOptions, serve};
