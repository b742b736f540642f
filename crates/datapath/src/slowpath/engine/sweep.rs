//! The revalidator's sweep ([`Engine::sweep`]): the table walked a chunk at a time
//! (idle flows, stations behind used flows), then the changes taken and, if any, the
//! table walked again to re-translate what they may affect; then the flow limit.

use super::*;

impl Engine {
    /// One revalidator pass at `now`. See the module docs.
    pub fn sweep(&self, now: Duration) -> SweepReport {
        self.sweep_chunked(now, SWEEP_CHUNK)
    }

    /// [`Self::sweep`], the table walked `chunk` flows at a time: each chunk's `used`
    /// refreshed by the observer, its idle flows deleted and its stations refreshed,
    /// then, if changes are pending, the table walked again to re-translate. No list
    /// of every flow is built (issue 15: at a million flows it was about 80 MB for a
    /// moment, which glibc then kept); a flow installed for the whole sweep is seen once
    /// per walk, one installed or deleted meanwhile may or may not be.
    pub(crate) fn sweep_chunked(&self, now: Duration, chunk: usize) -> SweepReport {
        let mut report = SweepReport::default();
        // Only flows used since the last sweep can move a station's age forward.
        let since = self.refreshed_to.swap(ms(now), Ordering::Relaxed);
        let mut live = 0;
        self.walk(chunk, |flows| {
            self.observer.refresh_used(flows);
            report.flows += flows.len();
            let kept = self.delete_idle(flows, now, &mut report);
            live += kept.len();
            let used = self.used_metas(&kept, since);
            let sp = self.read();
            for (used, m) in &used {
                sp.refresh(m, Duration::from_millis(*used));
            }
        });
        self.forget_metas(live);
        let changes = self.take_changes(now, &mut report);
        let set = ChangeSet::new(&changes);
        if !set.is_empty() {
            self.walk(chunk, |flows| {
                let metas = lock(&self.metas);
                let live: Vec<(Arc<FlowEntry>, FlowMeta)> = flows
                    .iter()
                    .map(|e| (e.clone(), metas.get(e.id()).unwrap_or_default()))
                    .collect();
                drop(metas);
                self.revalidate(&live, &set, now, &mut report);
            });
        }
        self.enforce_limit(&mut report);
        self.account(&report);
        report
    }

    /// Walks the flow table `chunk` (at least 1) flows at a time, its lock held
    /// [`SNAPSHOT_CHUNK`] slots at a time, never while `f` runs.
    fn walk(&self, chunk: usize, mut f: impl FnMut(&[Arc<FlowEntry>])) {
        let chunk = chunk.max(1);
        let mut flows = Vec::with_capacity(chunk.min(SWEEP_CHUNK));
        let mut from = Some(0);
        while let Some(at) = from {
            from = self
                .table
                .snapshot_chunk(at, chunk.min(SNAPSHOT_CHUNK), &mut flows);
            if flows.len() >= chunk || (from.is_none() && !flows.is_empty()) {
                f(&flows);
                flows.clear();
            }
        }
    }

    /// Deletes the idle flows of `flows`; returns the others.
    fn delete_idle(
        &self,
        flows: &[Arc<FlowEntry>],
        now: Duration,
        report: &mut SweepReport,
    ) -> Vec<Arc<FlowEntry>> {
        let (now, idle) = (ms(now), self.max_idle_ms.load(Ordering::Relaxed));
        let mut live = Vec::with_capacity(flows.len());
        for e in flows {
            if now.saturating_sub(e.used()) > idle {
                self.delete(e, DeleteReason::Idle);
                report.idle += 1;
            } else {
                live.push(e.clone());
            }
        }
        live
    }

    /// The metadata of the flows used after `since`, once per distinct value (flows
    /// share it: see [`Metas`]) with the latest `used` of its flows: refreshing a
    /// station moves its age to the latest of the times it is given, so once with the
    /// latest is the same as once per flow.
    fn used_metas(&self, flows: &[Arc<FlowEntry>], since: u64) -> Vec<(u64, FlowMeta)> {
        let metas = lock(&self.metas);
        let mut latest: FastMap<u32, u64> = FastMap::default();
        for e in flows.iter().filter(|e| e.used() > since) {
            if let Some(i) = metas.index_of(e.id()) {
                let t = latest.entry(i).or_default();
                *t = (*t).max(e.used());
            }
        }
        latest
            .into_iter()
            .filter_map(|(i, used)| Some((used, metas.value(i)?)))
            .collect()
    }

    /// Forgets the metadata of flows removed behind the slow path's back (e.g. a
    /// flush), once the walk found fewer live flows than metadata, but not that of
    /// flows installed since.
    fn forget_metas(&self, live: usize) {
        let mut metas = lock(&self.metas);
        if metas.len() > live {
            metas.retain(|id| self.table.get(id).is_some());
        }
    }

    /// Ages out stations no live flow refreshed, and takes the pending changes.
    fn take_changes(&self, now: Duration, report: &mut SweepReport) -> Vec<Change> {
        let expired = self.write().expire(now);
        report.macs_expired = expired.len();
        self.tell_stations(&expired);
        let mut changes = std::mem::take(&mut *lock(&self.pending));
        changes.extend(expired);
        changes
    }

    fn revalidate(
        &self,
        live: &[(Arc<FlowEntry>, FlowMeta)],
        set: &ChangeSet,
        now: Duration,
        report: &mut SweepReport,
    ) {
        let decisions = self.decide(live, set, now);
        report.revalidated += decisions.len();
        for (i, r) in decisions {
            if let (Some((e, _)), Some(r)) = (live.get(i), r) {
                self.apply(e, r, report);
            }
        }
    }

    /// The flows the changes may affect, re-translated, on up to `revalidator_threads`
    /// threads for large tables: (index in `live`, decision, `None` when kept).
    fn decide(
        &self,
        live: &[(Arc<FlowEntry>, FlowMeta)],
        set: &ChangeSet,
        now: Duration,
    ) -> Vec<(usize, Option<Revalidation>)> {
        let sp = self.read();
        let sp: &SlowPath = &sp;
        let threads = if live.len() >= PARALLEL_MIN {
            self.config.revalidator_threads.max(1)
        } else {
            1
        };
        let chunk = live.len().div_ceil(threads).max(1);
        let part = |base: usize, flows: &[(Arc<FlowEntry>, FlowMeta)]| {
            flows
                .iter()
                .enumerate()
                .filter_map(|(i, (e, m))| {
                    let mf = e.megaflow();
                    set.affects(&mf, m).then(|| {
                        let r = sp.revalidate(&mf, e.actions(), m, now);
                        (base + i, (r != Revalidation::Keep).then_some(r))
                    })
                })
                .collect::<Vec<_>>()
        };
        if threads == 1 {
            return part(0, live);
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = live
                .chunks(chunk)
                .enumerate()
                .map(|(c, flows)| s.spawn(move || part(c * chunk, flows)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }

    fn enforce_limit(&self, report: &mut SweepReport) {
        let (len, limit) = (self.table.len(), self.flow_limit.load(Ordering::Relaxed));
        if len < limit {
            return;
        }
        let target = limit - limit / 10;
        for e in self.table.lru_candidates(len - target) {
            self.delete(&e, DeleteReason::Evicted);
            report.evicted += 1;
        }
    }

    fn account(&self, r: &SweepReport) {
        let mut s = lock(&self.reval);
        s.sweeps += 1;
        let t = &mut s.total;
        t.flows = r.flows;
        t.idle += r.idle;
        t.revalidated += r.revalidated;
        t.modified += r.modified;
        t.stale += r.stale;
        t.evicted += r.evicted;
        t.macs_expired += r.macs_expired;
    }
}
