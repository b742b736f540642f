//! devlink over generic netlink (neli): the eswitch mode of a PF
//! (DEVLINK_CMD_ESWITCH_GET), with sysfs (`compat/devlink/mode`, where the driver
//! exposes it) as fallback, and the devlink handle of a PCI netdev from sysfs.
//!
//! The only generic netlink flowd speaks; rtnetlink goes through [`rtnl`].

use crate::discover::sysfs;
use neli::consts::{nl::NlmF, socket::NlFamily};
use neli::err::{RouterError, SocketError};
use neli::genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, Nlattr, NlattrBuilder};
use neli::nl::NlPayload;
use neli::router::synchronous::NlRouter;
use neli::types::{Buffer, GenlBuffer};
use neli::utils::Groups;
use std::error::Error as StdError;
use std::fmt;
use std::path::Path;

/// The eswitch mode (`switchdev` / `legacy`) of a PF: from devlink where the PF has a
/// devlink handle and the kernel answers, else from sysfs (`compat/devlink/mode`)
/// where the driver exposes it.
pub fn eswitch_mode(pf: &str) -> Option<String> {
    if let Some((bus, dev)) = pf_devlink_handle(pf) {
        match devlink_eswitch_mode(&bus, &dev) {
            Ok(mode) => return Some(mode.to_string()),
            Err(e) => tracing::debug!(
                pf, %bus, %dev, error = %e,
                "discover: no eswitch mode from devlink, trying sysfs"
            ),
        }
    }
    sysfs(pf, "compat/devlink/mode")
}

// devlink uapi (include/uapi/linux/devlink.h); these values are ABI.
/// DEVLINK_GENL_NAME.
const DEVLINK_GENL_NAME: &str = "devlink";
/// DEVLINK_GENL_VERSION.
const DEVLINK_GENL_VERSION: u8 = 1;
/// DEVLINK_CMD_ESWITCH_GET.
const DEVLINK_CMD_ESWITCH_GET: u8 = 29;
/// DEVLINK_ATTR_BUS_NAME (string).
const DEVLINK_ATTR_BUS_NAME: u16 = 1;
/// DEVLINK_ATTR_DEV_NAME (string).
const DEVLINK_ATTR_DEV_NAME: u16 = 2;
/// DEVLINK_ATTR_ESWITCH_MODE (u16, `enum devlink_eswitch_mode`).
const DEVLINK_ATTR_ESWITCH_MODE: u16 = 25;

/// A devlink message: u8 command, u16 attribute types, no user header.
type DevlinkMsg = Genlmsghdr<u8, u16>;
/// Boxed source error.
type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A devlink eswitch mode (`enum devlink_eswitch_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EswitchMode {
    /// DEVLINK_ESWITCH_MODE_LEGACY (0).
    Legacy,
    /// DEVLINK_ESWITCH_MODE_SWITCHDEV (1).
    Switchdev,
    /// A value this build does not know.
    Other(u16),
}

impl From<u16> for EswitchMode {
    fn from(v: u16) -> Self {
        match v {
            0 => EswitchMode::Legacy,
            1 => EswitchMode::Switchdev,
            n => EswitchMode::Other(n),
        }
    }
}

impl fmt::Display for EswitchMode {
    /// As devlink(8) and sysfs spell it: `legacy`, `switchdev`; `unknown(N)` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EswitchMode::Legacy => f.write_str("legacy"),
            EswitchMode::Switchdev => f.write_str("switchdev"),
            EswitchMode::Other(n) => write!(f, "unknown({n})"),
        }
    }
}

/// Why devlink gave no eswitch mode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevlinkError {
    /// The kernel has no "devlink" generic netlink family (built without devlink).
    #[error("generic netlink family \"devlink\" is absent (kernel without devlink)")]
    FamilyAbsent(#[source] BoxError),
    /// The kernel knows no devlink device by that handle (ENODEV / ENOENT).
    #[error("devlink device {bus}/{dev} not found")]
    DeviceNotFound {
        /// Bus name (`pci`).
        bus: String,
        /// Device name (`0000:03:00.0`).
        dev: String,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// Socket trouble, or another errno from the kernel (EPERM, EOPNOTSUPP, ...).
    #[error("devlink {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error (for a kernel errno, that errno).
        #[source]
        source: std::io::Error,
    },
    /// An answer that is not what the uapi says it is.
    #[error("devlink: malformed answer: {what}")]
    Malformed {
        /// What was wrong.
        what: String,
        /// The decoder's error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl DevlinkError {
    fn malformed(what: impl Into<String>) -> Self {
        DevlinkError::Malformed {
            what: what.into(),
            source: None,
        }
    }
}

/// errno of a netlink error message (the kernel sends it negated); no overflow.
fn nlmsgerr_errno(raw: libc::c_int) -> std::io::Error {
    std::io::Error::from_raw_os_error(raw.saturating_neg())
}

/// Classifies a neli router error that is neither "family absent" nor "not found".
fn router_error<T, P>(op: &'static str, e: RouterError<T, P>) -> DevlinkError
where
    T: fmt::Debug + Send + Sync + 'static,
    P: fmt::Debug + Send + Sync + 'static,
{
    match e {
        RouterError::Nlmsgerr(m) => DevlinkError::Io {
            op,
            source: nlmsgerr_errno(*m.error()),
        },
        RouterError::Io(kind) => DevlinkError::Io {
            op,
            source: std::io::Error::new(kind, e),
        },
        RouterError::Socket(SocketError::De(_))
        | RouterError::De(_)
        | RouterError::BadSeqOrPid(_)
        | RouterError::NoAck
        | RouterError::UnexpectedAck => DevlinkError::Malformed {
            what: op.to_string(),
            source: Some(Box::new(e)),
        },
        other => DevlinkError::Io {
            op,
            source: std::io::Error::other(other),
        },
    }
}

/// Resolves a generic netlink family's id; [`DevlinkError::FamilyAbsent`] when the
/// kernel does not know it.
fn resolve_family(router: &NlRouter, name: &str) -> Result<u16, DevlinkError> {
    match router.resolve_genl_family(name) {
        Ok(id) => Ok(id),
        Err(RouterError::Nlmsgerr(m)) if m.error().saturating_neg() == libc::ENOENT => Err(
            DevlinkError::FamilyAbsent(Box::new(nlmsgerr_errno(*m.error()))),
        ),
        // An answer without CTRL_ATTR_FAMILY_ID: neli's "family ... was not found".
        Err(e @ RouterError::Msg(_)) => Err(DevlinkError::FamilyAbsent(Box::new(e))),
        Err(e) => Err(router_error("family lookup", e)),
    }
}

/// The eswitch mode in a DEVLINK_CMD_ESWITCH_GET answer.
fn mode_from_reply(msg: &DevlinkMsg) -> Result<EswitchMode, DevlinkError> {
    let handle = msg.attrs().get_attr_handle();
    let attr = handle
        .get_attribute(DEVLINK_ATTR_ESWITCH_MODE)
        .ok_or_else(|| DevlinkError::malformed("no DEVLINK_ATTR_ESWITCH_MODE"))?;
    let raw: &[u8] = attr.nla_payload().as_ref();
    let bytes: [u8; 2] = raw.try_into().map_err(|_| {
        DevlinkError::malformed(format!(
            "DEVLINK_ATTR_ESWITCH_MODE of {} bytes, not 2",
            raw.len()
        ))
    })?;
    Ok(EswitchMode::from(u16::from_ne_bytes(bytes)))
}

/// A string attribute (NUL-terminated, as neli writes `&str`).
fn str_attr(t: u16, v: &str) -> Result<Nlattr<u16, Buffer>, DevlinkError> {
    let build = || -> Result<_, BoxError> {
        Ok(NlattrBuilder::default()
            .nla_type(AttrTypeBuilder::default().nla_type(t).build()?)
            .nla_payload(v)
            .build()?)
    };
    build().map_err(|e| DevlinkError::Io {
        op: "request building",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })
}

/// The eswitch mode of devlink device `bus`/`dev` (`pci`, `0000:03:00.0`), asked of
/// the kernel with DEVLINK_CMD_ESWITCH_GET on the "devlink" generic netlink family.
///
/// Needs CAP_NET_ADMIN (the kernel answers EPERM otherwise, as [`DevlinkError::Io`]).
pub fn devlink_eswitch_mode(bus: &str, dev: &str) -> Result<EswitchMode, DevlinkError> {
    let invalid = |s: &str| s.is_empty() || s.contains('\0') || s.len() > 255;
    if invalid(bus) || invalid(dev) {
        return Err(DevlinkError::Io {
            op: "request building",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid devlink handle {bus:?}/{dev:?}"),
            ),
        });
    }
    let (router, _multicast) = NlRouter::connect(NlFamily::Generic, None, Groups::empty())
        .map_err(|e| router_error("connect", e))?;
    let family = resolve_family(&router, DEVLINK_GENL_NAME)?;
    eswitch_get(&router, family, bus, dev)
}

/// Sends DEVLINK_CMD_ESWITCH_GET for `bus`/`dev` to generic netlink family `family`
/// and reads the answer.
fn eswitch_get(
    router: &NlRouter,
    family: u16,
    bus: &str,
    dev: &str,
) -> Result<EswitchMode, DevlinkError> {
    let attrs: GenlBuffer<u16, Buffer> = [
        str_attr(DEVLINK_ATTR_BUS_NAME, bus)?,
        str_attr(DEVLINK_ATTR_DEV_NAME, dev)?,
    ]
    .into_iter()
    .collect();
    let request = GenlmsghdrBuilder::default()
        .cmd(DEVLINK_CMD_ESWITCH_GET)
        .version(DEVLINK_GENL_VERSION)
        .attrs(attrs)
        .build()
        .map_err(|e| DevlinkError::Io {
            op: "request building",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
    let replies = router
        .send::<_, _, u16, DevlinkMsg>(family, NlmF::ACK, NlPayload::Payload(request))
        .map_err(|e| router_error("ESWITCH_GET send", e))?;
    let mut mode = None;
    for reply in replies {
        let msg = reply.map_err(|e| reply_error(bus, dev, e))?;
        if let (None, Some(p)) = (&mode, msg.get_payload()) {
            mode = Some(mode_from_reply(p)?);
        }
    }
    mode.ok_or_else(|| DevlinkError::malformed("ESWITCH_GET answered without a message"))
}

/// Classifies an error answer to ESWITCH_GET: ENODEV / ENOENT is "no such device".
fn reply_error(bus: &str, dev: &str, e: RouterError<u16, DevlinkMsg>) -> DevlinkError {
    match e {
        RouterError::Nlmsgerr(m)
            if matches!(m.error().saturating_neg(), libc::ENODEV | libc::ENOENT) =>
        {
            DevlinkError::DeviceNotFound {
                bus: bus.to_string(),
                dev: dev.to_string(),
                source: nlmsgerr_errno(*m.error()),
            }
        }
        e => router_error("ESWITCH_GET", e),
    }
}

/// Whether `s` is a PCI address, `DDDD:BB:DD.F` (the domain may be longer than four
/// hex digits).
fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, min: usize, max: usize| {
        (min..=max).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let mut parts = s.split(':');
    let (Some(domain), Some(bus), Some(devfn), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((slot, func)) = devfn.split_once('.') else {
        return false;
    };
    hex(domain, 4, 8)
        && hex(bus, 2, 2)
        && hex(slot, 2, 2)
        && matches!(func.as_bytes(), [b'0'..=b'7'])
}

/// The devlink handle (`("pci", "0000:03:00.0")`) of a PCI netdev, from sysfs: the
/// `/sys/class/net/<pf>/device` symlink names the PCI function, whose `subsystem` is
/// `pci`. `None` for virtual links (veth, `lo`), non-PCI devices and unknown names.
pub fn pf_devlink_handle(pf: &str) -> Option<(String, String)> {
    if pf.is_empty() || pf.contains('/') || pf == "." || pf == ".." {
        return None;
    }
    let device = Path::new("/sys/class/net").join(pf).join("device");
    let target = std::fs::read_link(&device).ok()?;
    let addr = target.file_name()?.to_str()?;
    let subsystem = std::fs::read_link(device.join("subsystem")).ok()?;
    let bus = subsystem.file_name()?.to_str()?;
    (bus == "pci" && is_pci_address(addr)).then(|| (bus.to_string(), addr.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eswitch_mode_values_and_display() {
        assert_eq!(EswitchMode::from(0), EswitchMode::Legacy);
        assert_eq!(EswitchMode::from(1), EswitchMode::Switchdev);
        assert_eq!(EswitchMode::from(7), EswitchMode::Other(7));
        assert_eq!(EswitchMode::Legacy.to_string(), "legacy");
        assert_eq!(EswitchMode::Switchdev.to_string(), "switchdev");
        assert_eq!(EswitchMode::Other(7).to_string(), "unknown(7)");
    }

    fn reply(attrs: &[(u16, &[u8])]) -> DevlinkMsg {
        let attrs: GenlBuffer<u16, Buffer> = attrs
            .iter()
            .map(|(t, v)| {
                NlattrBuilder::default()
                    .nla_type(AttrTypeBuilder::default().nla_type(*t).build().unwrap())
                    .nla_payload(*v)
                    .build()
                    .unwrap()
            })
            .collect();
        GenlmsghdrBuilder::default()
            .cmd(DEVLINK_CMD_ESWITCH_GET)
            .version(DEVLINK_GENL_VERSION)
            .attrs(attrs)
            .build()
            .unwrap()
    }

    #[test]
    fn eswitch_get_answers_are_parsed_or_rejected() {
        let bus: &[u8] = b"pci\0";
        let dev: &[u8] = b"0000:03:00.0\0";
        let ok = |mode: u16| {
            mode_from_reply(&reply(&[
                (DEVLINK_ATTR_BUS_NAME, bus),
                (DEVLINK_ATTR_DEV_NAME, dev),
                (DEVLINK_ATTR_ESWITCH_MODE, &mode.to_ne_bytes()),
                (26, &[0]), // DEVLINK_ATTR_ESWITCH_INLINE_MODE, ignored
            ]))
            .unwrap()
        };
        assert_eq!(ok(0), EswitchMode::Legacy);
        assert_eq!(ok(1), EswitchMode::Switchdev);
        assert_eq!(ok(0xbeef), EswitchMode::Other(0xbeef));
        for bad in [
            reply(&[(DEVLINK_ATTR_BUS_NAME, bus), (DEVLINK_ATTR_DEV_NAME, dev)]),
            reply(&[]),
            reply(&[(DEVLINK_ATTR_ESWITCH_MODE, &[1])]),
            reply(&[(DEVLINK_ATTR_ESWITCH_MODE, &[1, 0, 0, 0])]),
            reply(&[(DEVLINK_ATTR_ESWITCH_MODE, &[])]),
        ] {
            assert!(
                matches!(mode_from_reply(&bad), Err(DevlinkError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn no_answer_panics(attrs in proptest::collection::vec(
            (0u16..40, proptest::collection::vec(proptest::num::u8::ANY, 0..6)), 0..6)
        ) {
            let attrs: Vec<(u16, &[u8])> = attrs.iter().map(|(t, v)| (*t, v.as_slice())).collect();
            let r = mode_from_reply(&reply(&attrs));
            let first = attrs.iter().find(|(t, _)| *t == DEVLINK_ATTR_ESWITCH_MODE);
            match first {
                Some((_, v)) if v.len() == 2 => proptest::prop_assert_eq!(
                    r.unwrap(), EswitchMode::from(u16::from_ne_bytes([v[0], v[1]]))
                ),
                _ => proptest::prop_assert!(
                    matches!(r, Err(DevlinkError::Malformed { .. })),
                    "expected Malformed"
                ),
            }
        }
    }

    #[test]
    fn errno_of_nlmsgerr_never_overflows() {
        assert_eq!(
            nlmsgerr_errno(-libc::ENODEV).raw_os_error(),
            Some(libc::ENODEV)
        );
        assert_eq!(
            nlmsgerr_errno(libc::c_int::MIN).raw_os_error(),
            Some(libc::c_int::MAX)
        );
    }

    /// Real kernel: "devlink" resolves or its absence is the typed error; an unknown
    /// family is always the typed absence.
    #[test]
    fn devlink_family_resolves_or_is_typed_absent() {
        let (router, _mc) = NlRouter::connect(NlFamily::Generic, None, Groups::empty())
            .expect("generic netlink socket");
        match resolve_family(&router, DEVLINK_GENL_NAME) {
            Ok(id) => assert!(id >= 0x10, "dynamic genl id, got {id}"),
            Err(DevlinkError::FamilyAbsent(_)) => eprintln!("kernel without devlink"),
            Err(e) => panic!("devlink family lookup: {e:?}"),
        }
        // Within GENL_NAMSIZ - 1 (15) bytes: longer names are EINVAL, not ENOENT.
        let absent = resolve_family(&router, "flowd-nofam");
        assert!(
            matches!(absent, Err(DevlinkError::FamilyAbsent(_))),
            "{absent:?}"
        );
    }

    /// Real kernel: a devlink handle no device has is "not found", typed.
    #[test]
    fn unknown_devlink_device_is_not_found() {
        match devlink_eswitch_mode("pci", "0000:ff:1f.7") {
            Err(DevlinkError::DeviceNotFound { bus, dev, source }) => {
                assert_eq!((bus.as_str(), dev.as_str()), ("pci", "0000:ff:1f.7"));
                assert!(matches!(
                    source.raw_os_error(),
                    Some(libc::ENODEV | libc::ENOENT)
                ));
            }
            Err(DevlinkError::FamilyAbsent(_)) => eprintln!("kernel without devlink"),
            // Unprivileged: ESWITCH_GET is admin-only, checked before the lookup.
            Err(DevlinkError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EPERM)
                    && unsafe { libc::geteuid() } != 0 =>
            {
                eprintln!("no CAP_NET_ADMIN: {source}")
            }
            other => panic!("expected DeviceNotFound, got {other:?}"),
        }
        assert!(matches!(
            devlink_eswitch_mode("pci", ""),
            Err(DevlinkError::Io { .. })
        ));
        assert!(matches!(
            devlink_eswitch_mode("pci\0x", "0000:ff:1f.7"),
            Err(DevlinkError::Io { .. })
        ));
    }

    fn kernel_error(errno: i32) -> RouterError<u16, DevlinkMsg> {
        let echoed = neli::err::NlmsghdrErrBuilder::default()
            .nl_type(0x1234u16)
            .nl_payload(reply(&[]))
            .build()
            .unwrap();
        RouterError::Nlmsgerr(
            neli::err::NlmsgerrBuilder::default()
                .error(-errno)
                .nlmsg(echoed)
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn kernel_errors_are_classified() {
        for errno in [libc::ENODEV, libc::ENOENT] {
            match reply_error("pci", "0000:ff:1f.7", kernel_error(errno)) {
                DevlinkError::DeviceNotFound { bus, dev, source } => {
                    assert_eq!((bus.as_str(), dev.as_str()), ("pci", "0000:ff:1f.7"));
                    assert_eq!(source.raw_os_error(), Some(errno));
                }
                other => panic!("{errno}: {other:?}"),
            }
        }
        for errno in [libc::EOPNOTSUPP, libc::EPERM, libc::EINVAL] {
            match reply_error("pci", "x", kernel_error(errno)) {
                DevlinkError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(errno)),
                other => panic!("{errno}: {other:?}"),
            }
        }
        // A positive or extreme "errno" from a broken peer: classified, no overflow.
        assert!(matches!(
            reply_error("pci", "x", kernel_error(-5)),
            DevlinkError::Io { .. }
        ));
        assert!(matches!(
            reply_error("pci", "x", kernel_error(i32::MIN + 1)),
            DevlinkError::Io { .. }
        ));
        let malformed = reply_error("pci", "x", RouterError::UnexpectedAck);
        assert!(matches!(
            malformed,
            DevlinkError::Malformed {
                source: Some(_),
                ..
            }
        ));
        let e = reply_error("pci", "0000:ff:1f.7", kernel_error(libc::ENODEV));
        assert_eq!(e.to_string(), "devlink device pci/0000:ff:1f.7 not found");
        assert!(StdError::source(&e).is_some());
    }

    /// Real kernel, real request path: ESWITCH_GET sent to nlctrl (which has no
    /// command 29) comes back as a typed kernel errno, not a panic nor a mode.
    #[test]
    fn eswitch_get_round_trip_against_nlctrl() {
        let (router, _mc) = NlRouter::connect(NlFamily::Generic, None, Groups::empty())
            .expect("generic netlink socket");
        const GENL_ID_CTRL: u16 = 0x10;
        match eswitch_get(&router, GENL_ID_CTRL, "pci", "0000:ff:1f.7") {
            Err(DevlinkError::Io { source, .. }) => assert!(
                matches!(source.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EPERM)),
                "{source:?}"
            ),
            other => panic!("expected a kernel errno, got {other:?}"),
        }
    }

    #[test]
    fn pci_addresses() {
        for ok in ["0000:03:00.0", "0000:ff:1f.7", "10000:e0:00.1"] {
            assert!(is_pci_address(ok), "{ok}");
        }
        for bad in [
            "",
            "virtio0",
            "netdevsim0",
            "0000:03:00",
            "0000:03:00.8",
            "000:03:00.0",
            "0000:3:00.0",
            "0000:03:0g.0",
            "0000:03:00.0:1",
            "0000:03:00.01",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }

    #[test]
    fn virtual_links_have_no_devlink_handle() {
        for name in ["lo", "", ".", "..", "../lo", "flowd-no-such-link"] {
            assert_eq!(pf_devlink_handle(name), None, "{name:?}");
        }
        assert_eq!(eswitch_mode("lo"), None);
        let Ok(links) = crate::discover::links() else {
            return;
        };
        for l in &links {
            let handle = pf_devlink_handle(&l.name);
            if l.kind.as_deref() == Some("veth") {
                assert_eq!(handle, None, "veth {}", l.name);
            }
            if let Some((bus, dev)) = handle {
                assert_eq!(bus, "pci");
                assert!(is_pci_address(&dev), "{}: {dev}", l.name);
            }
        }
    }
}
