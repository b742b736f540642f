//! TCP through flowd's software path with every device's default offloads, through the
//! real daemon in the lab's topology (network namespaces, `[offload] policy = "off"`:
//! every flow stays in software).
//!
//! The VF sends what a VM sends: TSO super-frames of up to 64 KiB and partial checksums
//! (veth keeps TSO, GSO and checksum offload on by default); the representors and
//! uplinks, which flowd reads, run GRO as real NICs and representors do
//! (`ethtool -K .. gro on`: veth leaves it off by default). The remote's devices keep
//! veth's defaults.
//!
//! For MTU 1500 and 9000, both directions: bulk transfers of pseudo-random bytes, checked
//! byte for byte by the receiver; a capture of what flowd sent to the remote, decoded
//! with `tcpdump -vv`, in which no frame exceeds the path MTU, every outer IPv4, outer
//! UDP and inner TCP checksum verifies, and each connection keeps one outer UDP source
//! port while connections spread over several. A veth is no wire: flowd hands its uplink
//! the VXLAN packets of a super-frame as one UDP datagram to cut (Linux 6.2 and later),
//! which a veth carries whole, its checksum still partial, where a NIC would cut it and
//! fill the checksums; where the kernel has UDP-tunnel segmentation for tun (Linux 6.17),
//! flowd hands it each TCP super-frame whole inside VXLAN instead, through the uplink's
//! tap. For that capture the uplinks do what such a NIC does, in software (`ethtool -K
//! upN tx off`: the kernel cuts and checksums before the device), so that it shows each
//! packet as it would cross a wire. A third run keeps every default on the uplinks too:
//! the transfers must be as exact, and flowd must have used the cut.

mod common;

use common::tcp::{BYTES, set_mtu, transfers};
use common::{exe, stat};

use common::lab::{ping, wait};
use flowd::lab::{self, Lab};
use flowd::netns::can_netns;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn skip() -> bool {
    if can_netns() && Command::new("tcpdump").arg("--version").output().is_ok() {
        return false;
    }
    eprintln!("skipped: needs root, iproute2 and tcpdump");
    true
}

/// Connections from the VF to the remote (their outer source ports must spread).
const CONNECTIONS: u16 = 4;

struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(l: &Lab, tag: &str) -> Self {
        let file = l.dir.join(format!("{tag}.pcap"));
        let err = l.dir.join(format!("{tag}.err"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &l.remote.name,
                "tcpdump",
                "-i",
                "eth1",
                "-Q",
                "in",
            ])
            // A 64 MiB buffer: at veth speed a smaller one drops whole bursts (and with
            // them, at times, every packet of a short connection).
            .args(["-s", "0", "-B", "65536", "-U", "-w"])
            .arg(&file)
            .arg("udp dst port 4789")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).expect("tcpdump log"))
            .spawn()
            .expect("tcpdump");
        let listening = wait(10, || {
            std::fs::read_to_string(&err).is_ok_and(|s| s.contains("listening on"))
        });
        assert!(listening, "tcpdump listens");
        Self { child, file }
    }

    /// Stops the capture and decodes it with `tcpdump -nn -vv`.
    fn decode(mut self) -> String {
        // SIGINT: tcpdump flushes the file.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = Command::new("tcpdump")
            .args(["-nn", "-vv", "-r"])
            .arg(&self.file)
            .output()
            .expect("tcpdump -r");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the decoded capture shows.
#[derive(Debug, Default)]
struct Seen {
    /// Outer packets.
    packets: usize,
    /// Largest outer IP length.
    max_len: usize,
    /// Inner TCP segments whose checksum tcpdump verified.
    tcp_ok: usize,
    /// Lines reporting a bad checksum.
    bad: Vec<String>,
    /// Outer UDP source ports per inner connection (`src > dst`).
    ports: HashMap<String, HashSet<u16>>,
}

/// Parses `tcpdump -nn -vv` output of VXLAN over IPv4 carrying TCP over IPv4: for each
/// packet, the outer IP line, the outer UDP/VXLAN line, the inner IP line and the inner
/// TCP line (tcpdump prints both IP headers with `-vv`).
fn parse(text: &str) -> Seen {
    let mut seen = Seen::default();
    let mut outer_port = None;
    for line in text.lines() {
        if line.contains("incorrect") || line.contains("bad cksum") || line.contains("bad udp") {
            seen.bad.push(line.to_string());
        }
        let t = line.trim_start();
        if !line.starts_with(' ') && line.contains(" IP (") && line.contains("proto UDP") {
            seen.packets += 1;
            if let Some(len) = t
                .rsplit("length ")
                .next()
                .and_then(|s| s.trim_end_matches(')').parse::<usize>().ok())
            {
                seen.max_len = seen.max_len.max(len);
            }
        } else if t.contains(".4789: ") && t.contains("VXLAN") {
            // "192.168.1.1.52000 > 10.0.0.2.4789: [no cksum] VXLAN, flags [I] ..."
            outer_port = t
                .split(' ')
                .next()
                .and_then(|a| a.rsplit('.').next())
                .and_then(|p| p.parse::<u16>().ok());
        } else if t.contains("Flags [") && t.contains(" > ") {
            // "1.1.1.2.40000 > 1.1.1.3.5201: Flags [.], cksum 0x1234 (correct), ..."
            if t.contains("(correct)") {
                seen.tcp_ok += 1;
            }
            let conn = t.split(':').next().unwrap_or("").to_string();
            if let Some(p) = outer_port.take() {
                seen.ports.entry(conn).or_default().insert(p);
            }
        }
    }
    seen
}

/// The lab with flowd in software only and GRO on the devices flowd reads.
fn start(prefix: &str) -> Lab {
    let mut l = lab::build(prefix).expect("lab");
    for dev in ["rep0", "rep1", "up1", "up2"] {
        let _ = l.hv.try_exec(&format!("ethtool -K {dev} gro on"));
    }
    let cfg = common::lab_config(&l, "sim");
    assert!(cfg.contains("policy = \"skip_hw\""));
    let cfg = cfg.replace("policy = \"skip_hw\"", "policy = \"off\"");
    l.start_daemon_config(&exe(), &cfg, &[]).expect("flowd");
    let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
    assert!(ok, "{out}\n{}", l.log());
    l
}

/// What the uplinks do with what flowd sends them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Uplinks {
    /// What a NIC puts on the wire: datagrams cut, checksums filled (in software).
    AsWire,
    /// veth's defaults: datagrams cross whole, their checksums partial.
    Defaults,
}

fn tcp_both_ways(prefix: &str, mtu: u32, uplinks: Uplinks) {
    let l = start(prefix);
    if mtu != 1500 {
        set_mtu(&l, mtu);
    }
    if uplinks == Uplinks::AsWire {
        for n in 1..=2 {
            l.hv.exec(&format!("ethtool -K up{n} tx off"));
        }
    }
    let handed = |l: &Lab| (stat(l, "udp_super_frames"), stat(l, "tunnel_super_frames"));
    let before = handed(&l);
    let cap = Capture::start(&l, "vf-to-remote");
    transfers(&l.vfs[0], &l.remote, "1.1.1.3", 5201, CONNECTIONS);
    let text = cap.decode();
    let seen = parse(&text);
    let head: String = text.lines().take(12).collect::<Vec<_>>().join("\n");
    let after = handed(&l);
    let (cut, whole) = (after.0 - before.0, after.1 - before.1);
    // Where the kernel cuts UDP-tunnel super-frames written to a tap (Linux 6.17),
    // flowd hands each TCP super-frame over whole; else as UDP super-frames.
    let tunnel = datapath::port::TunnelInjector::open(datapath::port::TapMode::Inline).is_ok();
    if tunnel {
        assert!(whole > 0, "no UDP-tunnel super-frame\n{}", l.log());
        // The daemon's default: each tap's receive in a kernel thread of its own.
        let threaded = l.hv.exec("sh -c \"cat /sys/class/net/flowdgso*/threaded\"");
        assert!(
            !threaded.trim().is_empty() && threaded.lines().all(|v| v.trim() == "1"),
            "threaded: {threaded}\n{}",
            l.log()
        );
    } else {
        assert!(cut > 0, "flowd handed over no UDP super-frame\n{}", l.log());
    }
    if uplinks == Uplinks::Defaults {
        // Whole datagrams with partial checksums crossed: only the source ports and
        // the transfers' bytes say anything here.
        check_source_ports(&seen);
        transfers(&l.remote, &l.vfs[0], "1.1.1.2", 5202, 2);
        eprintln!(
            "mtu {mtu}, default uplinks: {cut} UDP super-frames, {whole} UDP-tunnel \
             super-frames cut by the kernel"
        );
        return;
    }
    assert!(
        seen.bad.is_empty(),
        "bad checksums: {:#?}",
        &seen.bad[..seen.bad.len().min(5)]
    );
    assert!(
        seen.packets > BYTES / mtu as usize,
        "{} packets captured: {seen:?}\n{head}",
        seen.packets
    );
    assert!(
        seen.max_len <= mtu as usize,
        "a frame over the MTU: {seen:?}"
    );
    assert!(
        seen.tcp_ok * 10 >= seen.packets * 9,
        "inner TCP checksums verified: {} of {}\n{head}",
        seen.tcp_ok,
        seen.packets
    );
    check_source_ports(&seen);

    // And back: the remote's super-frames, decapsulated and handed to the VF whole.
    transfers(&l.remote, &l.vfs[0], "1.1.1.2", 5202, 2);
    eprintln!(
        "mtu {mtu}: {} packets, largest {} bytes, {} inner TCP checksums verified, \
         {cut} UDP super-frames, {whole} UDP-tunnel super-frames",
        seen.packets, seen.max_len, seen.tcp_ok
    );
}

/// One outer source port per connection, and not one for all.
fn check_source_ports(seen: &Seen) {
    let data: Vec<_> = seen
        .ports
        .iter()
        .filter(|(c, _)| c.starts_with("1.1.1.2."))
        .collect();
    assert_eq!(data.len(), usize::from(CONNECTIONS), "{:?}", seen.ports);
    for (conn, ports) in &data {
        assert_eq!(ports.len(), 1, "{conn}: outer source ports {ports:?}");
    }
    let distinct: HashSet<_> = data.iter().flat_map(|(_, p)| p.iter()).collect();
    assert!(
        distinct.len() > 1,
        "every connection on one port: {:?}",
        seen.ports
    );
}

#[test]
fn tcp_with_default_offloads_at_mtu_1500() {
    if skip() {
        return;
    }
    tcp_both_ways("tcp15", 1500, Uplinks::AsWire);
}

#[test]
fn tcp_with_default_offloads_at_mtu_9000() {
    if skip() {
        return;
    }
    tcp_both_ways("tcp90", 9000, Uplinks::AsWire);
}

#[test]
fn tcp_with_default_offloads_on_the_uplinks_too() {
    if skip() {
        return;
    }
    tcp_both_ways("tcpdf", 9000, Uplinks::Defaults);
}
