//! Requests in batches: removes first, then installs and replaces, each a backend
//! call for many flows; every answer settled into the flow's [`Placement`] (offloaded,
//! retried later, or software with the reason), the capacity freed handed to flows
//! that waited for it.

use super::*;

/// What a chunk asks of the backend.
#[derive(Default)]
struct Plan {
    /// (flow, handle, whether the flow is forgotten).
    removes: Vec<(FlowId, RuleHandle, bool)>,
    replaces: Vec<(FlowId, RuleHandle, FlowerRule)>,
    installs: Vec<(FlowId, FlowerRule)>,
}

impl Offloader {
    /// Processes requests in order, batching backend calls; returns the new
    /// placements of the flows touched.
    pub fn process(&mut self, reqs: Vec<FlowRequest>) -> Vec<(FlowId, Placement)> {
        let mut touched = Vec::with_capacity(reqs.len());
        let mut chunk: Vec<FlowRequest> = Vec::new();
        let mut seen = FastSet::default();
        for r in reqs {
            if !seen.insert(r.flow()) {
                self.process_chunk(std::mem::take(&mut chunk), &mut touched);
                seen.clear();
                seen.insert(r.flow());
            }
            chunk.push(r);
        }
        self.process_chunk(chunk, &mut touched);
        touched
    }

    /// Records a put's request (re-indexing the flow when what it depends on changed)
    /// and returns its entry.
    fn record(&mut self, entry: Arc<CacheEntry>, paths: Arc<[TunnelPath]>) -> &mut Tracked {
        let flow = entry.id();
        let same = self
            .flows
            .get(&flow)
            .is_some_and(|e| same_flow(&e.entry, &e.paths, &entry, &paths));
        if !same {
            let old = self.flows.remove(&flow);
            if let Some(old) = &old {
                self.unindex(flow, old);
            }
            let (placement, installed, attempts) = match old {
                Some(o) => (o.placement, o.installed, o.attempts),
                None => (
                    self.shared
                        .get(Placement::software(SoftwareReason::Pending)),
                    None,
                    0,
                ),
            };
            let e = Tracked {
                entry,
                paths,
                placement,
                installed,
                attempts,
            };
            self.index(flow, &e);
            self.flows.insert(flow, e);
        }
        self.flows.get_mut(&flow).expect("recorded above")
    }

    /// One chunk: each flow at most once, so removes, replaces and installs can be
    /// batched independently.
    fn process_chunk(&mut self, chunk: Vec<FlowRequest>, touched: &mut Vec<(FlowId, Placement)>) {
        let mut plan = Plan::default();
        for r in chunk {
            match r {
                FlowRequest::Remove { flow } => {
                    self.cancel_retry(flow);
                    self.capacity_waiting.remove(&flow);
                    if let Some(e) = self.flows.remove(&flow) {
                        self.unindex(flow, &e);
                        if let Some(i) = e.installed {
                            plan.removes.push((flow, i.handle, true));
                        }
                    }
                }
                FlowRequest::Put { entry, paths } => {
                    self.plan_put(entry, paths, &mut plan, touched)
                }
            }
        }
        self.run_removes(&plan.removes);
        self.run_replaces(plan.replaces, touched);
        self.run_installs(plan.installs, touched);
    }

    /// A put: recorded, judged, and planned as nothing to do, a remove (now refused), a
    /// replace or an install.
    fn plan_put(
        &mut self,
        entry: Arc<CacheEntry>,
        paths: Arc<[TunnelPath]>,
        plan: &mut Plan,
        touched: &mut Vec<(FlowId, Placement)>,
    ) {
        let flow = entry.id();
        let prepared = self.prepare(&entry.megaflow(), entry.actions(), &paths);
        let fresh = self.flows.get(&flow).is_none_or(|e| e.installed.is_none());
        let adopted = if fresh {
            self.adopt_kept(&prepared)
        } else {
            None
        };
        // A previous run's rule for this very match is taken over: as it is (offloaded
        // at once, no request), or replaced in place below.
        let adopted_placement = adopted.as_ref().filter(|(_, same)| *same).map(|(k, _)| {
            let p = offloaded(self.backend.as_ref(), &self.ports, k.rule.ingress, k.hw);
            (self.shared.get(p.clone()), p)
        });
        let adopted = adopted.map(|(k, _)| {
            let fingerprint = self.fingerprint(&k.rule);
            (k, fingerprint)
        });
        let refused = prepared
            .as_ref()
            .err()
            .map(|reason| self.shared.get(Placement::software(reason.clone())));
        // Compared only with a rule the flow has (a new flow's is taken when installed).
        let prepared_fp = prepared
            .as_ref()
            .ok()
            .filter(|_| !fresh || adopted.is_some())
            .map(|r| self.fingerprint(r));
        let entry = self.record(entry, paths);
        if let Some((k, fingerprint)) = adopted {
            entry.installed = Some(InstalledRule {
                handle: k.handle,
                fingerprint,
            });
        }
        if let Some((shared, p)) = adopted_placement {
            entry.placement = shared;
            touched.push((flow, p));
        }
        match (prepared, entry.installed, refused) {
            (Err(_), installed, Some(p)) => {
                if let Some(i) = installed {
                    plan.removes.push((flow, i.handle, false));
                }
                entry.installed = None;
                entry.attempts = 0;
                // A verdict that did not change is not news.
                let changed = *entry.placement != *p;
                entry.placement = p.clone();
                if installed.is_some() {
                    self.counters.to_software += 1;
                }
                self.cancel_retry(flow);
                self.capacity_waiting.remove(&flow);
                if changed {
                    touched.push((flow, (*p).clone()));
                }
            }
            (Ok(_), Some(i), _) if Some(i.fingerprint) == prepared_fp => {}
            (Ok(rule), Some(i), _) => plan.replaces.push((flow, i.handle, rule)),
            (Ok(rule), None, _) => plan.installs.push((flow, rule)),
            (Err(_), _, None) => unreachable!("a refusal has its placement"),
        }
    }

    /// During an adoption round, the kept rule a prepared rule takes over (removed from
    /// the round), and whether it is unchanged.
    fn adopt_kept(
        &mut self,
        prepared: &Result<FlowerRule, SoftwareReason>,
    ) -> Option<(Kept, bool)> {
        if self.kept.is_empty() {
            return None;
        }
        let rule = prepared.as_ref().ok()?;
        let k = self.kept.remove(&(rule.ingress, rule.matches))?;
        let unchanged = k.rule == *rule;
        if unchanged {
            self.adoption.adopted += 1;
        } else {
            self.adoption.replaced += 1;
        }
        Some((k, unchanged))
    }

    fn run_removes(&mut self, removes: &[(FlowId, RuleHandle, bool)]) {
        if removes.is_empty() {
            return;
        }
        let handles: Vec<RuleHandle> = removes.iter().map(|r| r.1).collect();
        let mut freed = 0;
        for (r, res) in removes.iter().zip(self.backend.remove(&handles)) {
            match res {
                Ok(()) => freed += 1,
                Err(BackendError::Kernel {
                    errno: KernelErrno::NotFound,
                    ..
                }) => {}
                Err(e) => {
                    tracing::warn!(flow = %r.0, error = %e, "offload: remove failed; the sweep retries")
                }
            }
        }
        self.capacity_freed(freed);
    }

    /// The failure of an answer that came later than the deadline.
    fn late(&self, started: Instant) -> Option<String> {
        let elapsed = started.elapsed();
        (elapsed > self.deadline).then(|| {
            format!(
                "backend answered after {} ms (deadline {} ms)",
                elapsed.as_millis(),
                self.deadline.as_millis()
            )
        })
    }

    fn run_installs(
        &mut self,
        installs: Vec<(FlowId, FlowerRule)>,
        touched: &mut Vec<(FlowId, Placement)>,
    ) {
        if installs.is_empty() {
            return;
        }
        let batch: Vec<(FlowId, &FlowerRule)> = installs.iter().map(|(f, r)| (*f, r)).collect();
        let started = Instant::now();
        let results = self.backend.install(&batch);
        let late = self.late(started);
        let mut withdraw = Vec::new();
        for ((flow, rule), res) in installs.into_iter().zip(results) {
            let (installed, placement) =
                self.outcome(flow, res, late.as_ref(), &rule, &mut withdraw);
            self.settle(flow, installed.map(|h| (h, &rule)), placement, touched);
        }
        self.withdraw(withdraw);
    }

    fn run_replaces(
        &mut self,
        replaces: Vec<(FlowId, RuleHandle, FlowerRule)>,
        touched: &mut Vec<(FlowId, Placement)>,
    ) {
        if replaces.is_empty() {
            return;
        }
        let batch: Vec<(FlowId, RuleHandle, &FlowerRule)> =
            replaces.iter().map(|(f, h, r)| (*f, *h, r)).collect();
        let started = Instant::now();
        let results = self.backend.replace(&batch);
        let late = self.late(started);
        let mut withdraw = Vec::new();
        for ((flow, old, rule), res) in replaces.into_iter().zip(results) {
            if res.is_err() {
                // The old rule no longer matches what the flow does: take it out.
                withdraw.push(old);
            }
            let (installed, placement) =
                self.outcome(flow, res, late.as_ref(), &rule, &mut withdraw);
            self.settle(flow, installed.map(|h| (h, &rule)), placement, touched);
        }
        self.withdraw(withdraw);
    }

    fn outcome(
        &self,
        flow: FlowId,
        res: Result<crate::backend::Installed, BackendError>,
        late: Option<&String>,
        rule: &FlowerRule,
        withdraw: &mut Vec<RuleHandle>,
    ) -> (Option<RuleHandle>, Placement) {
        let attempts = self.flows.get(&flow).map_or(0, |e| e.attempts) + 1;
        match (res, late) {
            (Ok(i), Some(why)) => {
                withdraw.push(i.handle);
                (
                    None,
                    Placement::software(SoftwareReason::Retrying {
                        error: why.clone(),
                        attempts,
                    }),
                )
            }
            (Ok(i), None) => (
                Some(i.handle),
                offloaded(self.backend.as_ref(), &self.ports, rule.ingress, i.hw),
            ),
            (Err(e), _) => (None, Placement::software(failure(&e, attempts))),
        }
    }

    /// Records a backend call's outcome for a flow; a retryable failure is scheduled
    /// for another attempt.
    fn settle(
        &mut self,
        flow: FlowId,
        installed: Option<(RuleHandle, &FlowerRule)>,
        placement: Placement,
        touched: &mut Vec<(FlowId, Placement)>,
    ) {
        tracing::debug!(%flow, %placement, "offload: placed");
        if !self.flows.contains_key(&flow) {
            return;
        }
        let installed = installed.map(|(handle, rule)| InstalledRule {
            handle,
            fingerprint: self.fingerprint(rule),
        });
        let shared = self.shared.get(placement.clone());
        let Some(e) = self.flows.get_mut(&flow) else {
            return;
        };
        touched.push((flow, placement.clone()));
        match (e.installed.is_some(), installed.is_some()) {
            (true, true) => self.counters.moved += 1,
            (true, false) => self.counters.to_software += 1,
            (false, true) => self.counters.to_offload += 1,
            (false, false) => {}
        }
        e.installed = installed;
        let retry = match placement.reason() {
            Some(SoftwareReason::Capacity(_)) => {
                self.counters.capacity_refusals += 1;
                self.capacity_waiting.insert(flow);
                true
            }
            Some(SoftwareReason::Retrying { .. }) => {
                self.counters.transient_failures += 1;
                true
            }
            _ => false,
        };
        e.attempts = if retry { e.attempts + 1 } else { 0 };
        let attempts = e.attempts;
        e.placement = shared;
        if retry {
            self.schedule_retry(flow, attempts);
        } else {
            self.cancel_retry(flow);
            self.capacity_waiting.remove(&flow);
        }
    }

    pub(super) fn withdraw(&mut self, handles: Vec<RuleHandle>) {
        if handles.is_empty() {
            return;
        }
        let mut freed = 0;
        for res in self.backend.remove(&handles) {
            match res {
                Ok(()) => freed += 1,
                Err(e) if e.kernel_errno() == Some(KernelErrno::NotFound) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "offload: withdrawing a rule failed; the sweep retries")
                }
            }
        }
        self.capacity_freed(freed);
    }
}
