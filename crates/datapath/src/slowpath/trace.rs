//! `flowctl trace`: a translation with the reason for each step.

use super::fields::describe_mask;
use super::mac::{Location, Mac};
use super::network::{Attachment, NetworkId};
use super::rules::{RuleAction, RuleId};
use super::xlate::Xlation;
use crate::PortId;
use crate::flow::{FlowKey, Megaflow};
use std::fmt;
use std::net::IpAddr;

/// One step of a translation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceStep {
    /// A rule that does not match.
    RuleSkipped {
        /// The rule.
        id: RuleId,
        /// Its priority.
        priority: u16,
    },
    /// The highest-priority matching rule.
    RuleMatched {
        /// The rule.
        id: RuleId,
        /// Its priority.
        priority: u16,
        /// Its actions.
        actions: Vec<RuleAction>,
    },
    /// No rule matched: the packet is dropped.
    TableMiss,
    /// The rule's `drop` action stopped it.
    RuleDrop,
    /// NORMAL: the ingress attachment is in no network.
    NoNetwork {
        /// The ingress port.
        port: PortId,
        /// The outer VLAN id.
        vlan: Option<u16>,
    },
    /// NORMAL: a tunnel packet whose VNI is no network's (or without tunnel metadata).
    UnknownVni {
        /// The tunnel port.
        port: PortId,
        /// The VNI.
        vni: u32,
    },
    /// NORMAL: a VLAN-tagged inner frame from the tunnel (dropped).
    TaggedFromTunnel {
        /// The VNI.
        vni: u32,
    },
    /// NORMAL: the ingress network and location.
    Ingress {
        /// The network.
        network: NetworkId,
        /// Where the frame came from.
        from: Location,
    },
    /// NORMAL: a group source MAC (dropped).
    GroupSource {
        /// The MAC.
        mac: Mac,
    },
    /// NORMAL: the source station and whether learning it changes the table.
    Learn {
        /// The network.
        network: NetworkId,
        /// The source MAC.
        mac: Mac,
        /// Its location.
        location: Location,
        /// Whether the table would change (new station or station move).
        change: bool,
    },
    /// NORMAL: a broadcast or multicast destination (flooded).
    GroupDestination {
        /// The MAC.
        mac: Mac,
    },
    /// NORMAL: an unknown unicast destination (flooded).
    Unknown {
        /// The MAC.
        mac: Mac,
    },
    /// NORMAL: a known destination.
    Known {
        /// The MAC.
        mac: Mac,
        /// Where it lives.
        location: Location,
    },
    /// NORMAL: the destination lives where the frame came from (dropped).
    Hairpin {
        /// The MAC.
        mac: Mac,
    },
    /// NORMAL: a frame from a VTEP to a station behind a VTEP (dropped).
    SplitHorizon {
        /// The MAC.
        mac: Mac,
        /// Its VTEP.
        vtep: IpAddr,
    },
    /// NORMAL: flooding.
    Flood {
        /// The network.
        network: NetworkId,
        /// Local attachments receiving a copy.
        local: Vec<Attachment>,
        /// Remote VTEPs receiving a copy (head-end replication).
        remote: Vec<IpAddr>,
    },
}

impl fmt::Display for TraceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceStep::RuleSkipped { id, priority } => {
                write!(f, "rule {id} (priority {priority}): no match")
            }
            TraceStep::RuleMatched {
                id,
                priority,
                actions,
            } => {
                let list: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
                write!(
                    f,
                    "rule {id} (priority {priority}): match, actions={}",
                    if list.is_empty() {
                        "drop".to_string()
                    } else {
                        list.join(",")
                    }
                )
            }
            TraceStep::TableMiss => f.write_str("no rule matches: drop"),
            TraceStep::RuleDrop => f.write_str("drop: the rule's remaining actions are skipped"),
            other => fmt_normal(other, f),
        }
    }
}

fn fmt_normal(step: &TraceStep, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("NORMAL: ")?;
    match step {
        TraceStep::NoNetwork { port, vlan } => match vlan {
            Some(v) => write!(f, "port {port} vlan {v} is in no network: drop"),
            None => write!(f, "port {port} (untagged) is in no network: drop"),
        },
        TraceStep::UnknownVni { port, vni } => {
            write!(f, "VNI {vni} on tunnel port {port} is in no network: drop")
        }
        TraceStep::TaggedFromTunnel { vni } => {
            write!(f, "VLAN-tagged inner frame on VNI {vni}: drop")
        }
        TraceStep::Ingress { network, from } => write!(f, "network {network}, from {from}"),
        TraceStep::GroupSource { mac } => write!(f, "source {mac} is a group address: drop"),
        TraceStep::Learn {
            mac,
            location,
            change,
            ..
        } => {
            let what = if *change {
                "learn (new or moved)"
            } else {
                "already known there"
            };
            write!(f, "source {mac} at {location}: {what}")
        }
        TraceStep::GroupDestination { mac } => {
            write!(f, "destination {mac} is a group address: flood")
        }
        TraceStep::Unknown { mac } => write!(f, "destination {mac} is unknown: flood"),
        TraceStep::Known { mac, location } => write!(f, "destination {mac} is at {location}"),
        TraceStep::Hairpin { mac } => {
            write!(f, "{mac} lives where the frame came from: drop")
        }
        TraceStep::SplitHorizon { mac, vtep } => write!(
            f,
            "{mac} is behind VTEP {vtep} and the frame came from a VTEP (split horizon): drop"
        ),
        TraceStep::Flood {
            network,
            local,
            remote,
        } => {
            let l: Vec<String> = local.iter().map(|a| a.to_string()).collect();
            let r: Vec<String> = remote.iter().map(|ip| ip.to_string()).collect();
            write!(
                f,
                "flood in network {network} to [{}] and head-end to VTEPs [{}]",
                l.join(", "),
                r.join(", ")
            )
        }
        _ => write!(f, "{step:?}"),
    }
}

/// A translation with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The packet's key.
    pub key: FlowKey,
    /// The steps, in order.
    pub steps: Vec<TraceStep>,
    /// The decision.
    pub xlation: Xlation,
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "packet: {}", self.key)?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "{:>3}. {s}", i + 1)?;
        }
        let x = &self.xlation;
        writeln!(f, "megaflow: {}", Megaflow::new(&self.key, &x.mask))?;
        writeln!(f, "consulted: {}", describe_mask(&x.mask).join(", "))?;
        if x.needs_learning {
            writeln!(f, "learning: this upcall updates the MAC table")?;
        }
        write!(f, "actions: {}", x.actions)
    }
}
