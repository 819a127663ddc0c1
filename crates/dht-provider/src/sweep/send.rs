//! Sending a slice's keys: learning the region's servers (a complete table, a cached
//! exploration, or a new one), then each key to its k closest servers, within the slice's
//! deadline and each peer's budget: in batches to the servers that speak the batched provide
//! protocol, one ADD_PROVIDER per record to the others.

use std::{collections::HashSet, sync::atomic::Ordering};

use dht_proto::{
    Key, PeerId, PeerInfo, Prefix, Request, Response, UnixSecs,
    batch::{MAX_BATCH_KEYS, MAX_BATCH_MESSAGE_SIZE, ProvideBatch},
};
use dht_provider_store::Keystore;
use dht_routing::{Feature, Network, RpcError, find_node_key};
use dht_routing_table::RoutingTable;
use futures::{StreamExt, stream::FuturesUnordered};

use super::{
    BATCH_ANSWER_TIMEOUT, Inner, MAX_RETRY_KEYS,
    assign::assign,
    batch::{self, Settled},
};
use crate::{
    explore::{Exploration, ExploreAction, RegionExplorer, region_from_table},
    state::{PeerTag, Unsent, WeakKey, peer_tag},
};

/// The answers a prefix needs before it counts as learned when answers leave out an `omit`
/// share of the peers they should list: enough that a server is left out of all of them with
/// a chance of at most 1 % (1 when at most that share is left out, at most 3).
pub(super) fn confirmations_for(omit: f64) -> usize {
    let mut n = 1;
    let mut missed = omit.clamp(0.0, 1.0);
    while missed > 0.01 && n < 3 {
        n += 1;
        missed *= omit;
    }
    n
}

impl<N, T, K> Inner<N, T, K>
where
    N: Network + 'static,
    T: RoutingTable + 'static,
    K: Keystore + 'static,
{
    /// The servers of `slice` from a complete routing table (fullrt), with no request.
    pub(super) fn table_region(&self, slice: Prefix, excluded: &HashSet<PeerId>) -> Exploration {
        let table = &self.parts.table;
        let ex = region_from_table(
            slice,
            self.config.k,
            Some(self.parts.local.peer_id),
            excluded,
            |key, n| table.closest_peers(key, n),
        );
        self.count_region(&ex);
        ex
    }

    /// A fresh exploration covering `slice` and when it was learned, if one is cached or the
    /// routing table is complete; otherwise the best seeds.
    pub(super) fn cached(&self, slice: &Prefix) -> Result<(Exploration, UnixSecs), Vec<PeerInfo>> {
        let now = self.now();
        if self.parts.table.is_complete() {
            return Ok((self.table_region(*slice, &HashSet::new()), now));
        }
        let fresh = self.config.exploration_freshness.as_secs();
        let shared = self.shared.lock();
        if let Some(found) = shared.cache.fresh(slice, now, fresh) {
            return Ok(found);
        }
        // Seeds: the servers of the region last time (or of the region learned last), then
        // the routing table's closest peers to the slice.
        let mut seeds = shared.cache.seeds(slice);
        drop(shared);
        let middle = slice.key_with_suffix(&Key::hash(slice.to_string().as_bytes()));
        seeds.extend(self.parts.table.closest_peers(&middle, self.config.k));
        Err(seeds)
    }

    pub(super) async fn explore(
        &self,
        slice: Prefix,
        seeds: Vec<PeerInfo>,
        excluded: &HashSet<PeerId>,
    ) -> Exploration {
        let confirmations = confirmations_for(self.shared.lock().quality.omit_share());
        let config = self
            .config
            .explore
            .clone()
            .with_confirmations(self.config.explore.confirmations.max(confirmations));
        let mut explorer =
            RegionExplorer::new(slice, Some(self.parts.local.peer_id), seeds, config);
        explorer.exclude(excluded.iter().copied());
        let mut in_flight = FuturesUnordered::new();
        loop {
            match explorer.poll() {
                ExploreAction::Ask { peer, target } => {
                    let key = find_node_key(&target);
                    let timeout = self.config.request_timeout;
                    let network = &self.parts.network;
                    in_flight.push(async move {
                        let sent = network.request(&peer, Request::FindNode { key });
                        (peer.peer_id, tokio::time::timeout(timeout, sent).await)
                    });
                }
                ExploreAction::Wait => match in_flight.next().await {
                    Some((peer, Ok(Ok(Response::FindNode { closer_peers })))) => {
                        explorer.on_response(&peer, closer_peers);
                    }
                    Some((peer, _)) => explorer.on_failure(&peer),
                    None => break,
                },
                ExploreAction::Finished => break,
            }
        }
        let ex = explorer.into_result();
        self.count_region(&ex);
        self.shared.lock().quality.observe(&ex);
        ex
    }

    /// Counts a region learned (explored, or taken from a complete table).
    pub(super) fn count_region(&self, ex: &Exploration) {
        let c = &self.counters;
        c.find_node.fetch_add(ex.requests as u64, Ordering::Relaxed);
        c.regions_explored.fetch_add(1, Ordering::Relaxed);
        c.region_servers
            .fetch_add(ex.servers.len() as u64, Ordering::Relaxed);
        c.region_prefix_bits
            .fetch_add(ex.scope.len() as u64, Ordering::Relaxed);
    }

    /// Sends every key of one page of `slice` to its k closest servers, by the slice's
    /// `deadline`, never to the peers given up on in the slice (`excluded`, which grows with
    /// those given up on here).
    pub(super) async fn provide_slice(
        &self,
        slice: Prefix,
        keys: &[WeakKey],
        prior: Option<(Exploration, UnixSecs)>,
        deadline: tokio::time::Instant,
        excluded: &mut HashSet<PeerId>,
    ) -> SliceOutcome {
        let k = self.config.k;
        let kad: Vec<Key> = keys.iter().map(|w| Key::from_multihash(&w.key)).collect();
        // Only servers that answer now say the network is there: not those that answered an
        // exploration reused from before (cached, or the page before's).
        // A reused exploration keeps the time it was learned: it is learned again once that
        // is older than the freshness, however often it was reused.
        let ((mut exploration, mut learned), mut answered) =
            match prior.map(Ok).unwrap_or_else(|| self.cached(&slice)) {
                Ok(found) => (found, false),
                Err(seeds) => {
                    let learned = self.now();
                    let ex = self.explore(slice, seeds, excluded).await;
                    let answered = !ex.responded.is_empty();
                    ((ex, learned), answered)
                }
            };
        // Per key, the servers that hold it: those a retry's key reached before, then those
        // it reaches here.
        let mut stored: Vec<Vec<PeerTag>> = keys.iter().map(|w| w.reached.clone()).collect();
        // Per key, the servers whose batch answer refused it (FULL, INVALID_KEY): not sent
        // again, and not holders.
        let mut refused: Vec<Vec<PeerTag>> = vec![Vec::new(); keys.len()];
        let mut outcome = SliceOutcome::default();
        for pass in 0..3 {
            // Each key's closest live servers (with spares for those never heard from) that
            // do not hold it yet. A complete table holds servers that answered its crawl.
            let silent = if self.parts.table.is_complete() {
                0.0
            } else {
                self.shared.lock().quality.silent_share()
            };
            // Servers that take batches say what they stored: no spare for them.
            let answering: HashSet<PeerId> = if self.config.provide_batch {
                let network = &self.parts.network;
                exploration
                    .servers
                    .iter()
                    .map(|p| p.peer_id)
                    .filter(|p| network.supports(p, Feature::ProvideBatch))
                    .collect()
            } else {
                HashSet::new()
            };
            let per_peer = assign(
                &exploration,
                &kad,
                &stored,
                &refused,
                k,
                silent,
                excluded,
                &answering,
            );
            if per_peer.is_empty() {
                break;
            }
            let results: Vec<(PeerId, usize, PeerSend)> = futures::stream::iter(per_peer)
                .map(|(peer_id, (peer, idx))| async move {
                    let assigned = idx.len();
                    let sent = self.send_to_peer(&peer, keys, idx, deadline).await;
                    (peer_id, assigned, sent)
                })
                .buffer_unordered(self.config.peers_in_parallel)
                .collect()
                .await;
            let (mut newly_dead, mut lost) = (0, 0);
            outcome.peers_tried += results.len() as u64;
            for (peer, assigned, sent) in results {
                let PeerSend {
                    done,
                    refused: refusals,
                    dead,
                } = sent;
                outcome.sent += done.len() as u64;
                if !dead {
                    lost += assigned - done.len() - refusals.len();
                }
                if !done.is_empty() || !refusals.is_empty() {
                    answered = true;
                }
                let tag = peer_tag(&peer);
                for i in done {
                    stored[i].push(tag);
                }
                for i in refusals {
                    refused[i].push(tag);
                }
                if dead {
                    outcome.send_failures += 1;
                    excluded.insert(peer);
                    newly_dead += 1;
                }
            }
            if (newly_dead == 0 && lost == 0)
                || pass == 2
                || tokio::time::Instant::now() >= deadline
            {
                break;
            }
            if newly_dead == 0 {
                // Only records lost on the way: send them again, to the same servers.
                continue;
            }
            // Some servers are gone. The region's other servers are still known: without the
            // gone ones, each key goes to its next closest, and the region is learned again
            // only when fewer than k are left.
            exploration
                .servers
                .retain(|p| !excluded.contains(&p.peer_id));
            exploration.responded.retain(|p| !excluded.contains(p));
            if exploration.servers.len() >= k {
                continue;
            }
            learned = self.now();
            exploration = if self.parts.table.is_complete() {
                self.table_region(slice, excluded)
            } else {
                let seeds = exploration.servers.clone();
                self.explore(slice, seeds, excluded).await
            };
            answered |= !exploration.responded.is_empty();
        }
        let reachable = exploration.servers.len().min(k);
        let needed = reachable.div_ceil(2).max(1);
        // A server that refused a key answered for it: sending it again would not help.
        outcome.ok = stored
            .iter()
            .zip(&refused)
            .map(|(s, r)| s.len() + r.len() >= needed)
            .collect();
        outcome.reached = stored;
        outcome.answered = answered;
        outcome.exploration = Some((exploration, learned));
        outcome
    }

    /// Sends the records of `keys[idx]` to `peer`: in batches if it speaks the batched
    /// provide protocol (and [`SweepConfig::provide_batch`](super::SweepConfig::provide_batch)
    /// is on), as ADD_PROVIDER otherwise, or for what a batch-capable peer turns out not to
    /// take that way. Returns the indexes delivered, those refused, and whether the peer was
    /// given up on (it failed, or was too slow for its budget or the slice's `deadline`).
    pub(super) async fn send_to_peer(
        &self,
        peer: &PeerInfo,
        keys: &[WeakKey],
        idx: Vec<usize>,
        deadline: tokio::time::Instant,
    ) -> PeerSend {
        let budget = self.config.peer_budget.saturating_add(
            self.config
                .peer_time_per_record
                .saturating_mul(u32::try_from(idx.len()).unwrap_or(u32::MAX)),
        );
        let until = deadline.min(tokio::time::Instant::now() + budget);
        let mut sent = PeerSend::default();
        let idx = if self.config.provide_batch
            && self
                .parts
                .network
                .supports(&peer.peer_id, Feature::ProvideBatch)
        {
            match self.send_batches(peer, keys, idx, until, &mut sent).await {
                Some(rest) => rest,
                None => return sent,
            }
        } else {
            idx
        };
        self.send_add_providers(peer, keys, idx, until, &mut sent)
            .await;
        sent
    }

    /// Sends `keys[idx]` to `peer` in batches, one after the other, until `until`, adding
    /// what the answers say to `sent`. Returns the indexes left for ADD_PROVIDER if the peer
    /// does not take batches after all, `None` otherwise (all answered, or the peer given up
    /// on).
    async fn send_batches(
        &self,
        peer: &PeerInfo,
        keys: &[WeakKey],
        idx: Vec<usize>,
        until: tokio::time::Instant,
        sent: &mut PeerSend,
    ) -> Option<Vec<usize>> {
        let c = &self.counters;
        let local = &self.parts.local;
        let provider_bytes = batch::provider_entry_bytes(local);
        // The most keys of the next batch: halved by each "later" answer.
        let mut max_keys = MAX_BATCH_KEYS;
        let mut from = 0;
        // Failed calls in a row: as for ADD_PROVIDER, a lost message now and then is not a
        // dead peer.
        let mut failures = 0u32;
        // "Later" answers in a row.
        let mut deferrals = 0u32;
        // The peer's rate limit as its last answer told it, and when (maybe in an earlier
        // page or slice).
        let mut allowance: Option<batch::Told> = self.allowances.lock().get(&peer.peer_id).copied();
        // Until it is known (and for a server that does not tell it), batches start small.
        let mut first = allowance.is_none();
        while from < idx.len() {
            let limit = if first {
                max_keys.min(batch::FIRST_BATCH_KEYS)
            } else {
                max_keys
            };
            first = false;
            let mut n = batch::cut(
                provider_bytes,
                idx[from..]
                    .iter()
                    .take(limit)
                    .map(|&i| keys[i].key.to_bytes().len()),
                limit,
                MAX_BATCH_MESSAGE_SIZE,
            )[0];
            if let Some((allowed, at)) = allowance {
                let (paced, wait) = batch::pace(n, &allowed, at.elapsed());
                if !wait.is_zero() {
                    if tokio::time::Instant::now() + wait >= until {
                        tracing::debug!(
                            peer = %peer.peer_id,
                            left = idx.len() - from,
                            "peer's rate limit outlasts its budget; its other records go to the next closest"
                        );
                        sent.dead = true;
                        return None;
                    }
                    c.batch_waits.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                }
                n = paced;
            }
            let part = &idx[from..from + n];
            let request = ProvideBatch {
                provider: local.clone(),
                keys: part.iter().map(|&i| keys[i].key.to_bytes()).collect(),
            };
            let wait = self.config.request_timeout.max(BATCH_ANSWER_TIMEOUT);
            let answer_by = until.min(tokio::time::Instant::now() + wait);
            let call = self.parts.network.provide_batch(peer, request);
            let answer = tokio::time::timeout_at(answer_by, call)
                .await
                .unwrap_or(Err(RpcError::Timeout));
            if let Some(allowed) = answer.as_ref().ok().and_then(|a| a.allowance) {
                let told = (allowed, tokio::time::Instant::now());
                allowance = Some(told);
                self.allowances.lock().put(peer.peer_id, told);
            }
            match batch::settle(n, answer) {
                Settled::Unsupported => {
                    c.batch_fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        peer = %peer.peer_id,
                        "peer does not take batches; its records go as ADD_PROVIDER"
                    );
                    return Some(idx[from..].to_vec());
                }
                Settled::Later { why } => {
                    c.batches_sent.fetch_add(1, Ordering::Relaxed);
                    c.batch_records.fetch_add(n as u64, Ordering::Relaxed);
                    c.batches_deferred.fetch_add(1, Ordering::Relaxed);
                    deferrals += 1;
                    if allowance.is_some() && deferrals < batch::MAX_BATCH_DEFERRALS {
                        // The answer told the peer's allowance: the next turn waits for it.
                        tracing::debug!(peer = %peer.peer_id, records = n, %why, "batch deferred; paced by the peer's allowance");
                        continue;
                    }
                    let next = batch::defer(n, deferrals)
                        .filter(|&(_, wait)| tokio::time::Instant::now() + wait < until);
                    let Some((keys_next, wait)) = next else {
                        tracing::debug!(
                            peer = %peer.peer_id,
                            records = n,
                            %why,
                            deferrals,
                            "peer keeps answering later; its other records go to the next closest"
                        );
                        sent.dead = true;
                        return None;
                    };
                    tracing::debug!(
                        peer = %peer.peer_id,
                        records = n,
                        %why,
                        next = keys_next,
                        ?wait,
                        "batch deferred; sent again smaller"
                    );
                    max_keys = keys_next;
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Settled::Failed { why, again } => {
                    c.batches_sent.fetch_add(1, Ordering::Relaxed);
                    c.batch_records.fetch_add(n as u64, Ordering::Relaxed);
                    c.batches_failed.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    if again
                        && failures < self.config.max_peer_failures
                        && tokio::time::Instant::now() < until
                    {
                        tracing::debug!(peer = %peer.peer_id, records = n, %why, "batch failed; sent again");
                        continue;
                    }
                    tracing::debug!(
                        peer = %peer.peer_id,
                        records = n,
                        %why,
                        "batch failed; the peer's other records go to the next closest"
                    );
                    sent.dead = true;
                    return None;
                }
                Settled::Answered { stored, refused } => {
                    failures = 0;
                    deferrals = 0;
                    c.batches_sent.fetch_add(1, Ordering::Relaxed);
                    c.batch_records.fetch_add(n as u64, Ordering::Relaxed);
                    c.batch_stored
                        .fetch_add(stored.len() as u64, Ordering::Relaxed);
                    c.batch_refused
                        .fetch_add(refused.len() as u64, Ordering::Relaxed);
                    sent.done.extend(stored.into_iter().map(|j| part[j]));
                    sent.refused.extend(refused.into_iter().map(|j| part[j]));
                }
            }
            from += n;
        }
        None
    }

    /// Sends ADD_PROVIDER for `keys[idx]` to `peer` until `until`, adding the indexes
    /// delivered to `sent`, and giving the peer up on after too many failures in a row or
    /// when it is too slow.
    async fn send_add_providers(
        &self,
        peer: &PeerInfo,
        keys: &[WeakKey],
        idx: Vec<usize>,
        until: tokio::time::Instant,
        sent: &mut PeerSend,
    ) {
        let timeout = self.config.request_timeout;
        let parallel = self.config.sends_per_peer;
        let local = &self.parts.local;
        let network = &self.parts.network;
        let mut failures = 0u32;
        // A few rounds of records in flight at a time: what waits to be written stays small
        // (the transport holds each encoded), and a peer that stops taking records is given
        // up on after one request timeout.
        for part in idx.chunks(parallel * 2) {
            let records = part.iter().map(|&i| keys[i].key.to_bytes()).collect();
            let sends = network.add_providers(peer, local, records, parallel, timeout);
            let mut sends = std::pin::pin!(sends);
            loop {
                let by = until.min(tokio::time::Instant::now() + timeout);
                let (j, outcome) = match tokio::time::timeout_at(by, sends.next()).await {
                    Ok(Some(sent)) => sent,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::debug!(
                            peer = %peer.peer_id,
                            delivered = sent.done.len(),
                            "peer too slow for its budget; its other records go to the next closest"
                        );
                        sent.dead = true;
                        return;
                    }
                };
                let Some(&i) = part.get(j) else { continue };
                self.counters.add_provider.fetch_add(1, Ordering::Relaxed);
                if outcome.is_ok() {
                    sent.done.push(i);
                    // A loss now and then is not a dead peer: only failures in a row count.
                    failures = 0;
                } else {
                    self.counters
                        .add_provider_failed
                        .fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    if failures >= self.config.max_peer_failures {
                        sent.dead = true;
                        return;
                    }
                }
            }
        }
    }
}

/// What sending one peer its share of a page came to.
#[derive(Debug, Default)]
pub(super) struct PeerSend {
    /// The indexes of the keys delivered (written as ADD_PROVIDER, or answered `STORED`).
    pub(super) done: Vec<usize>,
    /// The indexes of the keys a batch answer refused (not stored, not to be sent again).
    pub(super) refused: Vec<usize>,
    /// The peer was given up on for the slice.
    pub(super) dead: bool,
}

#[derive(Debug, Default)]
pub(super) struct SliceOutcome {
    /// Per key: reached enough servers.
    pub(super) ok: Vec<bool>,
    /// Per key: the servers that hold it.
    pub(super) reached: Vec<Vec<PeerTag>>,
    pub(super) sent: u64,
    pub(super) send_failures: u64,
    /// Peers sent to (some more than once, over the passes).
    pub(super) peers_tried: u64,
    pub(super) answered: bool,
    /// The region's servers, and when they were learned.
    pub(super) exploration: Option<(Exploration, UnixSecs)>,
}

/// What a job did, over all its pages: only the failed keys are kept, and at most
/// [`MAX_RETRY_KEYS`] of them.
#[derive(Debug, Default)]
pub(super) struct JobOutcome {
    /// Keys sent.
    pub(super) keys: u64,
    /// Keys that reached too few servers.
    pub(super) failed: u64,
    /// The first of them, with the servers they reached.
    pub(super) weak: Vec<WeakKey>,
    /// More keys failed than `weak` holds.
    pub(super) weak_overflow: bool,
    /// Keys of the keystore not sent (the job stopped before them).
    pub(super) unsent: Unsent,
    pub(super) sent: u64,
    pub(super) send_failures: u64,
    /// Peers sent to (some more than once, over the passes).
    pub(super) peers_tried: u64,
    /// Over the keys sent, the servers that hold their record.
    pub(super) holders: u64,
    pub(super) answered: bool,
    /// The region's servers and when they were learned, reused for the next page.
    pub(super) exploration: Option<(Exploration, UnixSecs)>,
}

impl JobOutcome {
    /// Adds the outcome of sending `keys`.
    pub(super) fn absorb(&mut self, keys: &[WeakKey], mut page: SliceOutcome) {
        self.keys += keys.len() as u64;
        let reached = std::mem::take(&mut page.reached);
        for ((weak, ok), reached) in keys.iter().zip(&page.ok).zip(reached) {
            self.holders += reached.len() as u64;
            if !ok {
                self.failed += 1;
                if self.weak.len() < MAX_RETRY_KEYS {
                    self.weak.push(WeakKey {
                        key: weak.key,
                        reached,
                    });
                } else {
                    self.weak_overflow = true;
                }
            }
        }
        self.sent += page.sent;
        self.send_failures += page.send_failures;
        self.peers_tried += page.peers_tried;
        self.answered |= page.answered;
        if page.exploration.is_some() {
            self.exploration = page.exploration;
        }
    }
}
