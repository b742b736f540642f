//! The datapath flow syntax, as `ovs-appctl dpctl/dump-flows` prints it.
//!
//! A megaflow prints only the fields its mask consults, each as `value` when matched
//! exactly or `value/mask` when partly:
//!
//! ```text
//! in_port(3),eth(src=e4:11:11:11:11:10,dst=82:8a:29:ad:4e:ef),eth_type(0x0800),
//! ipv4(src=1.1.1.2,dst=1.1.0.0/16,proto=17,frag=no),udp(dst=4789)
//! ```
//!
//! IP masks that are a prefix print as `/len`; other masks print in full. Decapsulated
//! flows start with `tunnel(tun_id=0x10,src=..,dst=..,tp_dst=4789,flags(key))`.
//! [`Megaflow`]'s `FromStr` parses every form `Display` prints, so the two round-trip.
//!
//! Actions print as a comma-separated list: `3` (output), `push_vlan(vid=10,pcp=0)`,
//! `pop_vlan`, `set(tunnel(tun_id=0x10,dst=192.0.2.1,ttl=64,tp_dst=4789))`, `userspace`,
//! or `drop` for the empty list.

mod parse;
mod print;
#[cfg(test)]
mod tests;

use std::fmt::{self, Display, Formatter};

/// Why a flow or action string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A field group or action this syntax does not know.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// A value that does not parse for its field.
    #[error("bad value for `{field}`: `{value}`")]
    BadValue {
        /// The field.
        field: String,
        /// The text that failed.
        value: String,
    },
    /// Unbalanced parentheses or a missing `(`.
    #[error("syntax error near `{0}`")]
    Syntax(String),
    /// A field group whose protocol the match does not fix: `tcp(..)` without the IP
    /// version, `ipv4(..)` beside another `eth_type`. The message names what to add.
    #[error("`{group}(..)` needs {needs}")]
    Prerequisite {
        /// The group.
        group: String,
        /// What it needs, as the syntax spells it.
        needs: String,
    },
}

fn bad(field: &str, value: &str) -> ParseError {
    ParseError::BadValue {
        field: field.to_string(),
        value: value.to_string(),
    }
}

/// A MAC address in the usual colon form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Display for Mac {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(|| bad("mac", s))?;
            if p.is_empty() || p.len() > 2 {
                return Err(bad("mac", s));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad("mac", s))?;
        }
        if parts.next().is_some() {
            return Err(bad("mac", s));
        }
        Ok(Mac(out))
    }
}
