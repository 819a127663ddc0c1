//! The [`Handler`]: one inbound request in, one response (or none) out.

use dht_proto::{
    InvalidSetting, Key, MessageType, Multiaddr, PeerId, PeerInfo, ProviderRecord, Record, Request,
    Response, UnixSecs, Validator,
    batch::{Allowance, BatchError, KeyStatus, ProvideBatch, ProvideBatchResponse},
    bound_addrs,
};
use std::collections::HashMap;
use std::net::IpAddr;

use dht_provider_store::{
    ProviderEntry, ProviderOutcome, ProviderStore, SourceGroup, StoreError, ValueStore, WriteTicket,
};
use dht_routing_table::{Direction, IpGroup, PeerEvent, RoutingTable};
use parking_lot::{Mutex, RwLock};

use crate::config::HandlerConfig;
use crate::error::HandlerError;
use crate::rate::RateLimiter;
use crate::time::format_rfc3339;
use crate::validator::NamespacedValidator;

/// Locks serialising PUT_VALUE's read-compare-write per key (by the key's last byte, as Go).
const PUT_LOCKS: usize = 256;

/// Who sent a request: the peer as the node knows it, whether it is a DHT server, and the IP
/// its connection comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The sender's peer id and the addresses it is known at.
    pub peer: PeerInfo,
    /// Whether the sender is a DHT server (identify lists `/ipfs/kad/1.0.0`); only servers
    /// are reported to the routing table, which refreshes them if it holds them and never
    /// adds them for sending a request.
    pub is_server: bool,
    /// The IP address the sender's connection comes from (`None` when the transport has
    /// none). Its /24 or /48 is the group its provider records are stored from, so that peer
    /// ids of one network cannot take every provider slot of a key
    /// ([`ProviderStore::add_inbound_provider`]).
    pub remote_ip: Option<IpAddr>,
}

impl Sender {
    /// A sender that is a DHT server.
    pub fn server(peer: PeerInfo) -> Self {
        Sender {
            peer,
            is_server: true,
            remote_ip: None,
        }
    }

    /// A sender that is a DHT client (not reported to the routing table).
    pub fn client(peer: PeerInfo) -> Self {
        Sender {
            peer,
            is_server: false,
            remote_ip: None,
        }
    }

    /// This sender, connected from `ip`.
    #[must_use]
    pub fn from_ip(mut self, ip: IpAddr) -> Self {
        self.remote_ip = Some(ip);
        self
    }

    /// The sender's peer id.
    pub fn peer_id(&self) -> &PeerId {
        &self.peer.peer_id
    }
}

/// The server side of the DHT: turns one inbound [`Request`] into a [`Response`].
///
/// Generic over the routing table, the provider store and the value store (one type may be
/// both stores, passed twice as `&S` or `Arc<S>`). `&self` everywhere and `Send + Sync` when
/// its parts are, so the node calls it from many tasks at once. It does no I/O beyond the
/// stores and reads no clock: `now` is a parameter.
///
/// ```
/// use dht_handler::{Handler, HandlerConfig, Sender};
/// use dht_proto::{Key, PeerId, PeerInfo, Request, Response};
/// use dht_provider_store::MemoryStore;
/// use dht_routing_table::{Direction, KBucketTable, ManualClock, PeerEvent, RoutingTable};
///
/// let local = PeerInfo::new(PeerId::random(), vec!["/ip4/192.0.2.1/tcp/4001".parse()?]);
/// let table = KBucketTable::new(local.key(), Default::default(), ManualClock::new(0));
/// let store = MemoryStore::new();
/// let handler = Handler::new(local, table, &store, &store, HandlerConfig::default())?;
///
/// let provider = PeerInfo::new(PeerId::random(), vec!["/ip4/198.51.100.7/tcp/4001".parse()?]);
/// let from = Sender::server(provider.clone());
/// let key = b"\x12\x20 thirty-two bytes of a sha256.".to_vec();
/// let now = 1_700_000_000;
///
/// // ADD_PROVIDER has no response.
/// let add = Request::AddProvider { key: key.clone(), providers: vec![provider.clone()] };
/// assert_eq!(handler.handle(&from, add, now)?, None);
///
/// // A request sent to us admits nobody to the routing table; once the provider has answered
/// // one of ours, GET_PROVIDERS from another peer finds it both as provider and as closer peer.
/// assert!(handler.table().is_empty());
/// handler.table().update(&provider, PeerEvent::Seen(Direction::Outbound));
/// let asker = Sender::client(PeerInfo::new(PeerId::random(), vec![]));
/// let Some(Response::GetProviders { providers, closer_peers, .. }) =
///     handler.handle(&asker, Request::GetProviders { key }, now + 1)?
/// else {
///     panic!("GET_PROVIDERS is answered");
/// };
/// assert_eq!(providers, vec![provider.clone()]);
/// assert_eq!(closer_peers, vec![provider]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Handler<T, P, V> {
    local: RwLock<PeerInfo>,
    table: T,
    providers: P,
    values: V,
    validator: Box<dyn Validator>,
    config: HandlerConfig,
    rate: Option<RateLimiter<PeerId>>,
    ip_rate: Option<RateLimiter<IpAddr>>,
    put_locks: Box<[Mutex<()>]>,
}

impl<T, P, V> std::fmt::Debug for Handler<T, P, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("local", &self.local.read().peer_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T: RoutingTable, P: ProviderStore, V: ValueStore> Handler<T, P, V> {
    /// A handler for the node `local` (its peer id and the addresses it listens on, returned
    /// when a peer looks for it), with the Amino DHT's validators
    /// ([`NamespacedValidator::new`]).
    ///
    /// # Errors
    /// [`InvalidSetting`] when a setting of `config` cannot work
    /// ([`HandlerConfig::validate`]).
    pub fn new(
        local: PeerInfo,
        table: T,
        providers: P,
        values: V,
        config: HandlerConfig,
    ) -> Result<Self, InvalidSetting> {
        config.validate()?;
        let rate = config
            .rate_limit
            .map(|limit| RateLimiter::new(limit, config.max_tracked_peers));
        let ip_rate = config
            .ip_rate_limit
            .map(|limit| RateLimiter::new(limit, config.max_tracked_ips));
        Ok(Handler {
            local: RwLock::new(local),
            table,
            providers,
            values,
            validator: Box::new(NamespacedValidator::new()),
            config,
            rate,
            ip_rate,
            put_locks: (0..PUT_LOCKS).map(|_| Mutex::new(())).collect(),
        })
    }

    /// This handler with another record validator (e.g. a [`NamespacedValidator`] with more
    /// namespaces).
    #[must_use]
    pub fn with_validator(mut self, validator: impl Validator + 'static) -> Self {
        self.validator = Box::new(validator);
        self
    }

    /// Replaces the addresses the local node is reachable at (as learnt from identify or
    /// AutoNAT).
    pub fn set_local_addrs(&self, addrs: Vec<Multiaddr>) {
        self.local.write().addrs = addrs;
    }

    /// The local node as the handler describes it.
    pub fn local(&self) -> PeerInfo {
        self.local.read().clone()
    }

    /// The routing table.
    pub fn table(&self) -> &T {
        &self.table
    }

    /// The provider store.
    pub fn provider_store(&self) -> &P {
        &self.providers
    }

    /// The value store.
    pub fn value_store(&self) -> &V {
        &self.values
    }

    /// The limits.
    pub fn config(&self) -> &HandlerConfig {
        &self.config
    }

    /// Handles `request` from `from`, received at wall time `now`.
    ///
    /// `Ok(None)` for ADD_PROVIDER (no response is sent), `Ok(Some(_))` for the five others.
    /// Any `Err` means: close the stream; nothing was stored.
    ///
    /// In order: the sender's rate is checked, that of its peer id
    /// ([`HandlerError::RateLimited`]) and that of its IP ([`HandlerError::IpRateLimited`],
    /// unless the IP is loopback and [`HandlerConfig::rate_limit_loopback`] is off); a sender that
    /// is a server is reported to the routing table as
    /// [`PeerEvent::Seen`]`(`[`Direction::Inbound`]`)`, which refreshes a peer the table holds
    /// and adds none; the request is checked and answered.
    pub fn handle(
        &self,
        from: &Sender,
        request: Request,
        now: UnixSecs,
    ) -> Result<Option<Response>, HandlerError> {
        let rpc = request.message_type();
        let result = self.dispatch(from, request, now);
        if let Err(err) = &result {
            tracing::debug!(peer = %from.peer.peer_id, %rpc, %err, "request refused");
        }
        result
    }

    /// Handles a batched provide (`/amino-dht-rs/provide-batch/1.0.0`,
    /// `docs/specs/provide-batch.md`) from `from`, received at wall time `now`, and returns
    /// the answer to send.
    ///
    /// Validated as one ADD_PROVIDER per key with the batch's provider entry:
    /// 1. the sender's rate limits (of its peer id, then of its IP, as [`handle`](Self::handle))
    ///    are charged one request per [`HandlerConfig::batch_keys_per_request`] keys (3),
    ///    rounded up, all or none: [`BatchError::RateLimited`];
    /// 2. the provider must be the sender: [`BatchError::ProviderNotSender`];
    /// 3. its addresses are bounded as ADD_PROVIDER's (the first
    ///    [`HandlerConfig::max_provider_addrs`] kept, then dialable and within the byte
    ///    limits); none left: [`BatchError::NoAddresses`];
    /// 4. each key is checked alone (1 to [`HandlerConfig::max_provider_key_len`] bytes):
    ///    [`KeyStatus::InvalidKey`] for that key, the others go on.
    ///
    /// The accepted keys are handed to the store as **one** durable write
    /// ([`ProviderStore::submit_provider_entries`]), from the group of the sender's IP when
    /// known, and this returns only once every record answered [`KeyStatus::Stored`] is
    /// durable; it blocks for that long (call it where blocking is allowed, or use
    /// [`submit_batch`](Self::submit_batch), which does not wait). A key listed twice is stored once
    /// and answered at both places. A store that cannot write gives
    /// [`BatchError::Unavailable`] and nothing answered as stored; a later batch is tried
    /// again as usual.
    pub fn provide_batch(
        &self,
        from: &Sender,
        batch: ProvideBatch,
        now: UnixSecs,
    ) -> ProvideBatchResponse {
        self.submit_batch(from, batch, now).wait()
    }

    /// [`Handler::provide_batch`] without waiting for the store: the batch is checked and
    /// charged, and its records handed to the store
    /// ([`ProviderStore::submit_provider_entries`]), here; the answer is a future, ready at
    /// once for a refused batch, else once every record it answers as stored is durable. A
    /// store that groups its writes ([`GroupWriter`](dht_provider_store::GroupWriter)) takes
    /// the records without blocking, so a server on an async runtime needs no thread per
    /// batch while the disk syncs; another store writes them here (this call may block).
    pub fn submit_batch(&self, from: &Sender, batch: ProvideBatch, now: UnixSecs) -> BatchAnswer {
        let mut answer = self.check_and_store_batch(from, batch, now);
        answer.peer = Some(from.peer.peer_id);
        answer
    }

    fn check_and_store_batch(
        &self,
        from: &Sender,
        batch: ProvideBatch,
        now: UnixSecs,
    ) -> BatchAnswer {
        let sender = from.peer_id();
        // Both limits are charged by the keys (a token pays for `batch_keys_per_request`
        // of them), all or none; the answer tells the sender the smaller of its two
        // allowances, in keys, so that it can pace its next batches.
        let per = u64::from(self.config.batch_keys_per_request.max(1));
        let requests = u64::try_from(batch.keys.len())
            .unwrap_or(u64::MAX)
            .div_ceil(per);
        let ip = from
            .remote_ip
            .filter(|ip| self.config.rate_limit_loopback || !ip.is_loopback())
            .map(crate::rate::ip_bucket);
        let ip_rate = self.ip_rate.as_ref().zip(ip);
        let mut allowance: Option<Allowance> = None;
        if let Some((rate, ip)) = ip_rate {
            let tokens = rate.available(&ip, now);
            if tokens < requests {
                if let Some(peer_rate) = &self.rate {
                    let peer_tokens = peer_rate.available(sender, now);
                    allowance = tighter(allowance, peer_rate, peer_tokens, per);
                }
                return BatchAnswer::now(
                    ProvideBatchResponse::refused(BatchError::RateLimited)
                        .with_allowance(tighter(allowance, rate, tokens, per)),
                );
            }
        }
        if let Some(rate) = &self.rate {
            match rate.spend(sender, requests, now) {
                Ok(left) => allowance = tighter(allowance, rate, left, per),
                Err(tokens) => {
                    if let Some((ip_rate, ip)) = ip_rate {
                        allowance = tighter(allowance, ip_rate, ip_rate.available(&ip, now), per);
                    }
                    return BatchAnswer::now(
                        ProvideBatchResponse::refused(BatchError::RateLimited)
                            .with_allowance(tighter(allowance, rate, tokens, per)),
                    );
                }
            }
        }
        if let Some((rate, ip)) = ip_rate {
            match rate.spend(&ip, requests, now) {
                Ok(left) => allowance = tighter(allowance, rate, left, per),
                // Spent by a concurrent request since it was looked at.
                Err(tokens) => {
                    return BatchAnswer::now(
                        ProvideBatchResponse::refused(BatchError::RateLimited)
                            .with_allowance(tighter(allowance, rate, tokens, per)),
                    );
                }
            }
        }
        let mut answer = self.store_batch(from, batch, now);
        answer.allowance = allowance;
        answer
    }

    /// Validates a batch whose rate was charged, and hands its records to the store.
    fn store_batch(&self, from: &Sender, batch: ProvideBatch, now: UnixSecs) -> BatchAnswer {
        let sender = from.peer_id();
        if from.is_server {
            self.table
                .update(&from.peer, PeerEvent::Seen(Direction::Inbound));
        }
        let ProvideBatch { provider, keys } = batch;
        if provider.peer_id != *sender {
            return BatchAnswer::now(ProvideBatchResponse::refused(BatchError::ProviderNotSender));
        }
        let mut addrs = provider.addrs;
        addrs.truncate(self.config.max_provider_addrs);
        let addrs = self.bound_provider_addrs(addrs);
        if addrs.is_empty() {
            return BatchAnswer::now(ProvideBatchResponse::refused(BatchError::NoAddresses));
        }

        // Per key: refused alone, or the index of its record (a key listed twice shares one).
        let mut slots: Vec<Result<usize, KeyStatus>> = Vec::with_capacity(keys.len());
        let mut records: Vec<ProviderRecord> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        for key in keys {
            if self
                .check_key(
                    MessageType::AddProvider,
                    &key,
                    self.config.max_provider_key_len,
                )
                .is_err()
            {
                slots.push(Err(KeyStatus::InvalidKey));
                continue;
            }
            let next = records.len();
            let i = *index.entry(key.clone()).or_insert(next);
            if i == next {
                records.push(ProviderRecord {
                    key,
                    provider: *sender,
                    addrs: addrs.clone(),
                    received_at: now,
                });
            }
            slots.push(Ok(i));
        }
        drop(index);

        let group = from.remote_ip.map(source_group);
        let entries: Vec<ProviderEntry<'_>> = records
            .iter()
            .map(|record| ProviderEntry { record, group })
            .collect();
        let written = if entries.is_empty() {
            WriteTicket::ready(Ok(Vec::new()))
        } else {
            self.providers.submit_provider_entries(&entries, true)
        };
        BatchAnswer {
            state: BatchState::Writing {
                written,
                slots,
                records: records.len(),
            },
            allowance: None,
            peer: None,
        }
    }

    fn dispatch(
        &self,
        from: &Sender,
        request: Request,
        now: UnixSecs,
    ) -> Result<Option<Response>, HandlerError> {
        let sender = from.peer_id();
        if let Some(rate) = &self.rate
            && !rate.allow(sender, now)
        {
            return Err(HandlerError::RateLimited { peer: *sender });
        }
        if let (Some(rate), Some(ip)) = (&self.ip_rate, from.remote_ip)
            && (self.config.rate_limit_loopback || !ip.is_loopback())
        {
            let ip = crate::rate::ip_bucket(ip);
            if !rate.allow(&ip, now) {
                return Err(HandlerError::IpRateLimited { ip });
            }
        }
        if from.is_server {
            self.table
                .update(&from.peer, PeerEvent::Seen(Direction::Inbound));
        }
        match request {
            Request::FindNode { key } => self.find_node(sender, key).map(Some),
            Request::GetProviders { key } => self.get_providers(sender, key, now).map(Some),
            Request::AddProvider { key, providers } => {
                self.add_provider(from, key, providers, now).map(|()| None)
            }
            Request::GetValue { key } => self.get_value(sender, key, now).map(Some),
            Request::PutValue { record } => self.put_value(record, now).map(Some),
            Request::Ping => Ok(Some(Response::Ping)),
        }
    }

    fn check_key(&self, rpc: MessageType, key: &[u8], max: usize) -> Result<(), HandlerError> {
        if key.is_empty() {
            return Err(HandlerError::EmptyKey { rpc });
        }
        if key.len() > max {
            return Err(HandlerError::KeyTooLong {
                rpc,
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    /// Up to k peers closest to `sha256(key)`, never the requester nor ourselves, only peers
    /// with an address (as Go filters them).
    fn closer_peers(&self, key: &[u8], requester: &PeerId, local: &PeerId) -> Vec<PeerInfo> {
        let k = self.config.closer_peers;
        let mut peers = self
            .table
            .closest_peers(&Key::hash(key), k.saturating_add(2));
        if self.config.public_addrs_only {
            for p in &mut peers {
                p.addrs.retain(is_public_addr);
            }
        }
        peers.retain(|p| p.peer_id != *requester && p.peer_id != *local && !p.addrs.is_empty());
        peers.truncate(k);
        peers
    }

    /// FIND_NODE: the k closest known peers. As go-libp2p-kad-dht, a request for our own peer
    /// id is answered with ourselves first (how a peer learns our addresses), unless the
    /// requester is us or we know no address of ours.
    fn find_node(&self, from: &PeerId, key: Vec<u8>) -> Result<Response, HandlerError> {
        self.check_key(MessageType::FindNode, &key, self.config.max_key_len)?;
        let local = self.local();
        let mut closer_peers = self.closer_peers(&key, from, &local.peer_id);
        if key == local.peer_id.to_bytes()
            && *from != local.peer_id
            && !local.addrs.is_empty()
            && self.config.closer_peers > 0
        {
            closer_peers.truncate(self.config.closer_peers - 1);
            closer_peers.insert(0, local);
        }
        Ok(Response::FindNode { closer_peers })
    }

    /// GET_PROVIDERS: key of 1 to 80 bytes (Go checks both provider RPCs alike); the stored
    /// providers (addresses dropped after 24 h by the store) and up to k closer peers.
    fn get_providers(
        &self,
        from: &PeerId,
        key: Vec<u8>,
        now: UnixSecs,
    ) -> Result<Response, HandlerError> {
        self.check_key(
            MessageType::GetProviders,
            &key,
            self.config.max_provider_key_len,
        )?;
        // Bounded again on the way out: whatever the store holds (records of an older
        // version, another writer), the answer fits a message.
        let providers = self
            .providers
            .providers(&key, self.config.max_providers_returned, now)?
            .into_iter()
            .map(|r| PeerInfo::new(r.provider, self.served_provider_addrs(r.addrs)))
            .collect();
        let local = self.local.read().peer_id;
        let closer_peers = self.closer_peers(&key, from, &local);
        Ok(Response::GetProviders {
            key,
            providers,
            closer_peers,
        })
    }

    /// The addresses of a stored provider record that an answer carries: bounded, and public
    /// only when [`HandlerConfig::public_addrs_only`] is set.
    fn served_provider_addrs(&self, addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
        let mut addrs = self.bound_provider_addrs(addrs);
        if self.config.public_addrs_only {
            addrs.retain(is_public_addr);
        }
        addrs
    }

    /// The addresses of a provider record worth storing and serving: dialable, each within
    /// `max_provider_addr_bytes`, together within `max_provider_record_bytes`.
    fn bound_provider_addrs(&self, addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
        bound_addrs(
            addrs,
            self.config.max_provider_addr_bytes,
            self.config.max_provider_record_bytes,
        )
    }

    /// ADD_PROVIDER: key of 1 to 80 bytes; only entries naming the sender count (Go ignores
    /// the others), their addresses merged into one record and bounded (see
    /// [`HandlerConfig::max_provider_record_bytes`]). An entry without a usable address
    /// counts for nothing. With no address left, the request is refused: as
    /// [`HandlerError::ProviderNotSender`] if it named another peer, else as
    /// [`HandlerError::NoValidProviderEntries`].
    ///
    /// The record is stored from the group of the sender's IP (its /24 or /48), when known.
    fn add_provider(
        &self,
        sender: &Sender,
        key: Vec<u8>,
        providers: Vec<PeerInfo>,
        now: UnixSecs,
    ) -> Result<(), HandlerError> {
        let from = sender.peer_id();
        self.check_key(
            MessageType::AddProvider,
            &key,
            self.config.max_provider_key_len,
        )?;
        let max = self.config.max_provider_addrs;
        let mut addrs: Vec<Multiaddr> = Vec::new();
        let mut seen = 0usize;
        let mut foreign = None;
        for entry in providers {
            if entry.peer_id != *from {
                foreign.get_or_insert(entry.peer_id);
                continue;
            }
            seen = seen.saturating_add(entry.addrs.len());
            if seen > max {
                return Err(HandlerError::TooManyAddresses { len: seen, max });
            }
            addrs.extend(entry.addrs);
        }
        let addrs = self.bound_provider_addrs(addrs);
        if addrs.is_empty() {
            return Err(match foreign {
                Some(provider) => HandlerError::ProviderNotSender {
                    provider,
                    sender: *from,
                },
                None => HandlerError::NoValidProviderEntries,
            });
        }
        if let Some(other) = foreign {
            tracing::debug!(sender = %from, %other, "ignoring provider entries of other peers");
        }
        // No response acknowledges it: stored without waiting for an fsync.
        let record = ProviderRecord {
            key,
            provider: *from,
            addrs,
            received_at: now,
        };
        match sender.remote_ip {
            Some(ip) => self
                .providers
                .add_inbound_provider(&record, source_group(ip))?,
            None => self
                .providers
                .add_providers_unsynced(std::slice::from_ref(&record))?,
        }
        Ok(())
    }

    /// GET_VALUE: the stored record if it is still valid at `now` (re-validated on every
    /// read: an IPNS record past its EOL is not served), and up to k closer peers. An invalid
    /// stored record is left for the store's expiry (the store has no delete) and replaced by
    /// the next valid PUT_VALUE.
    fn get_value(
        &self,
        from: &PeerId,
        key: Vec<u8>,
        now: UnixSecs,
    ) -> Result<Response, HandlerError> {
        self.check_key(MessageType::GetValue, &key, self.config.max_key_len)?;
        let record = self.valid_stored(&key, now)?;
        let local = self.local.read().peer_id;
        let closer_peers = self.closer_peers(&key, from, &local);
        Ok(Response::GetValue {
            key,
            record,
            closer_peers,
        })
    }

    /// The stored record of `key` if it validates at `now`.
    fn valid_stored(&self, key: &[u8], now: UnixSecs) -> Result<Option<Record>, HandlerError> {
        let Some((record, _)) = self.values.get_value(key, now)? else {
            return Ok(None);
        };
        match self.validator.validate(key, &record.value, now) {
            Ok(()) => Ok(Some(record)),
            Err(err) => {
                tracing::debug!(%err, "stored record no longer valid; not served");
                Ok(None)
            }
        }
    }

    /// PUT_VALUE: the value at most `max_value_size`; valid per its namespace's validator; if
    /// a valid record is stored, the validator's `select` must prefer the new one (else
    /// [`HandlerError::WorseRecord`], as Go refuses it); stored with `timeReceived` = `now`,
    /// and echoed.
    fn put_value(&self, record: Record, now: UnixSecs) -> Result<Response, HandlerError> {
        let Record { key, value, .. } = record;
        self.check_key(MessageType::PutValue, &key, self.config.max_key_len)?;
        if value.len() > self.config.max_value_size {
            return Err(HandlerError::ValueTooLarge {
                len: value.len(),
                max: self.config.max_value_size,
            });
        }
        self.validator.validate(&key, &value, now)?;

        let lock = key.last().map_or(0, |&b| usize::from(b)) % self.put_locks.len().max(1);
        let _guard = self.put_locks.get(lock).map(|m| m.lock());
        if let Some(existing) = self.valid_stored(&key, now)?
            && existing.value != value
        {
            let best = self
                .validator
                .select(&key, &[value.as_slice(), existing.value.as_slice()])?;
            if best != 0 {
                return Err(HandlerError::WorseRecord);
            }
        }
        let stored = Record {
            key,
            value,
            time_received: format_rfc3339(now),
        };
        self.values.put_value(&stored, now)?;
        Ok(Response::PutValue { record: stored })
    }
}

/// The group a provider record from `ip` is stored from: its /24 or /48 ([`IpGroup`]), with
/// the address family told apart.
pub(crate) fn source_group(ip: IpAddr) -> SourceGroup {
    match IpGroup::of(ip) {
        IpGroup::V4([a, b, c]) => SourceGroup::from_bytes(&[4, a, b, c]),
        IpGroup::V6([a, b, c, d, e, f]) => SourceGroup::from_bytes(&[6, a, b, c, d, e, f]),
    }
}

/// Whether `addr` may be served or dialled on the internet, judged by its first IP or DNS
/// component (an `/ip6zone` before it is skipped):
/// - an IP must be routable ([`dht_routing_table::is_public_ip`]);
/// - a DNS name must not be `localhost`, nor under `.localhost`, `.local`, `.home.arpa`,
///   `.test`, `.invalid`, `.in-addr.arpa` or `.ip6.arpa` (names reserved for one machine
///   or one network, or that never resolve), in any case, with or without a final dot;
/// - any other address (`/unix`, `/memory`, …) is not public.
///
/// These are go-multiaddr's `IsPublicAddr` rules, with DNS names compared without regard
/// to case.
///
/// ```
/// use dht_handler::is_public_addr;
/// for (addr, public) in [
///     ("/ip4/8.8.8.8/tcp/4001", true),
///     ("/dns4/node.example.org/tcp/4001", true),
///     ("/ip4/127.0.0.1/tcp/4001", false),
///     ("/ip4/10.1.2.3/tcp/4001", false),
///     ("/ip4/203.0.113.7/tcp/4001", false),
///     ("/ip6/fe80::1/tcp/4001", false),
///     ("/ip6zone/eth0/ip6/fe80::1/tcp/4001", false),
///     ("/dns4/printer.local/tcp/4001", false),
///     ("/dns/LocalHost./tcp/4001", false),
///     ("/unix/tmp%2Fkad.sock", false),
/// ] {
///     assert_eq!(is_public_addr(&addr.parse()?), public, "{addr}");
/// }
/// # Ok::<(), dht_proto::multiaddr::Error>(())
/// ```
pub fn is_public_addr(addr: &Multiaddr) -> bool {
    use dht_proto::multiaddr::Protocol;
    match addr.iter().find(|p| !matches!(p, Protocol::Ip6zone(_))) {
        Some(Protocol::Ip4(ip)) => dht_routing_table::is_public_ip(IpAddr::V4(ip)),
        Some(Protocol::Ip6(ip)) => dht_routing_table::is_public_ip(IpAddr::V6(ip)),
        Some(
            Protocol::Dns(name)
            | Protocol::Dns4(name)
            | Protocol::Dns6(name)
            | Protocol::Dnsaddr(name),
        ) => is_public_name(&name),
        _ => false,
    }
}

/// Whether a DNS name may name a host on the internet (see [`is_public_addr`]).
fn is_public_name(name: &str) -> bool {
    const NOT_PUBLIC: [&str; 8] = [
        "localhost",
        "local",
        "home.arpa",
        "test",
        "invalid",
        "in-addr.arpa",
        "ip6.arpa",
        // (a name made only of dots, or empty, is no host either)
        "",
    ];
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    !NOT_PUBLIC.iter().any(|suffix| {
        name == *suffix
            || (!suffix.is_empty()
                && name
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.')))
    })
}

/// The answer to a batch of the batched provide protocol, to come
/// ([`Handler::submit_batch`]): a future, or [`BatchAnswer::wait`] to block for it.
#[derive(Debug)]
#[must_use = "the sender waits for this answer"]
pub struct BatchAnswer {
    state: BatchState,
    allowance: Option<Allowance>,
    /// The sender, for the log of a refusal.
    peer: Option<PeerId>,
}

#[derive(Debug)]
enum BatchState {
    /// Refused, or answered already.
    Now(Option<ProvideBatchResponse>),
    /// The store writes the records; then each key's slot gives its status.
    Writing {
        written: WriteTicket,
        slots: Vec<Result<usize, KeyStatus>>,
        records: usize,
    },
}

impl BatchAnswer {
    fn now(response: ProvideBatchResponse) -> Self {
        BatchAnswer {
            state: BatchState::Now(Some(response)),
            allowance: None,
            peer: None,
        }
    }

    /// Blocks the calling thread until the answer (not from an async task: `.await` it
    /// there).
    pub fn wait(self) -> ProvideBatchResponse {
        let BatchAnswer {
            state,
            allowance,
            peer,
        } = self;
        let response = match state {
            BatchState::Now(response) => response.unwrap_or_else(unavailable),
            BatchState::Writing {
                written,
                slots,
                records,
            } => statuses(written.wait(), &slots, records),
        };
        finish(allowance, peer, response)
    }
}

/// `response` with the sender's `allowance`, logged if refused.
fn finish(
    allowance: Option<Allowance>,
    peer: Option<PeerId>,
    response: ProvideBatchResponse,
) -> ProvideBatchResponse {
    if let Some(error) = response.error {
        tracing::debug!(?peer, ?error, "provide batch refused");
    }
    if response.allowance.is_some() {
        response
    } else {
        response.with_allowance(allowance)
    }
}

impl std::future::Future for BatchAnswer {
    type Output = ProvideBatchResponse;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<ProvideBatchResponse> {
        let this = &mut *self;
        let response = match &mut this.state {
            BatchState::Now(response) => response.take().unwrap_or_else(unavailable),
            BatchState::Writing {
                written,
                slots,
                records,
            } => match std::pin::Pin::new(written).poll(cx) {
                std::task::Poll::Ready(outcomes) => statuses(outcomes, slots, *records),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            },
        };
        this.state = BatchState::Now(None);
        std::task::Poll::Ready(finish(this.allowance, this.peer, response))
    }
}

/// The answer polled again after it was given: the batch is not answered twice.
fn unavailable() -> ProvideBatchResponse {
    ProvideBatchResponse::refused(BatchError::Unavailable)
}

/// The answer of a batch whose `records` were written with `outcomes`, each key by its slot.
fn statuses(
    outcomes: Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError>,
    slots: &[Result<usize, KeyStatus>],
    records: usize,
) -> ProvideBatchResponse {
    let outcomes = match outcomes {
        Ok(outcomes) if outcomes.len() == records => outcomes,
        Ok(outcomes) => {
            tracing::warn!(
                records,
                outcomes = outcomes.len(),
                "provider store answered a batch with the wrong number of outcomes"
            );
            return unavailable();
        }
        Err(err) => {
            tracing::warn!(%err, records, "provide batch not stored");
            return unavailable();
        }
    };
    let mut statuses = Vec::with_capacity(slots.len());
    for slot in slots {
        let status = match slot {
            Err(status) => *status,
            Ok(i) => match outcomes.get(*i) {
                Some(Ok(ProviderOutcome::Stored)) => KeyStatus::Stored,
                Some(Ok(ProviderOutcome::Full)) => KeyStatus::Full,
                Some(Err(StoreError::InvalidRecord { .. })) => KeyStatus::InvalidKey,
                // The store could not write this record (one commit holds them all, so in
                // practice none was written): nothing is answered as stored.
                Some(Err(err)) => {
                    tracing::warn!(%err, "provide batch not stored");
                    return unavailable();
                }
                None => return unavailable(),
            },
        };
        statuses.push(status);
    }
    ProvideBatchResponse::answered(statuses)
}

/// `allowance` narrowed by a limiter holding `tokens` for the sender, each worth `per` keys:
/// the smaller of each figure.
fn tighter<K: std::hash::Hash + Eq + Copy>(
    allowance: Option<Allowance>,
    rate: &crate::rate::RateLimiter<K>,
    tokens: u64,
    per: u64,
) -> Option<Allowance> {
    let clamp = |v: u64| u32::try_from(v.saturating_mul(per)).unwrap_or(u32::MAX);
    let this = Allowance {
        keys: clamp(tokens),
        per_second: clamp(rate.rate()),
        burst: clamp(rate.capacity()),
    };
    Some(match allowance {
        None => this,
        Some(a) => Allowance {
            keys: a.keys.min(this.keys),
            per_second: a.per_second.min(this.per_second),
            burst: a.burst.min(this.burst),
        },
    })
}
