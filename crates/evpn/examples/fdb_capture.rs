//! Prints the raw bytes of the bridge FDB entries the kernel reports, with what flowd
//! reads in them: how the captures in `src/fdb.rs`'s tests were taken.
//!
//! ```sh
//! ip netns exec NS cargo run -p evpn --example fdb_capture            # a dump
//! ip netns exec NS cargo run -p evpn --example fdb_capture -- watch 10  # notifications, 10 s
//! ```

use evpn::fdb;
use evpn::netlink::{split_raw, to_route_message};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::time::{Duration, Instant};

fn show(raw: &[u8]) {
    let Some(msg) = to_route_message(raw) else {
        return;
    };
    let (kind, n) = match &msg {
        RouteNetlinkMessage::NewNeighbour(n) => ("RTM_NEWNEIGH", n),
        RouteNetlinkMessage::DelNeighbour(n) => ("RTM_DELNEIGH", n),
        _ => return,
    };
    let Some(e) = fdb::entry(n) else { return };
    println!(
        "// {kind} ifindex {} {} dst {:?} master {:?} state {:#x} flags {:#x}",
        e.ifindex.0,
        fdb::mac_str(&e.mac),
        e.dst,
        e.master.map(|m| m.0),
        e.state,
        e.flags
    );
    let hex: Vec<String> = raw.iter().map(|b| format!("0x{b:02x}")).collect();
    for chunk in hex.chunks(12) {
        println!("    {},", chunk.join(", "));
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    if args.get(1).map(String::as_str) == Some("watch") {
        let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
        s.add_membership(3)?;
        s.set_non_blocking(true)?;
        let end = Instant::now() + Duration::from_secs(secs);
        let mut buf = Vec::with_capacity(1 << 16);
        while Instant::now() < end {
            buf.clear();
            match s.recv(&mut buf, 0) {
                Ok(_) => split_raw(&buf).into_iter().for_each(show),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        return Ok(());
    }
    s.connect(&SocketAddr::new(0, 0))?;
    // RTM_GETNEIGH, NLM_F_REQUEST|NLM_F_DUMP, ndmsg family AF_BRIDGE.
    let mut req = vec![28u8, 0, 0, 0, 30, 0, 0x01, 0x03, 1, 0, 0, 0, 0, 0, 0, 0];
    req.extend([7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    s.send(&req, 0)?;
    let mut buf = Vec::with_capacity(1 << 20);
    loop {
        buf.clear();
        s.recv(&mut buf, 0)?;
        let msgs = split_raw(&buf);
        if msgs.iter().any(|m| m.get(4) == Some(&3)) {
            msgs.into_iter().for_each(show);
            return Ok(());
        }
        msgs.into_iter().for_each(show);
    }
}
