//! Remote stations and flood lists from a control plane, and the local stations it
//! advertises: the slow path's side of a protocol such as BGP EVPN, which it does not
//! know.
//!
//! - **In** ([`RemoteStations`], implemented by [`Engine`]): a control plane says that a
//!   MAC lives behind a remote VTEP, that it no longer does, or which VTEPs get a copy of
//!   the network's flooded frames. Stations become [`MacKind::Control`] entries of the
//!   MAC table, flood lists are kept per network beside the segment's configured
//!   `remotes`; each update that changed something is a [`Change`] (a station's, or
//!   [`Change::Flood`]) and the revalidator re-translates only the flows it may affect
//!   (those toward or from that MAC; those that flooded in that network).
//! - **Out** ([`StationObserver`], registered with [`Engine::observe_stations`]): the
//!   stations whose entries changed (learned, moved, aged out, forgotten with their
//!   port, configured). The observer is told *which* stations changed, never their new
//!   state: it reads the table itself ([`MacTable::get`]) when it acts, so that events
//!   that race each other cannot leave it with an older state than the table's.
//!
//! [`MacKind::Control`]: super::MacKind::Control
//! [`MacTable::get`]: super::MacTable::get

use super::engine::Engine;
use super::mac::{Mac, MacKey};
use super::network::NetworkId;
use super::{Change, SlowPathError};
use std::net::IpAddr;

/// A control plane's word about a network's remote side.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteUpdate {
    /// `mac` lives behind the remote VTEP `vtep` (a new station, or one that moved).
    Station {
        /// The network.
        network: NetworkId,
        /// The station.
        mac: Mac,
        /// Its VTEP.
        vtep: IpAddr,
    },
    /// `mac` no longer lives behind `vtep` (withdrawn). A station the data plane has seen
    /// here since, or a configured one, stays.
    StationGone {
        /// The network.
        network: NetworkId,
        /// The station.
        mac: Mac,
        /// The VTEP it was behind.
        vtep: IpAddr,
    },
    /// The network's control-plane flood list (head-end replication), replacing the
    /// previous one; the configured remote VTEPs are kept besides it.
    FloodList {
        /// The network.
        network: NetworkId,
        /// The VTEPs, in any order.
        vteps: Vec<IpAddr>,
    },
}

impl RemoteUpdate {
    /// The network it is about.
    pub fn network(&self) -> NetworkId {
        match self {
            RemoteUpdate::Station { network, .. }
            | RemoteUpdate::StationGone { network, .. }
            | RemoteUpdate::FloodList { network, .. } => *network,
        }
    }
}

/// What a batch of updates did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteReport {
    /// Updates that changed the slow path (each queued for revalidation).
    pub changed: usize,
    /// Updates that changed nothing (already so, or a station that moved here since).
    pub unchanged: usize,
    /// Updates refused, with the reason (an unknown network, a group MAC).
    pub refused: Vec<(RemoteUpdate, SlowPathError)>,
}

/// Where a control plane puts remote stations and flood lists.
pub trait RemoteStations: Send + Sync {
    /// Applies the updates in order, as one configuration change.
    fn apply_remote(&self, updates: &[RemoteUpdate]) -> RemoteReport;
}

/// Hears which stations' MAC table entries changed.
pub trait StationObserver: Send + Sync {
    /// These stations' entries changed (appeared, moved, aged out, were forgotten or
    /// configured). Called on handler and revalidator threads, outside the slow path's
    /// locks: it must be quick and must not block (queue the keys, act elsewhere).
    fn stations_changed(&self, stations: &[MacKey]);
}

impl RemoteStations for Engine {
    fn apply_remote(&self, updates: &[RemoteUpdate]) -> RemoteReport {
        self.configure(|sp| {
            let mut report = RemoteReport::default();
            let mut changes = Vec::new();
            for u in updates {
                match sp.apply_remote(u) {
                    Ok(Some(c)) => {
                        report.changed += 1;
                        changes.push(c);
                    }
                    Ok(None) => report.unchanged += 1,
                    Err(e) => report.refused.push((u.clone(), e)),
                }
            }
            (report, changes)
        })
    }
}

/// The stations among `changes`.
pub(crate) fn stations(changes: &[Change]) -> Vec<MacKey> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Mac(k) => Some(*k),
            _ => None,
        })
        .collect()
}
