//! The kernel's answers to requests: acknowledgements (`NLMSG_ERROR`, errno 0 or not,
//! with the extended-ACK message when the socket asked for one), echoes and dump
//! entries (`NLM_F_ECHO`, `NLM_F_DUMP`), and the end of a dump (`NLMSG_DONE`).
//!
//! netlink-packet-core decodes the errno of an `NLMSG_ERROR` but not its extack TLVs;
//! [`nack`] reads both. Malformed input is a [`DecodeError`], never a panic.

use crate::frame::{HEADER_LEN, RawMessage, raw_messages};
use netlink_packet_core::{
    DecodeError, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLMSG_DONE, NLMSG_ERROR, NetlinkMessage,
    NetlinkPayload, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;

/// `NLMSGERR_ATTR_MSG`: the extended-ACK attribute carrying the message.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// The kernel's refusal of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The errno, positive.
    pub errno: i32,
    /// The extended-ACK message (`NLMSGERR_ATTR_MSG`), when the kernel gave one.
    pub extack: Option<String>,
}

impl Nack {
    /// The errno as an I/O error.
    pub fn to_io(&self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.errno)
    }
}

/// Decodes an `NLMSG_ERROR` message (header included): `None` for an acknowledgement
/// (errno 0), else the errno and the extack message.
pub fn nack(msg: &RawMessage<'_>) -> Result<Option<Nack>, DecodeError> {
    let payload = msg.bytes.get(HEADER_LEN..).unwrap_or(&[]);
    let code = payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| DecodeError::from("short NLMSG_ERROR"))?;
    Ok((code != 0).then(|| Nack {
        errno: code.saturating_neg(),
        extack: extack(payload, msg.flags),
    }))
}

/// The extack message of an `NLMSG_ERROR` payload (code, the request's header [and
/// the request, unless capped], then TLVs).
fn extack(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let inner = payload.get(4..4 + HEADER_LEN)?;
    let inner_len = u32::from_ne_bytes(inner[..4].try_into().ok()?) as usize;
    let skip = if flags & NLM_F_CAPPED != 0 {
        HEADER_LEN
    } else {
        inner_len.next_multiple_of(4)
    };
    let tlvs = payload.get(4 + skip..)?;
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let s = nla.value();
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
    }
    None
}

/// One message of an answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer {
    /// An acknowledgement (`error: None`) or a refusal.
    Ack {
        /// The request's sequence number.
        seq: u32,
        /// `None` for success.
        error: Option<Nack>,
    },
    /// A route-family message: an echo or a dump entry.
    Message {
        /// The sequence number.
        seq: u32,
        /// The message.
        msg: Box<RouteNetlinkMessage>,
    },
    /// The end of a dump.
    Done {
        /// The sequence number.
        seq: u32,
    },
    /// Anything else (noop, overrun).
    Other {
        /// The sequence number.
        seq: u32,
    },
}

/// Splits a received datagram into answers. A message whose length does not fit
/// yields an error for itself and ends the walk (its length cannot be trusted); a
/// message that does not decode yields an error and the walk goes on.
pub fn answers(buf: &[u8]) -> Vec<Result<Answer, DecodeError>> {
    let mut walk = raw_messages(buf);
    let mut out: Vec<_> = walk.by_ref().map(|m| answer(&m)).collect();
    if walk.truncated() {
        out.push(Err(DecodeError::from("netlink length out of range")));
    }
    out
}

/// Decodes one message of an answer.
pub fn answer(m: &RawMessage<'_>) -> Result<Answer, DecodeError> {
    let seq = m.seq;
    match m.ty {
        NLMSG_ERROR => Ok(Answer::Ack {
            seq,
            error: nack(m)?,
        }),
        NLMSG_DONE => Ok(Answer::Done { seq }),
        _ => Ok(
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(m.bytes)?.payload {
                NetlinkPayload::InnerMessage(msg) => Answer::Message {
                    seq,
                    msg: Box::new(msg),
                },
                _ => Answer::Other { seq },
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::request_bytes;
    use netlink_packet_core::NLM_F_REQUEST;
    use netlink_packet_route::link::LinkMessage;

    /// An `NLMSG_ERROR` as the kernel sends it to a socket with `NETLINK_EXT_ACK` and
    /// `NETLINK_CAP_ACK`: errno, the request's header only, then `NLMSGERR_ATTR_MSG`.
    fn capped_nack(seq: u32, errno: i32, msg: &[u8]) -> Vec<u8> {
        let tlv_len = 4 + msg.len();
        let total = 16 + 4 + 16 + tlv_len.next_multiple_of(4);
        let mut b = Vec::new();
        b.extend((total as u32).to_ne_bytes());
        b.extend(NLMSG_ERROR.to_ne_bytes());
        b.extend((NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        b.extend(seq.to_ne_bytes());
        b.extend(0u32.to_ne_bytes());
        b.extend((-errno).to_ne_bytes());
        b.extend([0u8; 16]);
        b.extend((tlv_len as u16).to_ne_bytes());
        b.extend(NLMSGERR_ATTR_MSG.to_ne_bytes());
        b.extend(msg);
        b.resize(total, 0);
        b
    }

    #[test]
    fn a_refusal_carries_its_errno_and_extack() {
        let b = capped_nack(5, libc_enoent(), b"TC classifier not found\0");
        let a = answers(&b);
        let [
            Ok(Answer::Ack {
                seq: 5,
                error: Some(n),
            }),
        ] = &a[..]
        else {
            panic!("{a:?}")
        };
        assert_eq!(n.errno, libc_enoent());
        assert_eq!(n.extack.as_deref(), Some("TC classifier not found"));
        assert_eq!(n.to_io().raw_os_error(), Some(libc_enoent()));
    }

    fn libc_enoent() -> i32 {
        2
    }

    #[test]
    fn an_uncapped_refusal_skips_the_copied_request() {
        // Without NLM_F_CAPPED the request follows the errno in full.
        let req = request_bytes(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_REQUEST,
            9,
        );
        let tlv = b"\x0c\x00\x01\x00bad!\0\0\0\0";
        let total = 16 + 4 + req.len() + tlv.len();
        let mut b = Vec::new();
        b.extend((total as u32).to_ne_bytes());
        b.extend(NLMSG_ERROR.to_ne_bytes());
        b.extend(NLM_F_ACK_TLVS.to_ne_bytes());
        b.extend(9u32.to_ne_bytes());
        b.extend(0u32.to_ne_bytes());
        b.extend((-22i32).to_ne_bytes());
        b.extend(&req);
        b.extend(tlv);
        let [Ok(Answer::Ack { error: Some(n), .. })] = &answers(&b)[..] else {
            panic!()
        };
        assert_eq!((n.errno, n.extack.as_deref()), (22, Some("bad!")));
    }

    #[test]
    fn acks_messages_and_done_are_told_apart() {
        let mut b = capped_nack(1, 0, b"");
        b[6..8].copy_from_slice(&0u16.to_ne_bytes());
        b.extend(request_bytes(
            RouteNetlinkMessage::NewLink(LinkMessage::default()),
            0,
            2,
        ));
        let mut done = vec![0u8; 20];
        done[..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        done[8..12].copy_from_slice(&3u32.to_ne_bytes());
        b.extend(done);
        let a = answers(&b);
        assert!(
            matches!(
                a[0],
                Ok(Answer::Ack {
                    seq: 1,
                    error: None
                })
            ),
            "{a:?}"
        );
        assert!(
            matches!(&a[1], Ok(Answer::Message { seq: 2, msg }) if matches!(**msg, RouteNetlinkMessage::NewLink(_))),
            "{a:?}"
        );
        assert!(matches!(a[2], Ok(Answer::Done { seq: 3 })), "{a:?}");
    }

    #[test]
    fn hostile_answers_are_errors_never_a_panic() {
        let b = capped_nack(7, 95, b"flower: unsupported key\0");
        for cut in 0..b.len() {
            let _ = answers(&b[..cut]);
        }
        let mut x: u32 = 99;
        for _ in 0..3000 {
            let mut c = b.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = (x as usize) % c.len();
                c[i] = (x >> 8) as u8;
            }
            let _ = answers(&c);
        }
        let a = answers(&b[..b.len() - 1]);
        assert!(matches!(a[..], [Err(_)]), "{a:?}");
    }
}
