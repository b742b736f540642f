//! FRR's zebra and bgpd for one hypervisor of the EVPN lab, and the small process and
//! text helpers the lab drives them with.

use super::*;

/// FRR's zebra and bgpd in one namespace, each with its own files in `dir`; killed
/// (SIGTERM, then SIGKILL) when dropped.
pub struct Frr {
    /// The namespace.
    pub ns: String,
    /// Configuration, sockets, pid files and logs.
    pub dir: PathBuf,
    zebra: Option<Child>,
    bgpd: Option<Child>,
}

pub(super) fn wait_for(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Ok(t0.elapsed());
        }
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if t0.elapsed() >= within {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn stop_child(c: &mut Child, within: Duration) {
    // SAFETY: signalling our own child by its id.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Frr {
    /// Writes the configurations and starts zebra, then bgpd; returns once both answer.
    pub fn start(ns: &Netns, dir: &Path, hostname: &str, bgp: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The daemons run as the `frr` user: their directory must be theirs to write.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write(
            "zebra.conf",
            format!(
                "hostname {hostname}\nlog file {}/zebra.log\n",
                dir.display()
            ),
        )?;
        write(
            "bgpd.conf",
            format!(
                "frr defaults datacenter\nhostname {hostname}\nlog file {}/bgpd.log\n{bgp}",
                dir.display()
            ),
        )?;
        let mut frr = Frr {
            ns: ns.name.clone(),
            dir: dir.to_path_buf(),
            zebra: None,
            bgpd: None,
        };
        frr.zebra = Some(frr.spawn("zebra")?);
        let api = dir.join("zserv.api");
        wait_for("zebra's API socket", Duration::from_secs(20), || {
            api.exists()
        })?;
        frr.start_bgpd()?;
        Ok(frr)
    }

    fn spawn(&self, daemon: &str) -> Result<Child, String> {
        let d = self.dir.display().to_string();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{daemon}.out")))
            .map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(Path::new(FRR_DIR).join(daemon))
            .args(["--vty_socket", &d])
            .args(["-i", &format!("{d}/{daemon}.pid")])
            .args(["-z", &format!("{d}/zserv.api")])
            .args(["-f", &format!("{d}/{daemon}.conf")])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {daemon} in {}: {e}", self.ns))
    }

    /// Starts bgpd (again) and waits until it answers on its vty socket.
    pub fn start_bgpd(&mut self) -> Result<(), String> {
        let vty = self.dir.join("bgpd.vty");
        let _ = std::fs::remove_file(&vty);
        self.bgpd = Some(self.spawn("bgpd")?);
        wait_for("bgpd's vty socket", Duration::from_secs(20), || {
            vty.exists() && self.try_vtysh("show bgp summary").is_ok()
        })?;
        Ok(())
    }

    /// Stops bgpd (SIGTERM: it tells its peers, which withdraw its routes).
    pub fn stop_bgpd(&mut self) {
        if let Some(mut c) = self.bgpd.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }

    /// Runs `vtysh -c CMD` against this namespace's daemons.
    pub fn try_vtysh(&self, cmd: &str) -> Result<String, String> {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-c", cmd])
            .output()
            .map_err(|e| format!("vtysh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "vtysh -c '{cmd}' in {}: {text}{}",
                self.ns,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `vtysh -c CMD`, or the error as text.
    pub fn vtysh(&self, cmd: &str) -> String {
        self.try_vtysh(cmd).unwrap_or_else(|e| e)
    }

    /// The daemons' logs.
    pub fn logs(&self) -> String {
        ["zebra.log", "bgpd.log", "zebra.out", "bgpd.out"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
                format!("--- {} {f}\n{}", self.ns, tail(&text, 20))
            })
            .collect()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.stop_bgpd();
        if let Some(mut c) = self.zebra.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }
}

/// No IPv6 in a namespace (devices created or moved there later included): the lab
/// speaks IPv4, and the VMs' and bridges' IPv6 chatter would only add flooded frames.
pub(super) fn quiet_ipv6(ns: &Netns) {
    let _ = ns.try_exec(
        "sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1",
    );
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub(super) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The route reflector's bgpd configuration (hv3) and its clients'.
pub(super) fn bgp_config(h: usize) -> String {
    let id = vtep(h);
    if h == 3 {
        format!(
            "router bgp 65000\n bgp router-id {id}\n no bgp default ipv4-unicast\n\
             neighbor fabric peer-group\n neighbor fabric remote-as 65000\n\
             neighbor fabric timers connect 1\n\
             neighbor {} peer-group fabric\n neighbor {} peer-group fabric\n\
             address-family l2vpn evpn\n  neighbor fabric activate\n\
             neighbor fabric route-reflector-client\n  advertise-all-vni\n exit-address-family\n",
            vtep(1),
            vtep(2)
        )
    } else {
        let rr = vtep(3);
        format!(
            "router bgp 65000\n bgp router-id {id}\n no bgp default ipv4-unicast\n\
             neighbor {rr} remote-as 65000\n neighbor {rr} timers connect 1\n\
             address-family l2vpn evpn\n  neighbor {rr} activate\n  advertise-all-vni\n\
             exit-address-family\n"
        )
    }
}
