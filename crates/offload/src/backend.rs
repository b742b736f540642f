//! The backend trait: where rules go (Linux tc, a simulated eswitch).

use crate::ports::PortInfo;
use crate::rule::{FlowerRule, TcPolicy};
use datapath::{FlowId, IfIndex};
use std::fmt;

/// Identifies an installed rule in its backend: the tc filter's device, priority,
/// protocol and handle (the simulated eswitch uses the same shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleHandle {
    /// The ingress device.
    pub device: IfIndex,
    /// The tc priority.
    pub prio: u16,
    /// The filter protocol (ethertype, host order).
    pub protocol: u16,
    /// The filter handle.
    pub handle: u32,
}

/// What the kernel says about a filter's hardware state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HwState {
    /// `in_hw` (with `in_hw_count`).
    InHw {
        /// How many devices hold it.
        count: u32,
    },
    /// `not_in_hw`: tc's software path only.
    NotInHw,
    /// No flag reported.
    Unknown,
}

impl HwState {
    /// Whether the kernel reported the filter in hardware.
    pub fn in_hw(&self) -> bool {
        matches!(self, HwState::InHw { .. })
    }
}

impl fmt::Display for HwState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HwState::InHw { .. } => f.write_str("in_hw"),
            HwState::NotInHw => f.write_str("not_in_hw"),
            HwState::Unknown => f.write_str("hw:unknown"),
        }
    }
}

/// A successful install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Where the rule is.
    pub handle: RuleHandle,
    /// Hardware state as echoed back.
    pub hw: HwState,
}

/// Counters of an installed rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleStats {
    /// Packets (software + hardware).
    pub packets: u64,
    /// Bytes (software + hardware).
    pub bytes: u64,
    /// Of which counted by hardware.
    pub hw_packets: u64,
    /// Of which counted by hardware.
    pub hw_bytes: u64,
    /// Milliseconds since the rule last matched a packet (`None`: never / unknown).
    pub last_used_ms_ago: Option<u64>,
}

/// A rule found in the backend by a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRule {
    /// Where it is.
    pub handle: RuleHandle,
    /// The flow that installed it (from flowd's action cookie; after a restart, a flow of
    /// the previous run); `None`: not flowd's.
    pub owner: Option<FlowId>,
    /// The rule as decoded (None if flowd cannot decode it).
    pub rule: Option<FlowerRule>,
    /// Hardware state.
    pub hw: HwState,
    /// The policy flags it carries (`None` when flowd cannot decode it).
    pub policy: Option<TcPolicy>,
    /// Counters.
    pub stats: RuleStats,
}

/// A kernel (or simulated) errno, named for the cases offload handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KernelErrno {
    /// EEXIST.
    Exists,
    /// ENOENT.
    NotFound,
    /// EOPNOTSUPP.
    NotSupported,
    /// ENOSPC.
    NoSpace,
    /// E2BIG.
    TooBig,
    /// EINVAL.
    Invalid,
    /// Any other errno.
    Other(i32),
}

impl KernelErrno {
    /// A failure that may pass if tried again later (the kernel was busy or short of
    /// memory), as opposed to a refusal of the filter itself.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Other(
                libc::EBUSY
                    | libc::EAGAIN
                    | libc::ENOMEM
                    | libc::ENOBUFS
                    | libc::EINTR
                    | libc::ETIMEDOUT
            )
        )
    }

    /// From a positive errno value.
    pub fn from_errno(e: i32) -> Self {
        match e {
            libc::EEXIST => Self::Exists,
            libc::ENOENT => Self::NotFound,
            libc::EOPNOTSUPP => Self::NotSupported,
            libc::ENOSPC => Self::NoSpace,
            libc::E2BIG => Self::TooBig,
            libc::EINVAL => Self::Invalid,
            e => Self::Other(e),
        }
    }

    /// The positive errno value.
    pub fn errno(&self) -> i32 {
        match self {
            Self::Exists => libc::EEXIST,
            Self::NotFound => libc::ENOENT,
            Self::NotSupported => libc::EOPNOTSUPP,
            Self::NoSpace => libc::ENOSPC,
            Self::TooBig => libc::E2BIG,
            Self::Invalid => libc::EINVAL,
            Self::Other(e) => *e,
        }
    }
}

impl fmt::Display for KernelErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Exists => "EEXIST",
            Self::NotFound => "ENOENT",
            Self::NotSupported => "EOPNOTSUPP",
            Self::NoSpace => "ENOSPC",
            Self::TooBig => "E2BIG",
            Self::Invalid => "EINVAL",
            Self::Other(e) => return write!(f, "errno {e}"),
        };
        f.write_str(name)
    }
}

/// Errors of a backend operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The kernel (or the simulated eswitch) refused, with its extack message.
    #[error("{errno}{}", extack.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kernel {
        /// The error.
        errno: KernelErrno,
        /// The kernel's extended ACK message.
        extack: Option<String>,
    },
    /// The kernel accepted the filter but echoed back something else.
    #[error("echo mismatch: {0}")]
    EchoMismatch(String),
    /// The kernel accepted `tunnel_key nofrag` and ignored it (a kernel without it, 6.1 for one): the
    /// filter was taken out; the backend no longer asks for DF and tries again.
    #[error("the kernel ignores tunnel_key nofrag")]
    NoFragIgnored,
    /// The kernel's answer could not be decoded.
    #[error("undecodable netlink answer")]
    Decode(#[source] netlink_packet_core::DecodeError),
    /// Socket I/O failed.
    #[error("netlink socket")]
    Io(#[from] std::io::Error),
    /// No answer came for a request.
    #[error("no answer for request")]
    NoAnswer,
    /// Another failure of the netlink layer (a dump the kernel kept interrupting).
    #[error(transparent)]
    Netlink(rtnl::Error),
    /// The rule's device is not managed by this backend.
    #[error("device if{0} not managed")]
    UnknownDevice(IfIndex),
}

impl From<rtnl::Error> for BackendError {
    /// In the backend's terms: a socket timeout is no answer, a refusal its errno.
    fn from(e: rtnl::Error) -> Self {
        match e {
            rtnl::Error::Socket { source, .. }
                if source.kind() == std::io::ErrorKind::WouldBlock =>
            {
                Self::NoAnswer
            }
            rtnl::Error::Socket { source, .. } => Self::Io(source),
            rtnl::Error::Kernel { source, .. } => Self::errno(KernelErrno::from_errno(
                source.raw_os_error().unwrap_or(libc::EIO),
            )),
            rtnl::Error::Decode(e) => Self::Decode(e),
            other => Self::Netlink(other),
        }
    }
}

impl BackendError {
    /// A kernel error without extack.
    pub fn errno(errno: KernelErrno) -> Self {
        Self::Kernel {
            errno,
            extack: None,
        }
    }

    /// The errno, for kernel errors.
    pub fn kernel_errno(&self) -> Option<KernelErrno> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A place rules can be installed. Operations take batches: a backend may send a whole
/// batch at once (tc: several requests per sendmsg) and answers each item.
pub trait OffloadBackend: Send {
    /// Short name shown in placements (`tc`, `sim`).
    fn name(&self) -> &'static str;

    /// Installs rules, each owned by a flow.
    fn install(&mut self, rules: &[(FlowId, &FlowerRule)]) -> Vec<Result<Installed, BackendError>>;

    /// Replaces installed rules (make-before-break where the handle must change).
    fn replace(
        &mut self,
        rules: &[(FlowId, RuleHandle, &FlowerRule)],
    ) -> Vec<Result<Installed, BackendError>>;

    /// Removes rules.
    fn remove(&mut self, handles: &[RuleHandle]) -> Vec<Result<(), BackendError>>;

    /// Counters of installed rules.
    fn stats(&mut self, handles: &[RuleHandle]) -> Vec<Result<RuleStats, BackendError>>;

    /// Every rule on the managed devices, flowd's or not.
    fn dump(&mut self) -> Result<Vec<DumpedRule>, BackendError>;

    /// Asked, before anything is installed, about a rule of flowd's a previous run
    /// left: whether a flow may take it over as it is (tc: it was created under the
    /// policy in force). If so the backend keeps its slot (tc: the priority of its mask
    /// shape, and no new handle collides with it).
    fn adoptable(&mut self, _rule: &DumpedRule) -> bool {
        true
    }

    /// A port plugged while running (a new VF's representor): the backend prepares to
    /// hold its rules (tc: the device's ingress qdisc; sim: the port joins the eswitch
    /// of its switch id).
    fn add_port(&mut self, _port: &PortInfo) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether rules installed here may run in hardware (tc: unless the policy is
    /// `skip_hw`; the simulated eswitch stands for hardware). The judge keeps flows on
    /// IPsec-protected paths out of hardware unless the SA is offloaded with them.
    fn hardware(&self) -> bool {
        true
    }

    /// A device that went away (a port unplugged, or a netdev deleted and re-created
    /// under a new index): the backend forgets it (its filters went with it).
    fn remove_port(&mut self, _ifindex: IfIndex) {}
}
