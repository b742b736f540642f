//! The tc backend against the host kernel, which has no cls_flower: every install is
//! refused, and the refusal (errno + the kernel's extack message) must reach each flow
//! of a batch, leaving it in software with that reason. Needs root (a scratch network
//! namespace); where flower exists (the VM) this test has nothing to refuse and skips.

use datapath::{Action, Actions, FlowId, FlowKey, FlowMask, Megaflow, PortId};
use flowd::netns::Netns;
use offload::tc::{TcBackend, TcConfig};
use offload::{FlowRequest, KernelErrno, Offloader, PortInfo, PortKind, PortTable, RuleHandle};
use std::time::Duration;

#[test]
fn refusals_map_back_to_each_flow_with_extack() {
    if !flowd::netns::can_netns() {
        println!("skipped: needs root for a network namespace");
        return;
    }
    let ns = Netns::new("fltchost");
    ns.ip("link add rep0 type veth peer name rep1");
    ns.ip("link set rep0 up");
    ns.ip("link set rep1 up");
    if ns
        .try_exec("tc qdisc add dev rep1 ingress && tc filter add dev rep1 ingress protocol ip flower skip_hw action drop")
        .0
    {
        println!("skipped: this kernel has cls_flower (the VM suite covers it)");
        return;
    }
    // This test's thread talks netlink inside the namespace.
    ns.enter().expect("enter the namespace");
    let ifx = |d: &str| ns.ifindex(d).expect("ifindex");
    let sw = Some(vocab::SwitchId(vec![7; 6]));
    let ports: PortTable = [
        PortInfo {
            id: PortId(1),
            name: "rep0".into(),
            ifindex: ifx("rep0"),
            kind: PortKind::Representor { vf: 0 },
            mtu: 1500,
            up: true,
            switch_id: sw.clone(),
        },
        PortInfo {
            id: PortId(2),
            name: "rep1".into(),
            ifindex: ifx("rep1"),
            kind: PortKind::Representor { vf: 1 },
            mtu: 1500,
            up: true,
            switch_id: sw,
        },
    ]
    .into_iter()
    .collect();
    let tc = TcBackend::new(
        TcConfig {
            batch: 2,
            ..TcConfig::default()
        },
        &[ifx("rep0")],
    )
    .expect("ingress qdisc");
    let mut off = Offloader::new(Box::new(tc), ports, Duration::from_secs(10));
    let reqs: Vec<FlowRequest> = (0..5u8)
        .map(|i| {
            let mut k = FlowKey::default();
            let mut m = FlowMask::default();
            k.in_port = 1;
            m.in_port = u32::MAX;
            k.eth_dst = [2, 0, 0, 0, 0, i];
            m.eth_dst = [0xff; 6];
            FlowRequest::put(
                FlowId(u64::from(i)),
                Megaflow::new(&k, &m),
                Actions::new(vec![Action::Output(PortId(2))]),
                Vec::new(),
            )
        })
        .collect();
    let placed = off.process(reqs);
    assert_eq!(placed.len(), 5);
    for (flow, p) in placed {
        let s = p.to_string();
        assert!(!p.is_offloaded(), "{flow}: {s}");
        println!("flow {flow}: {s}");
        assert!(
            s.starts_with("offloaded:no (backend: ") && s.contains("TC classifier not found"),
            "{flow}: {s}"
        );
    }
    // ENOENT for a filter that is not there, mapped to its handle.
    let bogus = RuleHandle {
        device: ifx("rep0"),
        prio: 0x4000,
        protocol: 0x0800,
        handle: 99,
    };
    let res = off.backend().remove(&[bogus]);
    let e = res[0].as_ref().unwrap_err();
    assert!(
        matches!(
            e.kernel_errno(),
            Some(KernelErrno::NotFound | KernelErrno::Invalid)
        ),
        "{e}"
    );
    assert!(off.backend().dump().unwrap().is_empty());
}
