//! flowd's BGP EVPN side, through FRR: the kernel contract zebra reads and writes, with
//! no FRR library and no FPM.
//!
//! For every EVPN network flowd keeps *shadow* kernel devices ([`link`]): a bridge, a
//! vxlan device with the network's VNI and local VTEP on a UDP port other than 4789 (it
//! never carries data), and an advertise port. zebra (with `advertise-all-vni`) then
//! announces the VNI. flowd writes the stations it learns on its representors as static
//! FDB entries on the advertise port, which zebra announces as type-2 routes; zebra
//! installs the remote MACs and the flood (type-3) VTEPs it hears of on the shadow vxlan
//! device, which flowd reads back ([`mirror`]) as remote stations and flood lists for
//! its slow path.
//!
//! ```text
//!  slow path (datapath crate)             this crate                        kernel        FRR
//!  MAC learning --station changes-->  Fabric::set_local / sync_local --> evad-N FDB --> zebra --> bgpd (type 2/3 out)
//!  RemoteStations <--RemoteEvent-----  Fabric::poll (Mirror)  <--------- evvx-N FDB <-- zebra <-- bgpd (type 2/3 in)
//! ```
//!
//! The crate knows FRR's kernel contract and nothing of the slow path: flowd's daemon
//! (`src/daemon/evpn.rs`) carries events between the two. Modules: [`fdb`] (FDB entries
//! and the requests flowd makes: unit tests against byte layouts and kernel captures),
//! [`link`] (shadow devices), [`mirror`] (the pure state machine), [`netlink`] (the
//! sockets), [`fabric`] (the I/O around the mirror).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod error;
pub mod fabric;
pub mod fdb;
pub mod link;
pub mod mirror;
pub mod netlink;

pub use error::{Error, Result};
pub use fabric::{Fabric, FabricStats, PollReport, SetupReport};
pub use fdb::{FdbEntry, FdbEvent, mac_str};
pub use link::{DEFAULT_UDP_PORT, Names, ShadowSpec};
pub use mirror::{LocalOp, Mirror, RemoteEvent, Shadow};
