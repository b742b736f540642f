//! [`LivePorts`]: every configured port with its netdev's facts as the kernel reports
//! them now: interface index, MTU, link state and switch id.
//!
//! At start the facts come from fibwatch's first dump; afterwards from its link events:
//! an `ip link set DEV mtu N`, a link going down or up, a switch id appearing, or a
//! netdev deleted and re-created under the same name (a new index) each produce a
//! [`PortUpdate`], which the daemon applies everywhere it matters (the judge re-decides
//! the port's flows, the datapath reopens the port's socket, the route table follows a
//! re-created uplink). This table is what `flowctl show` prints and what the offload
//! layer's port table is built from.

use super::lock;
use crate::config::{PortConfig, PortRole as CfgRole};
use crate::control::proto::PortRow;
use arc_swap::ArcSwap;
use datapath::{IfIndex, PortId};
use fibwatch::Link;
use offload::{PortInfo, PortKind, PortTable};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use vocab::SwitchId;

/// What changed about one configured port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortUpdate {
    /// The port as it is now (`up: false` while its netdev is gone).
    pub now: PortInfo,
    /// The port as it was.
    pub before: PortInfo,
    /// What the port is.
    pub role: CfgRole,
}

impl PortUpdate {
    /// The netdev was re-created: a new interface index.
    pub fn recreated(&self) -> bool {
        self.now.ifindex != self.before.ifindex
    }
}

/// The offload layer's kind of a configured port.
pub fn kind(p: &PortConfig) -> PortKind {
    match p.role {
        CfgRole::Representor => PortKind::Representor {
            vf: p.vf.unwrap_or(0) as u16,
        },
        CfgRole::Uplink => PortKind::Uplink,
        CfgRole::Tunnel => PortKind::Tunnel,
    }
}

/// A configured port over its netdev's facts: the kernel's switch id, or the one the
/// configuration declares (lab veths have none).
pub fn info(p: &PortConfig, link: &Link) -> PortInfo {
    PortInfo {
        id: p.id,
        name: p.name.clone(),
        ifindex: link.index,
        kind: kind(p),
        mtu: link.mtu,
        up: link.is_up(),
        switch_id: link
            .switch_id
            .clone()
            .or_else(|| p.switch_id_bytes().map(SwitchId)),
    }
}

/// The configured ports and their live facts.
#[derive(Debug)]
pub struct LivePorts {
    table: ArcSwap<PortTable>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    configured: Vec<PortConfig>,
    /// The last facts seen per port (kept while its netdev is gone).
    by_id: HashMap<PortId, PortInfo>,
    /// The netdev and MTU each datapath port's socket was opened on (the MTU sized its
    /// receive ring); the tunnel port has none.
    sockets: HashMap<PortId, (IfIndex, u32)>,
}

impl LivePorts {
    /// The configured ports over the links as dumped; `Err` names the first configured
    /// port without a netdev.
    pub fn new(ports: &[PortConfig], links: &[Link]) -> Result<Self, super::build::BuildError> {
        let by_name: HashMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut by_id = HashMap::new();
        for p in ports {
            let link = by_name
                .get(p.name.as_str())
                .ok_or_else(|| super::build::BuildError::NoSuchInterface(p.name.clone()))?;
            by_id.insert(p.id, info(p, link));
        }
        let sockets = by_id
            .values()
            .filter(|p: &&PortInfo| p.kind != PortKind::Tunnel)
            .map(|p| (p.id, (p.ifindex, p.mtu)))
            .collect();
        let me = Self {
            table: ArcSwap::from_pointee(PortTable::new()),
            inner: Mutex::new(Inner {
                configured: ports.to_vec(),
                by_id,
                sockets,
            }),
        };
        me.publish(&lock(&me.inner));
        Ok(me)
    }

    fn publish(&self, inner: &Inner) {
        let t: PortTable = inner.by_id.values().cloned().collect();
        self.table.store(Arc::new(t));
    }

    /// The ports as the offload layer sees them.
    pub fn table(&self) -> Arc<PortTable> {
        self.table.load_full()
    }

    /// Which datapath port each uplink's interface index is.
    pub fn uplinks(&self) -> HashMap<IfIndex, PortId> {
        self.table()
            .iter()
            .filter(|p| p.kind == PortKind::Uplink)
            .map(|p| (p.ifindex, p.id))
            .collect()
    }

    /// A link appeared or changed: the update of the configured port of that name, if
    /// its facts changed.
    pub fn link_changed(&self, link: &Link) -> Option<PortUpdate> {
        let mut inner = lock(&self.inner);
        let p = inner
            .configured
            .iter()
            .find(|p| p.name == link.name)?
            .clone();
        let now = info(&p, link);
        self.replace(&mut inner, &p, now)
    }

    /// A link went away: the configured port that was on it is down (its facts kept).
    pub fn link_gone(&self, ifindex: IfIndex) -> Option<PortUpdate> {
        let mut inner = lock(&self.inner);
        let before = inner.by_id.values().find(|i| i.ifindex == ifindex)?.clone();
        let p = inner.configured.iter().find(|p| p.id == before.id)?.clone();
        let now = PortInfo {
            up: false,
            ..before.clone()
        };
        self.replace(&mut inner, &p, now)
    }

    fn replace(&self, inner: &mut Inner, p: &PortConfig, now: PortInfo) -> Option<PortUpdate> {
        let before = inner.by_id.get(&p.id)?.clone();
        if before == now {
            return None;
        }
        inner.by_id.insert(p.id, now.clone());
        self.publish(inner);
        Some(PortUpdate {
            now,
            before,
            role: p.role,
        })
    }

    /// Whether a port's socket must be opened again for its facts `now`: its netdev is
    /// new, or its MTU outgrew the receive ring.
    pub fn needs_reopen(&self, now: &PortInfo) -> bool {
        lock(&self.inner)
            .sockets
            .get(&now.id)
            .is_none_or(|&(ifindex, mtu)| ifindex != now.ifindex || mtu < now.mtu)
    }

    /// A port's socket was opened on these facts.
    pub fn opened(&self, on: &PortInfo) {
        lock(&self.inner)
            .sockets
            .insert(on.id, (on.ifindex, on.mtu));
    }

    /// A reload's port set: ports removed, and ports added or changed with their facts
    /// (their sockets opened on them).
    pub fn reconfigure(&self, ports: Vec<PortConfig>, added: Vec<PortInfo>) {
        let mut inner = lock(&self.inner);
        let kept = |id: &PortId| ports.iter().any(|p| p.id == *id);
        inner.by_id.retain(|id, _| kept(id));
        inner.sockets.retain(|id, _| kept(id));
        for a in added {
            inner.sockets.insert(a.id, (a.ifindex, a.mtu));
            inner.by_id.insert(a.id, a);
        }
        inner.configured = ports;
        self.publish(&inner);
    }

    /// The ports as `flowctl show` prints them, in configuration order.
    pub fn rows(&self) -> Vec<PortRow> {
        let inner = lock(&self.inner);
        inner
            .configured
            .iter()
            .map(|p| {
                let info = inner.by_id.get(&p.id);
                PortRow {
                    name: p.name.clone(),
                    ifindex: info.map(|i| i.ifindex.0),
                    id: p.id.0,
                    role: p.role.to_string(),
                    mtu: info.map(|i| i.mtu),
                    up: info.map(|i| i.up),
                    switch_id: info
                        .and_then(|i| i.switch_id.as_ref())
                        .map(|s| s.to_string()),
                    vf: p.vf,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, index: u32, mtu: u32, up: bool) -> Link {
        Link {
            index: IfIndex(index),
            name: name.into(),
            mtu,
            admin_up: true,
            oper_up: up,
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            switch_id: None,
        }
    }

    fn cfg() -> Vec<PortConfig> {
        let text = "[[port]]\nname = \"rep0\"\nrole = \"representor\"\nswitch_id = \"0xaa\"\n\
                    [[port]]\nname = \"up1\"\nrole = \"uplink\"\nid = 11\n";
        let c: crate::config::Config = text.parse().expect("config");
        c.ports
    }

    #[test]
    fn link_events_become_port_updates() {
        let ports = LivePorts::new(
            &cfg(),
            &[link("rep0", 5, 1450, true), link("up1", 6, 1500, true)],
        )
        .expect("ports");
        assert_eq!(ports.table().get(PortId(1)).map(|p| p.mtu), Some(1450));
        assert_eq!(
            ports
                .table()
                .get(PortId(1))
                .and_then(|p| p.switch_id.clone()),
            Some(SwitchId(vec![0xaa])),
            "the declared switch id"
        );
        // Unrelated links and unchanged facts: nothing.
        assert_eq!(ports.link_changed(&link("eth9", 9, 1500, true)), None);
        assert_eq!(ports.link_changed(&link("rep0", 5, 1450, true)), None);
        // A raised MTU.
        let u = ports
            .link_changed(&link("rep0", 5, 9000, true))
            .expect("update");
        assert_eq!(
            (u.before.mtu, u.now.mtu, u.recreated()),
            (1450, 9000, false)
        );
        assert_eq!(ports.table().get(PortId(1)).map(|p| p.mtu), Some(9000));
        // Deleted: down, facts kept; re-created: a new index.
        let u = ports.link_gone(IfIndex(5)).expect("gone");
        assert!(!u.now.up);
        assert_eq!(ports.rows()[0].up, Some(false));
        let u = ports
            .link_changed(&link("rep0", 12, 9000, true))
            .expect("back");
        assert!(u.recreated() && u.now.up);
        assert_eq!(ports.rows()[0].ifindex, Some(12));
        assert_eq!(ports.uplinks(), HashMap::from([(IfIndex(6), PortId(11))]));
        assert!(LivePorts::new(&cfg(), &[link("rep0", 5, 1450, true)]).is_err());
    }
}
