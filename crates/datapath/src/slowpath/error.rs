//! The slow path's error type.

use super::mac::Mac;
use super::network::NetworkId;
use super::rules::RuleId;
use crate::PortId;

/// Why a slow-path configuration change or request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlowPathError {
    /// No rule has this id.
    #[error("no rule {0}")]
    UnknownRule(RuleId),
    /// A rule with the same priority and match exists already.
    #[error("rule {0} already has this priority and match")]
    DuplicateRule(RuleId),
    /// A VNI does not fit in VXLAN's 24 bits.
    #[error("invalid VNI {0}: VXLAN network identifiers have 24 bits")]
    InvalidVni(u32),
    /// A VLAN id outside 1..=4094.
    #[error("invalid VLAN id {0}: must be in 1..=4094")]
    InvalidVid(u16),
    /// A VLAN TPID other than 0x8100 and 0x88a8.
    #[error("invalid VLAN TPID {0:#06x}: must be 0x8100 or 0x88a8")]
    InvalidTpid(u16),
    /// A rule with more actions than allowed.
    #[error("rule has {0} actions; at most {max} are allowed", max = super::rules::MAX_RULE_ACTIONS)]
    TooManyActions(usize),
    /// A network id already in use.
    #[error("network {0} already exists")]
    DuplicateNetwork(NetworkId),
    /// No network has this id.
    #[error("no network {0}")]
    UnknownNetwork(NetworkId),
    /// A (port, VLAN) attachment already belongs to a network.
    #[error("port {port} vlan {vlan:?} is already attached to network {network}")]
    AttachmentInUse {
        /// The port.
        port: PortId,
        /// The VLAN id, `None` for untagged.
        vlan: Option<u16>,
        /// The network that holds it.
        network: NetworkId,
    },
    /// A (tunnel port, VNI) pair already belongs to a network.
    #[error("VNI {vni} on tunnel port {port} is already used by network {network}")]
    VniInUse {
        /// The tunnel port.
        port: PortId,
        /// The VNI.
        vni: u32,
        /// The network that holds it.
        network: NetworkId,
    },
    /// A port used both as a tunnel port and as a member port.
    #[error("port {0} cannot be both a tunnel port and a member port")]
    PortRoleConflict(PortId),
    /// A multicast or broadcast MAC where a station address is required.
    #[error("MAC {0} is a group address and cannot be a station")]
    GroupMac(Mac),
    /// A remote station or flood list for a network without a VXLAN segment.
    #[error("network {0} has no VXLAN segment: it has no remote stations")]
    NotVxlan(NetworkId),
    /// A static MAC whose location is not part of its network.
    #[error("location of static MAC {mac} is not part of network {network}")]
    ForeignLocation {
        /// The MAC.
        mac: Mac,
        /// The network.
        network: NetworkId,
    },
}
