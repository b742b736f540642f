//! TCP transfers checked byte for byte, between the lab's namespaces, and the path MTU
//! set end to end: what tests/tcp_netns.rs and tests/tcp_vm.rs share.

use super::lab::wait;
use flowd::control::proto::{Request, ResponseBody};
use flowd::lab::Lab;
use flowd::netns::Netns;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Bytes per connection.
pub const BYTES: usize = 4 << 20;

/// The bytes connection `seed` carries: xorshift64, so that the receiver can check
/// every byte against its own copy.
pub fn stream(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(BYTES);
    while out.len() < BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(BYTES);
    out
}

/// Receives one connection on `listener` and checks it carries stream `seed`, byte for
/// byte; an error names the first wrong offset.
pub fn receive(listener: &TcpListener, seed: u64) -> Result<(), String> {
    let want = stream(seed);
    let (mut c, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        let n = c
            .read(&mut buf)
            .map_err(|e| format!("read from {peer} after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        let exp = want.get(total..total + n).unwrap_or(&[]);
        if exp != &buf[..n] {
            let at = (0..n).find(|&i| exp.get(i) != Some(&buf[i])).unwrap_or(0);
            return Err(format!("byte {} from {peer} differs", total + at));
        }
        total += n;
    }
    if total != BYTES {
        return Err(format!("{total} bytes from {peer}, want {BYTES}"));
    }
    Ok(())
}

/// Sends stream `seed` to `to`.
pub fn send(to: SocketAddr, seed: u64) -> Result<(), String> {
    let data = stream(seed);
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .map_err(|e| format!("connect {to}: {e}"))?;
    c.set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    c.write_all(&data)
        .map_err(|e| format!("write to {to}: {e}"))?;
    c.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    // Wait for the receiver's close, so that every byte was read.
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = c.read(&mut [0u8; 16]);
    Ok(())
}

/// Runs `connections` transfers from namespace `from` to `to_ip` (in namespace `to`),
/// one after the other, each checked byte for byte.
pub fn transfers(from: &Netns, to: &Netns, to_ip: &str, port: u16, connections: u16) {
    let addr: SocketAddr = format!("{to_ip}:{port}").parse().expect("address");
    let to_name = to.name.clone();
    let server = std::thread::spawn(move || {
        super::enter(&Netns::borrowed(&to_name));
        let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        for seed in 0..u64::from(connections) {
            receive(&l, seed)?;
        }
        Ok::<(), String>(())
    });
    // The listener is up before the first connect (bounded wait on the server's socket).
    let probe = from.name.clone();
    let up = wait(5, || {
        let to = to.name.clone();
        Netns::borrowed(&to)
            .try_exec(&format!("ss -ltn 'sport = :{port}'"))
            .1
            .contains(&format!(":{port}"))
    });
    assert!(up, "the server listens in {}", to.name);
    let client = std::thread::spawn(move || {
        super::enter(&Netns::borrowed(&probe));
        for seed in 0..u64::from(connections) {
            send(addr, seed)?;
        }
        Ok::<(), String>(())
    });
    let c = client.join().expect("client thread");
    let s = server.join().expect("server thread");
    assert_eq!(c, Ok(()), "sender");
    assert_eq!(s, Ok(()), "receiver");
}

/// tcpdump on the remote's `eth1`, inbound (what flowd sent), whole frames, into a file;
/// killed on drop.
/// Sets the MTU of the path: the uplinks and the remote's `eth` at `mtu`, the VF, its
/// representor and the remote's VXLAN device 50 below; waits until flowd sees it.
pub fn set_mtu(l: &Lab, mtu: u32) {
    for n in 1..=2 {
        l.hv.ip(&format!("link set up{n} mtu {mtu}"));
        l.remote.ip(&format!("link set eth{n} mtu {mtu}"));
    }
    let inner = mtu - 50;
    l.remote.ip(&format!("link set vxlan16 mtu {inner}"));
    l.vfs[0].ip(&format!("link set vf0 mtu {inner}"));
    l.hv.ip(&format!("link set rep0 mtu {inner}"));
    let ok = wait(15, || {
        let rep = match l.request(Request::Show) {
            Ok(ResponseBody::Ports(p)) => {
                p.iter().any(|p| p.name == "rep0" && p.mtu == Some(inner))
            }
            _ => false,
        };
        let path = match l.request(Request::Tunnels) {
            Ok(ResponseBody::Tunnels(t)) => t.iter().any(|t| t.path_mtu == Some(mtu)),
            _ => false,
        };
        rep && path
    });
    assert!(ok, "flowd sees MTU {mtu}:\n{}", l.log());
}
