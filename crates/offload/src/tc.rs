//! The Linux tc backend: flower filters over rtnetlink.
//!
//! - an ingress qdisc is added to each managed device (an existing one is reused);
//! - each (protocol, mask shape) gets its own priority from flowd's range
//!   [`PRIO_BASE`].., handles come from one counter;
//! - every filter carries flowd's action cookie (magic, owner tag, flow id): a dump
//!   tells flowd's filters from others', so [`Offloader::sweep_orphans`] after a restart
//!   leaves no orphans;
//! - requests are batched, several per `sendmsg`, each with its own sequence number so
//!   every ACK (or errno + extack) maps back to its flow; the sockets, framing, answers
//!   and dumps are [`rtnl`]'s ([`rtnl::Requester::transact`], [`rtnl::Requester::dump`]);
//! - creates and replaces ask for an echo (NLM_F_ECHO); the echoed filter is decoded and
//!   compared with the request, a mismatch is a failed offload (and the filter is
//!   removed); its flags give `in_hw` / `not_in_hw`.
//!
//! [`Offloader::sweep_orphans`]: crate::Offloader::sweep_orphans

use crate::backend::{
    BackendError, DumpedRule, HwState, Installed, KernelErrno, OffloadBackend, RuleHandle,
    RuleStats,
};
use crate::netlink::{self, RequestKind};
use crate::ports::PortInfo;
use crate::rule::{FlowerRule, TcPolicy};
use datapath::{FlowId, IfIndex};
use netlink_packet_core::DecodeError;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::TcMessage;
use rtnl::{Requester, Tuning};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// First priority flowd allocates.
pub const PRIO_BASE: u16 = 0x4000;

/// Configuration of the tc backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcConfig {
    /// skip_sw / skip_hw / none.
    pub policy: TcPolicy,
    /// Tells this flowd instance's filters from other instances' (in the cookie).
    pub owner_tag: u32,
    /// Requests per sendmsg. 64 by default: with echoes on, larger batches cost the
    /// kernel disproportionately more (measured in the VM, 10k filters: 1.2 s at 64,
    /// 1.9 s at 256, 2.6 s at 1024, nearly all of the difference system time).
    pub batch: usize,
    /// Ask for an echo of every create/replace and compare it with the request (on by
    /// default; off only for measurements).
    pub echo: bool,
    /// `TCA_ACT_FLAGS_NO_PERCPU_STATS` on every action.
    pub no_percpu_stats: bool,
    /// Netlink sockets (and threads) large calls spread their batches over.
    pub channels: usize,
}

impl Default for TcConfig {
    fn default() -> Self {
        Self {
            policy: TcPolicy::None,
            owner_tag: 0,
            batch: 64,
            echo: true,
            no_percpu_stats: true,
            channels: 2,
        }
    }
}

/// One request: a ready message, or a filter the channel thread builds itself (building
/// and serializing is a large share of flowd's own cost per filter, so it runs on the
/// channels' threads in parallel rather than before them).
enum Item<'a> {
    /// A ready message (deletes, qdiscs).
    Msg(TcMessage),
    /// A filter to create or replace.
    Filter {
        handle: RuleHandle,
        rule: &'a FlowerRule,
        cookie: [u8; 16],
    },
}

/// How filters are built and their echoes checked, shared by the channel threads.
#[derive(Clone, Copy)]
struct Build {
    policy: TcPolicy,
    act_flags: u32,
    /// Verify echoes (creates and replaces ask for one).
    echo: bool,
    /// Ask for DF (`tunnel_key nofrag`): false once the kernel showed it ignores it.
    nofrag: bool,
}

impl Item<'_> {
    fn message(self, b: Build) -> TcMessage {
        match self {
            Item::Msg(m) => m,
            Item::Filter {
                handle,
                rule,
                cookie,
            } if !b.nofrag && rule.sets_df() => {
                let mut rule = rule.clone();
                rule.clear_df();
                netlink::new_filter(&handle, &rule, b.policy, Some(cookie), b.act_flags)
            }
            Item::Filter {
                handle,
                rule,
                cookie,
            } => netlink::new_filter(&handle, rule, b.policy, Some(cookie), b.act_flags),
        }
    }
}

/// A batch of requests with their sequence numbers.
type Chunk<'a> = Vec<(u32, Item<'a>)>;

/// The tc flower backend.
pub struct TcBackend {
    /// Sockets: large calls spread their batches over them, one thread each (the
    /// kernel inserts flower filters without the RTNL lock, so they proceed in
    /// parallel); everything else uses the first.
    chans: Vec<Requester>,
    cfg: TcConfig,
    seq: u32,
    devices: HashSet<IfIndex>,
    prios: HashMap<(IfIndex, u16, u64), u16>,
    next_prio: HashMap<IfIndex, u16>,
    next_handle: u32,
    /// Whether the kernel honours `tunnel_key nofrag` (assumed until an echo shows
    /// otherwise).
    nofrag: bool,
}

/// What a filter's priority depends on: its device, protocol and mask shape.
fn prio_key(rule: &FlowerRule) -> (IfIndex, u16, u64) {
    (rule.ingress, rule.matches.protocol, rule.mask_signature())
}

/// The answers to one request.
#[derive(Default)]
struct Reply {
    error: Option<(KernelErrno, Option<String>)>,
    /// The echoed filter, raw (until verified).
    echo: Option<Vec<u8>>,
    /// The echo checked against the request (creates and replaces with echo on).
    checked: Option<Result<HwState, BackendError>>,
}

/// A socket of the backend: extack on, buffers for thousands of echoes in flight, and
/// a timeout after which a request counts as unanswered.
fn open_channel() -> Result<Requester, BackendError> {
    Ok(Requester::open_tuned(Tuning {
        ext_ack: true,
        rcvbuf: 32 << 20,
        sndbuf: Some(8 << 20),
        force_buffers: true,
        timeout: Some(Duration::from_secs(10)),
    })?)
}

/// Sends a buffer of requests and collects the answers of `seqs` (an ACK each, and
/// the raw echo of creates/replaces).
fn transact(
    ch: &mut Requester,
    buf: &[u8],
    seqs: &[u32],
) -> Result<HashMap<u32, Reply>, BackendError> {
    Ok(ch
        .transact(buf, seqs)?
        .into_iter()
        .map(|(seq, r)| {
            let reply = Reply {
                error: r.error.map(netlink::refusal),
                echo: r.echo,
                checked: None,
            };
            (seq, reply)
        })
        .collect())
}

/// Builds one batch, frames it into one sendmsg and answers each request, in
/// order; echoes of creates and replaces are verified here, on this thread.
fn run_chunk(
    ch: &mut Requester,
    kind: RequestKind,
    chunk: Chunk<'_>,
    b: Build,
) -> Vec<Result<Reply, BackendError>> {
    let verify = b.echo && matches!(kind, RequestKind::Create | RequestKind::Replace);
    let mut buf = Vec::with_capacity(chunk.len() * 512);
    let mut seqs = Vec::with_capacity(chunk.len());
    let mut ranges = Vec::with_capacity(chunk.len());
    for (seq, item) in chunk {
        let start = buf.len();
        netlink::push_request(&mut buf, kind, seq, item.message(b));
        seqs.push(seq);
        ranges.push(start..buf.len());
    }
    match transact(ch, &buf, &seqs) {
        Ok(mut replies) => seqs
            .iter()
            .zip(ranges)
            .map(|(s, r)| {
                let mut reply = replies.remove(s).ok_or(BackendError::NoAnswer)?;
                if verify && reply.error.is_none() {
                    reply.checked = Some(match reply.echo.take() {
                        Some(echo) => crate::echo::verify(&buf[r], &echo).map_err(|m| match m {
                            crate::echo::Mismatch::NoFragIgnored => BackendError::NoFragIgnored,
                            crate::echo::Mismatch::Other(s) => BackendError::EchoMismatch(s),
                        }),
                        None => Err(BackendError::EchoMismatch("no echo".into())),
                    });
                }
                Ok(reply)
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "tc: batch failed");
            let mut out = vec![Err(e)];
            out.extend((1..seqs.len()).map(|_| Err(BackendError::NoAnswer)));
            out
        }
    }
}

impl TcBackend {
    /// After an install: rules the kernel accepted with `nofrag` ignored (a kernel
    /// without it, 6.1 for one) were taken out; from now on filters ask for no DF (the
    /// tunnel device's own setting applies, as for OVS on such kernels), and those rules
    /// are installed again.
    fn without_nofrag(
        &mut self,
        rules: &[(FlowId, &FlowerRule)],
        mut out: Vec<Result<Installed, BackendError>>,
    ) -> Vec<Result<Installed, BackendError>> {
        let again: Vec<usize> = (0..out.len())
            .filter(|&i| matches!(out[i], Err(BackendError::NoFragIgnored)))
            .collect();
        if again.is_empty() {
            return out;
        }
        if self.nofrag {
            tracing::warn!(
                "tc: this kernel ignores tunnel_key nofrag: offloaded encapsulations leave \
                 without DF (flowd's software path still sets it)"
            );
            self.nofrag = false;
        } else {
            return out;
        }
        let retry: Vec<(FlowId, &FlowerRule)> = again.iter().map(|&i| rules[i]).collect();
        for (i, r) in again.into_iter().zip(self.install(&retry)) {
            out[i] = r;
        }
        out
    }

    /// Opens the netlink sockets and sets up the ingress qdisc on each device.
    pub fn new(cfg: TcConfig, devices: &[IfIndex]) -> Result<Self, BackendError> {
        let chans = (0..cfg.channels.max(1))
            .map(|_| open_channel())
            .collect::<Result<Vec<_>, _>>()?;
        let mut b = Self {
            chans,
            cfg,
            seq: 1,
            devices: HashSet::new(),
            prios: HashMap::new(),
            next_prio: HashMap::new(),
            next_handle: 0,
            nofrag: true,
        };
        for d in devices {
            b.manage(*d)?;
        }
        Ok(b)
    }

    /// Adds a device: ensures its ingress qdisc.
    pub fn manage(&mut self, dev: IfIndex) -> Result<(), BackendError> {
        if self.devices.contains(&dev) {
            return Ok(());
        }
        let seq = self.next_seq();
        let mut buf = Vec::new();
        netlink::push_request(
            &mut buf,
            RequestKind::Qdisc,
            seq,
            netlink::new_ingress_qdisc(dev),
        );
        let mut replies = transact(&mut self.chans[0], &buf, &[seq])?;
        match replies.remove(&seq).and_then(|r| r.error) {
            None | Some((KernelErrno::Exists, _)) => {}
            Some((errno, extack)) => return Err(BackendError::Kernel { errno, extack }),
        }
        self.devices.insert(dev);
        // Handles stay unique on the device even next to filters flowd did not write
        // (or has not swept yet).
        let top = self
            .filters_of(dev)?
            .iter()
            .map(|e| e.handle.handle)
            .max()
            .unwrap_or(0);
        self.next_handle = self.next_handle.max(top);
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn prio_for(&mut self, rule: &FlowerRule) -> u16 {
        let key = prio_key(rule);
        if let Some(p) = self.prios.get(&key) {
            return *p;
        }
        let next = self.next_prio.entry(rule.ingress).or_insert(PRIO_BASE);
        let p = *next;
        *next = next.wrapping_add(1).max(PRIO_BASE);
        self.prios.insert(key, p);
        p
    }

    /// Sends one kind of request for many items, `batch` per sendmsg, the batches
    /// spread over the sockets.
    fn batched(
        &mut self,
        kind: RequestKind,
        msgs: Vec<Item<'_>>,
    ) -> Vec<Result<Reply, BackendError>> {
        let n = msgs.len();
        let b = Build {
            policy: self.cfg.policy,
            act_flags: self.act_flags(),
            echo: self.cfg.echo,
            nofrag: self.nofrag,
        };
        let batch = self.cfg.batch.max(1);
        let mut chunks: Vec<Chunk> = Vec::with_capacity(n.div_ceil(batch));
        for m in msgs {
            if chunks.last().is_none_or(|c| c.len() >= batch) {
                chunks.push(Vec::with_capacity(batch));
            }
            let seq = self.next_seq();
            if let Some(c) = chunks.last_mut() {
                c.push((seq, m));
            }
        }
        let k = self.chans.len();
        if chunks.len() <= 1 || k == 1 {
            let ch = &mut self.chans[0];
            return chunks
                .into_iter()
                .flat_map(|c| run_chunk(ch, kind, c, b))
                .collect();
        }
        let mut per: Vec<Vec<(usize, Chunk)>> = (0..k).map(|_| Vec::new()).collect();
        for (i, c) in chunks.into_iter().enumerate() {
            per[i % k].push((i, c));
        }
        let mut done: Vec<(usize, Vec<Result<Reply, BackendError>>)> = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .chans
                .iter_mut()
                .zip(per)
                .map(|(ch, mine)| {
                    s.spawn(move || {
                        mine.into_iter()
                            .map(|(i, c)| (i, run_chunk(ch, kind, c, b)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(v) => done.extend(v),
                    Err(_) => tracing::error!("tc: a netlink thread panicked"),
                }
            }
        });
        done.sort_by_key(|(i, _)| *i);
        let mut out: Vec<Result<Reply, BackendError>> =
            done.into_iter().flat_map(|(_, v)| v).collect();
        out.resize_with(n, || Err(BackendError::NoAnswer));
        out
    }

    fn act_flags(&self) -> u32 {
        if self.cfg.no_percpu_stats {
            netlink::ACT_FLAGS_NO_PERCPU_STATS
        } else {
            0
        }
    }

    /// A create's or replace's outcome: the kernel's error, else what the channel
    /// thread found checking the echo against the request (see [`crate::echo`]).
    fn answer(
        &self,
        reply: Result<Reply, BackendError>,
        handle: RuleHandle,
    ) -> Result<Installed, BackendError> {
        let mut reply = reply?;
        if let Some((errno, extack)) = reply.error.take() {
            return Err(BackendError::Kernel { errno, extack });
        }
        let hw = if self.cfg.echo {
            reply
                .checked
                .take()
                .unwrap_or_else(|| Err(BackendError::EchoMismatch("no echo".into())))?
        } else {
            HwState::Unknown
        };
        Ok(Installed { handle, hw })
    }

    /// The filters on a device's ingress (a dump, retried when interrupted).
    fn filters_of(&mut self, dev: IfIndex) -> Result<Vec<netlink::FilterEntry>, BackendError> {
        let seq = self.next_seq();
        let ch = &mut self.chans[0];
        // The dump is numbered in this backend's sequence, like every request.
        ch.set_seq(seq.wrapping_sub(1));
        let req = RouteNetlinkMessage::GetTrafficFilter(netlink::dump_filters(dev));
        let undecodable = ch.undecodable;
        let msgs = ch.dump("filters", req)?;
        if ch.undecodable != undecodable {
            // A dump flowd cannot read in full is no answer to count or sweep by.
            return Err(BackendError::Decode(DecodeError::from(
                "undecodable message in a filter dump",
            )));
        }
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(f) => Some(netlink::decode_filter_msg(f)),
                _ => None,
            })
            .collect())
    }

    fn devices(&self) -> Vec<IfIndex> {
        let mut d: Vec<IfIndex> = self.devices.iter().copied().collect();
        d.sort();
        d
    }
}

impl OffloadBackend for TcBackend {
    fn name(&self) -> &'static str {
        "tc"
    }

    fn add_port(&mut self, port: &PortInfo) -> Result<(), BackendError> {
        self.manage(port.ifindex)
    }

    fn remove_port(&mut self, ifindex: IfIndex) {
        self.devices.remove(&ifindex);
    }

    fn install(&mut self, rules: &[(FlowId, &FlowerRule)]) -> Vec<Result<Installed, BackendError>> {
        let mut handles = Vec::with_capacity(rules.len());
        let mut msgs = Vec::with_capacity(rules.len());
        let mut early: HashMap<usize, BackendError> = HashMap::new();
        for (i, (flow, rule)) in rules.iter().enumerate() {
            if let Err(e) = self.manage(rule.ingress) {
                early.insert(i, e);
            }
            self.next_handle = self.next_handle.wrapping_add(1).max(1);
            let h = RuleHandle {
                device: rule.ingress,
                prio: self.prio_for(rule),
                protocol: rule.matches.protocol,
                handle: self.next_handle,
            };
            msgs.push(Item::Filter {
                handle: h,
                rule,
                cookie: netlink::cookie(self.cfg.owner_tag, *flow),
            });
            handles.push(h);
        }
        let kind = if self.cfg.echo {
            RequestKind::Create
        } else {
            RequestKind::CreateQuiet
        };
        let replies = self.batched(kind, msgs);
        let mut bad = Vec::new();
        let out: Vec<_> = replies
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                if let Some(e) = early.remove(&i) {
                    return Err(e);
                }
                match self.answer(r, handles[i]) {
                    Err(e @ (BackendError::EchoMismatch(_) | BackendError::NoFragIgnored)) => {
                        // Accepted but not what was asked for: take it out.
                        bad.push(handles[i]);
                        Err(e)
                    }
                    other => other,
                }
            })
            .collect();
        if !bad.is_empty() {
            let _ = self.remove(&bad);
        }
        self.without_nofrag(rules, out)
    }

    fn replace(
        &mut self,
        rules: &[(FlowId, RuleHandle, &FlowerRule)],
    ) -> Vec<Result<Installed, BackendError>> {
        let mut out: Vec<Option<Result<Installed, BackendError>>> =
            (0..rules.len()).map(|_| None).collect();
        // In place where the priority (protocol and mask shape) stays; else
        // make-before-break.
        let mut inplace = Vec::new();
        let mut moved = Vec::new();
        for (i, (flow, old, rule)) in rules.iter().enumerate() {
            let same = old.device == rule.ingress
                && old.protocol == rule.matches.protocol
                && self.prio_for(rule) == old.prio;
            if same {
                inplace.push((i, *flow, *old))
            } else {
                moved.push((i, *flow))
            }
        }
        let msgs = inplace
            .iter()
            .map(|(i, flow, h)| Item::Filter {
                handle: *h,
                rule: rules[*i].2,
                cookie: netlink::cookie(self.cfg.owner_tag, *flow),
            })
            .collect();
        let kind = if self.cfg.echo {
            RequestKind::Replace
        } else {
            RequestKind::ReplaceQuiet
        };
        let mut nofrag_ignored = Vec::new();
        for ((i, _, h), r) in inplace.iter().zip(self.batched(kind, msgs)) {
            let a = self.answer(r, *h);
            if matches!(a, Err(BackendError::NoFragIgnored)) && self.nofrag {
                nofrag_ignored.push(*i);
            }
            out[*i] = Some(a);
        }
        if !nofrag_ignored.is_empty() {
            // As for installs (`without_nofrag`): replaced again, without `nofrag`.
            tracing::warn!("tc: this kernel ignores tunnel_key nofrag: filters ask for no DF");
            self.nofrag = false;
            let again: Vec<(FlowId, RuleHandle, &FlowerRule)> =
                nofrag_ignored.iter().map(|&i| rules[i]).collect();
            for (i, r) in nofrag_ignored.into_iter().zip(self.replace(&again)) {
                out[i] = Some(r);
            }
        }
        let news: Vec<(FlowId, &FlowerRule)> =
            moved.iter().map(|(i, f)| (*f, rules[*i].2)).collect();
        let installed = self.install(&news);
        let mut olds = Vec::new();
        for ((i, _), r) in moved.iter().zip(installed) {
            if r.is_ok() {
                olds.push(rules[*i].1);
            }
            out[*i] = Some(r);
        }
        let _ = self.remove(&olds);
        out.into_iter()
            .map(|r| r.unwrap_or(Err(BackendError::NoAnswer)))
            .collect()
    }

    fn remove(&mut self, handles: &[RuleHandle]) -> Vec<Result<(), BackendError>> {
        let msgs = handles
            .iter()
            .map(|h| Item::Msg(netlink::del_filter(h)))
            .collect();
        self.batched(RequestKind::Delete, msgs)
            .into_iter()
            .map(|r| match r?.error {
                None => Ok(()),
                Some((errno, extack)) => Err(BackendError::Kernel { errno, extack }),
            })
            .collect()
    }

    fn stats(&mut self, handles: &[RuleHandle]) -> Vec<Result<RuleStats, BackendError>> {
        let devs: HashSet<IfIndex> = handles.iter().map(|h| h.device).collect();
        let mut found: HashMap<RuleHandle, RuleStats> = HashMap::new();
        let mut failed: HashMap<IfIndex, String> = HashMap::new();
        for d in devs {
            match self.filters_of(d) {
                Ok(list) => {
                    for e in list {
                        match e.filter {
                            Some(Ok(f)) => {
                                found.insert(e.handle, f.stats);
                            }
                            Some(Err(err)) => {
                                tracing::warn!(dev = %d, error = %err, "offload: dumped filter undecodable; no counters for it");
                            }
                            None => {}
                        }
                    }
                }
                Err(e) => {
                    failed.insert(d, e.to_string());
                }
            }
        }
        handles
            .iter()
            .map(|h| match found.get(h) {
                Some(s) => Ok(*s),
                None => match failed.get(&h.device) {
                    Some(_) => Err(BackendError::NoAnswer),
                    None => Err(BackendError::errno(KernelErrno::NotFound)),
                },
            })
            .collect()
    }

    fn hardware(&self) -> bool {
        self.cfg.policy != TcPolicy::SkipHw
    }

    fn adoptable(&mut self, d: &DumpedRule) -> bool {
        let Some(rule) = &d.rule else { return false };
        if d.policy != Some(self.cfg.policy) {
            return false;
        }
        let handle = d.handle;
        self.prios.entry(prio_key(rule)).or_insert(handle.prio);
        if handle.prio >= PRIO_BASE {
            let next = self.next_prio.entry(rule.ingress).or_insert(PRIO_BASE);
            *next = (*next).max(handle.prio.saturating_add(1));
        }
        self.next_handle = self.next_handle.max(handle.handle);
        true
    }

    fn dump(&mut self) -> Result<Vec<DumpedRule>, BackendError> {
        let mut out = Vec::new();
        for d in self.devices() {
            for e in self.filters_of(d)? {
                let Some(f) = e.filter else { continue };
                let (owner, rule, hw, policy, stats) = match f {
                    Ok(f) => {
                        let owner = f
                            .cookie
                            .as_deref()
                            .and_then(netlink::parse_cookie)
                            .filter(|(tag, _)| *tag == self.cfg.owner_tag)
                            .map(|(_, flow)| flow);
                        (owner, Some(f.rule), f.hw, Some(f.policy), f.stats)
                    }
                    Err(_) => (None, None, HwState::Unknown, None, RuleStats::default()),
                };
                out.push(DumpedRule {
                    handle: e.handle,
                    owner,
                    rule,
                    hw,
                    policy,
                    stats,
                });
            }
        }
        Ok(out)
    }
}
