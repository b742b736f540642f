//! Helpers for integration tests that build network namespaces: the library's own
//! [`flowd::netns`], plus what only tests need.
#![allow(dead_code, unused_imports)]

pub use flowd::netns::{Netns, can_netns, sh};

/// Enters `ns` from the calling thread (tests: panics on failure).
pub fn enter(ns: &Netns) {
    ns.enter().unwrap_or_else(|e| panic!("{e}"));
}

/// The seed lab's underlay: the hypervisor's uplink `up0` (192.168.203.51) toward the
/// remote's `eth0` (192.168.203.56), a kernel vxlan device on the remote (VNI 16,
/// 1.1.1.3, MAC 82:8a:29:ad:4e:ef) and, on the hypervisor, an external-mode `vxlan_sys`
/// that owns UDP 4789 (as with OVS or tc) so that the kernel does not answer flowd's
/// VXLAN with port-unreachable; flowd reads the uplink with AF_PACKET.
pub fn seed_underlay(hv: &Netns, remote: &Netns) {
    hv.ip(&format!(
        "link add up0 type veth peer name eth0 netns {}",
        remote.name
    ));
    hv.ip("addr add 192.168.203.51/24 dev up0");
    hv.ip("link set up0 up");
    remote.ip("addr add 192.168.203.56/24 dev eth0");
    remote.ip("link set eth0 up");
    remote.ip("link add vxlan16 type vxlan id 16 dev eth0 remote 192.168.203.51 dstport 4789");
    remote.ip("addr add 1.1.1.3/24 dev vxlan16");
    remote.ip("link set vxlan16 address 82:8a:29:ad:4e:ef up");
    hv.ip("link add vxlan_sys type vxlan dstport 4789 external");
    hv.ip("link set vxlan_sys up");
}
