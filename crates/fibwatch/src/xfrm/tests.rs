//! The XFRM decoders against messages built by hand, and the path facts they give.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn put_addr(b: &mut [u8], off: usize, a: IpAddr) {
    match a {
        IpAddr::V4(v) => b[off..off + 4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => b[off..off + 16].copy_from_slice(&v.octets()),
    }
}

fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
    let len = 4 + v.len();
    let mut out = Vec::new();
    out.extend((len as u16).to_ne_bytes());
    out.extend(ty.to_ne_bytes());
    out.extend(v);
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// `ip xfrm policy add src S/32 dst D/32 proto udp dir out priority P tmpl src S dst
/// D proto esp reqid 3 mode transport`, as the kernel dumps it.
fn policy_bytes(s: &str, d: &str, proto: u8, prio: u32, action: u8) -> Vec<u8> {
    let mut b = vec![0u8; POLICY_LEN];
    put_addr(&mut b, 0, ip(d));
    put_addr(&mut b, 16, ip(s));
    b[40..42].copy_from_slice(&AF_INET.to_ne_bytes());
    b[42] = 32;
    b[43] = 32;
    b[44] = proto;
    b[152..156].copy_from_slice(&prio.to_ne_bytes());
    b[156..160].copy_from_slice(&0x1234u32.to_ne_bytes());
    b[160] = XFRM_POLICY_OUT;
    b[161] = action;
    let mut t = vec![0u8; TMPL_LEN];
    put_addr(&mut t, 0, ip(d));
    t[20] = IPPROTO_ESP;
    t[24..26].copy_from_slice(&AF_INET.to_ne_bytes());
    put_addr(&mut t, 28, ip(s));
    t[44..48].copy_from_slice(&3u32.to_ne_bytes());
    t[48] = XFRM_MODE_TRANSPORT;
    b.extend(attr(XFRMA_TMPL, &t));
    b
}

/// `ip xfrm state add src S dst D proto esp spi 3 reqid 3 mode transport aead
/// 'rfc4106(gcm(aes))' KEY 128 [offload packet dev IFX dir out]`, as dumped.
fn state_bytes(s: &str, d: &str, offload: Option<u32>) -> Vec<u8> {
    let mut b = vec![0u8; SA_LEN];
    put_addr(&mut b, 56, ip(d));
    b[72..76].copy_from_slice(&3u32.to_be_bytes());
    b[76] = IPPROTO_ESP;
    put_addr(&mut b, 80, ip(s));
    b[208..212].copy_from_slice(&3u32.to_ne_bytes());
    b[212..214].copy_from_slice(&AF_INET.to_ne_bytes());
    b[214] = XFRM_MODE_TRANSPORT;
    let mut aead = vec![0u8; 72 + 20];
    aead[..17].copy_from_slice(b"rfc4106(gcm(aes))");
    aead[64..68].copy_from_slice(&160u32.to_ne_bytes());
    aead[68..72].copy_from_slice(&128u32.to_ne_bytes());
    b.extend(attr(XFRMA_ALG_AEAD, &aead));
    if let Some(ifx) = offload {
        let mut o = vec![0u8; 8];
        o[..4].copy_from_slice(&ifx.to_ne_bytes());
        o[4] = XFRM_OFFLOAD_PACKET;
        b.extend(attr(XFRMA_OFFLOAD_DEV, &o));
    }
    b
}

fn path(src: &str, uplink: u32) -> Path {
    Path {
        uplink: IfIndex(uplink),
        src: Some(ip(src)),
        gateway: None,
        neighbour: ip("192.168.80.3"),
        next_hop_mac: Some([2; 6]),
        uplink_mac: Some([4; 6]),
        mtu: 9216,
        table: 254,
        ipsec: None,
    }
}

#[test]
fn the_seeds_policy_protects_its_path_with_its_sa() {
    let p =
        decode_policy(&policy_bytes("192.168.80.2", "192.168.80.3", 17, 12, 0)).expect("policy");
    assert_eq!((p.dir, p.priority, p.templates.len()), (1, 12, 1));
    let s = decode_state(&state_bytes("192.168.80.2", "192.168.80.3", Some(7))).expect("sa");
    // 8 SPI/seq + 8 IV + up to 3 padding + 2 trailer + 16 ICV.
    assert_eq!(s.overhead, Some(37));
    assert_eq!(s.packet_offload, Some(IfIndex(7)));
    let mut x = Xfrm {
        policies: vec![p],
        states: vec![],
    };
    let key = LookupKey::to(ip("192.168.80.3"));
    let pa = path("192.168.80.2", 7);
    let prot = x.protection(&key, &pa, 4789).expect("protected");
    assert_eq!((prot.proto, prot.mode, prot.reqid), (IPPROTO_ESP, 0, 3));
    assert_eq!(prot.sa, None, "no SA yet");
    x.states.push(s);
    let prot = x.protection(&key, &pa, 4789).expect("protected");
    let sa = prot.sa.expect("its SA");
    assert_eq!(
        (sa.spi, sa.overhead, sa.packet_offload),
        (3, 37, Some(IfIndex(7)))
    );
    // Another remote, another source, a TCP-only policy: not protected.
    assert_eq!(
        x.protection(&LookupKey::to(ip("192.168.80.4")), &pa, 4789),
        None
    );
    assert_eq!(x.protection(&key, &path("192.168.80.9", 7), 4789), None);
    x.policies[0].sel.proto = 6;
    assert_eq!(x.protection(&key, &pa, 4789), None);
}

#[test]
fn block_bypass_priority_and_mark() {
    let allow = decode_policy(&policy_bytes("10.0.0.1", "10.0.0.2", 0, 100, 0)).unwrap();
    let mut block = decode_policy(&policy_bytes("10.0.0.1", "10.0.0.2", 0, 10, 1)).unwrap();
    block.index = 1;
    let mut x = Xfrm {
        policies: vec![allow.clone(), block],
        states: vec![],
    };
    let key = LookupKey::to(ip("10.0.0.2"));
    let pa = path("10.0.0.1", 3);
    assert!(
        x.protection(&key, &pa, 4789).is_some_and(|p| p.blocks),
        "the lower priority wins"
    );
    // A bypass (allow without template) wins over the block: not protected.
    let mut bypass = allow.clone();
    bypass.templates.clear();
    bypass.priority = 1;
    x.policies.push(bypass);
    assert_eq!(x.protection(&key, &pa, 4789), None);
    // A marked policy selects only packets of its mark.
    let mut marked = allow;
    marked.mark = (0x10, 0xff);
    marked.priority = 0;
    x.policies.push(marked);
    assert_eq!(x.protection(&key, &pa, 4789), None);
    let prot = x.protection(&LookupKey { mark: 0x10, ..key }, &pa, 4789);
    assert!(prot.is_some_and(|p| !p.blocks));
}

#[test]
fn inbound_policies_decide_which_copy_counts() {
    let remote = ip("192.168.80.3");
    let local = ip("192.168.80.2");
    let mut x = Xfrm::default();
    assert!(x.inbound().is_empty());
    assert!(!x.inbound().protects(remote, local, 4789, 0));
    // The seed's inbound policy: src .3 dst .2, any protocol, ESP transport.
    let mut p = decode_policy(&policy_bytes("192.168.80.3", "192.168.80.2", 0, 12, 0)).unwrap();
    p.dir = XFRM_POLICY_IN;
    x.policies.push(p.clone());
    let inb = x.inbound();
    assert!(inb.protects(remote, local, 4789, 0));
    assert!(!inb.protects(ip("192.168.80.4"), local, 4789, 0));
    assert_eq!(inb.families(), (true, false));
    // An outbound policy says nothing about what comes in.
    x.policies[0].dir = XFRM_POLICY_OUT;
    assert!(x.inbound().is_empty());
    // A bypass of higher priority for VXLAN wins; one for some source ports only
    // does not.
    x.policies[0].dir = XFRM_POLICY_IN;
    let mut bypass = p.clone();
    bypass.templates.clear();
    bypass.priority = 1;
    bypass.sel.proto = IPPROTO_UDP;
    bypass.sel.sport = (5000, 0xffff);
    x.policies.push(bypass.clone());
    assert!(x.inbound().protects(remote, local, 4789, 0));
    x.policies[1].sel.sport = (0, 0);
    assert!(!x.inbound().protects(remote, local, 4789, 0));
}

#[test]
fn garbage_never_panics() {
    let p = policy_bytes("10.0.0.1", "10.0.0.2", 0, 1, 0);
    let s = state_bytes("10.0.0.1", "10.0.0.2", None);
    for cut in 0..p.len() {
        let _ = decode_policy(&p[..cut]);
    }
    for cut in 0..s.len() {
        let _ = decode_state(&s[..cut]);
    }
    let mut x: u64 = 0x1234_5678;
    for _ in 0..2000 {
        let mut b = s.clone();
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
        }
        let _ = decode_state(&b);
        let _ = decode_policy(&b);
        let _ = messages(&b);
    }
}
