//! The daemon's own netlink requests, outside fibwatch's mirror: the links listed
//! once (before fibwatch starts, and for a reload's plugged ports), configured MTUs set
//! on netdevs, and whether the kernel has cls_flower.

use crate::config::PortConfig;

/// A netlink request of the daemon's failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A port's configured MTU could not be set on its netdev.
    #[error("port `{port}`: mtu {mtu}: {source}")]
    Mtu {
        /// The port.
        port: String,
        /// The MTU asked for.
        mtu: u32,
        /// The kernel's answer.
        #[source]
        source: fibwatch::Error,
    },
    /// The links could not be listed.
    #[error("listing links: {0}")]
    Links(#[source] fibwatch::Error),
    /// fibwatch did not take a setting.
    #[error("fibwatch: {0}")]
    Fibwatch(#[source] fibwatch::Error),
}

/// Whether this kernel has cls_flower (probed, not guessed from versions).
pub fn kernel_has_flower() -> bool {
    std::process::Command::new("modprobe")
        .args(["-q", "cls_flower"])
        .status()
        .is_ok_and(|s| s.success())
        || std::path::Path::new("/sys/module/cls_flower").exists()
}

/// Sets the MTU a port's configuration asks for on its netdev (`mtu = N`); the lines
/// say what was applied.
pub(crate) fn apply_mtus(
    ports: &[PortConfig],
    links: &[fibwatch::Link],
) -> Result<Vec<String>, KernelError> {
    let mut lines = Vec::new();
    let mut nl = None;
    for p in ports {
        let Some(mtu) = p.mtu else { continue };
        let Some(link) = links.iter().find(|l| l.name == p.name) else {
            continue;
        };
        if link.mtu == mtu {
            continue;
        }
        let failed = |source| KernelError::Mtu {
            port: p.name.clone(),
            mtu,
            source,
        };
        let nl = match &mut nl {
            Some(nl) => nl,
            None => nl.insert(fibwatch::netlink::Requester::open().map_err(failed)?),
        };
        nl.set_mtu(link.index, mtu).map_err(failed)?;
        tracing::info!(port = %p.name, from = link.mtu, to = mtu, "port MTU set");
        lines.push(format!("port {}: mtu {} -> {mtu}", p.name, link.mtu));
    }
    Ok(lines)
}

/// The links of this namespace (a links-only dump).
pub(crate) fn dump_links() -> Result<Vec<fibwatch::Link>, KernelError> {
    let changes = fibwatch::netlink::Requester::open()
        .and_then(|mut nl| nl.dump_kinds(fibwatch::Kinds::LINKS))
        .map_err(KernelError::Links)?;
    Ok(changes
        .into_iter()
        .filter_map(|c| match c {
            fibwatch::Change::LinkUp(l) => Some(l),
            _ => None,
        })
        .collect())
}
