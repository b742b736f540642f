//! Rules ahead of NORMAL (precedence, unwildcarding, their actions), traces, and
//! network changes.

use super::*;

#[test]
fn rules_take_precedence_and_unwildcard_little() {
    let mut sp = lab();
    let mut key = FlowKey::default();
    key.eth_type = 0x0800;
    key.ip_proto = 6;
    key.tp_dst = 22;
    let mut mask = FlowMask::default();
    mask.eth_type = 0xffff;
    mask.ip_proto = 0xff;
    mask.tp_dst = 0xffff;
    let (id, _) = sp
        .add_rule(Rule::new(100, &key, &mask, vec![RuleAction::Drop]))
        .unwrap();
    let mut ssh = frame(1, mac(0xa), mac(0xb));
    ssh.tp_dst = 22;
    let x = sp.xlate(&ssh, secs(0));
    assert!(x.actions.is_drop());
    assert_eq!(x.meta.rule.map(|r| r.id), Some(id));
    // HTTP passes the ACL: tp_dst un-wildcarded only to its first differing bit.
    let x = sp.xlate(&frame(1, mac(0xa), mac(0xb)), secs(0));
    assert_eq!(acts(&x).len(), 5);
    assert_eq!(x.mask.tp_dst, 0xffc0, "80 vs 22 first differ at 0x40");
    assert_eq!(x.mask.ip_src, [0; 16]);
}

#[test]
fn rule_actions_push_pop_and_tunnel() {
    let mut sp = SlowPath::new(MacConfig::default());
    let attrs = TunnelAttrs::vxlan(5, ip("10.9.9.9"));
    let actions = vec![
        RuleAction::PushVlan {
            tpid: 0x8100,
            tci: 7,
        },
        RuleAction::Output(PortId(2)),
        RuleAction::PopVlan,
        RuleAction::Tunnel { port: TUN, attrs },
        RuleAction::Drop,
        RuleAction::Output(PortId(3)),
    ];
    sp.add_rule(Rule::catch_all(1, actions)).unwrap();
    let x = sp.xlate(&frame(1, mac(1), mac(2)), secs(0));
    assert_eq!(
        acts(&x),
        vec![
            Action::PushVlan {
                tpid: 0x8100,
                tci: 7
            },
            out(2),
            Action::PopVlan,
            Action::SetTunnel(attrs),
            Action::Output(TUN)
        ]
    );
    assert!(x.mask.is_wildcard_all());
    // With no rules at all, everything drops and nothing is consulted.
    let empty = SlowPath::new(MacConfig::default());
    let x = empty.xlate(&frame(1, mac(1), mac(2)), secs(0));
    assert!(x.actions.is_drop() && x.mask.is_wildcard_all());
}

#[test]
fn trace_explains_each_step() {
    let mut sp = lab();
    sp.set_static_mac(NET16, mac(0xd), Location::Remote(ip("10.0.0.3")))
        .unwrap();
    let t = sp.trace(&frame(1, mac(0xa), mac::BROADCAST), secs(0));
    let text = t.to_string();
    assert!(
        text.contains("rule #1 (priority 0): match, actions=NORMAL"),
        "{text}"
    );
    assert!(text.contains("NORMAL: network 16, from port 1"), "{text}");
    assert!(text.contains("learn (new or moved)"), "{text}");
    assert!(
        text.contains("head-end to VTEPs [10.0.0.2, 10.0.0.3]"),
        "{text}"
    );
    assert!(
        text.contains(
            "consulted: in_port, eth_type, vlan_tci0/0x1fff, eth_src, eth_dst/0x10000000000"
        ),
        "{text}"
    );
    let t = sp.trace(&frame(1, mac(0xa), mac(0xd)), secs(0));
    assert!(
        t.to_string()
            .contains("destination 02:00:00:00:00:0d is at remote VTEP 10.0.0.3")
    );
    assert_eq!(t.xlation, sp.xlate(&t.key, secs(0)));
}

#[test]
fn network_changes_are_validated_and_reported() {
    let mut sp = lab();
    let bad = Network {
        members: vec![Attachment::untagged(PortId(1))],
        vxlan: None,
    };
    assert!(sp.add_network(NetworkId(5), bad).is_err());
    sp.upcall(&frame(1, mac(0xa), mac::BROADCAST), secs(0));
    assert_eq!(sp.remove_network(NET16), Ok(Change::Networks));
    assert!(sp.macs().is_empty());
    assert!(
        sp.xlate(&frame(1, mac(0xa), mac::BROADCAST), secs(0))
            .actions
            .is_drop()
    );
}
