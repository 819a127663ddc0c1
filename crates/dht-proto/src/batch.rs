//! The batched provide protocol, `/amino-dht-rs/provide-batch/1.0.0`
//! (`docs/specs/provide-batch.md`): the provider's peer id and addresses once, then many keys;
//! the server answers per key, once the stored records are durable.
//!
//! ```text
//! message ProvideBatch {
//!   message Peer { bytes id = 1; repeated bytes addrs = 2; }
//!   Peer provider = 1; repeated bytes keys = 2; KeyRun run = 3;
//!   message KeyRun { bytes prefix = 1; uint32 suffix_len = 2; bytes suffixes = 3; }
//! }
//! message ProvideBatchResponse {
//!   repeated KeyStatus statuses = 1 [packed = true]; BatchError error = 2;
//!   Allowance allowance = 3; uint32 stored_first = 4;
//! }
//! message Allowance { uint32 keys = 1; uint32 per_second = 2; uint32 burst = 3; }
//! ```
//!
//! Framing is that of `/ipfs/kad/1.0.0` (an unsigned-varint length, then the body). Encoding
//! writes fields in field-number order and omits proto3 defaults, as [`crate::wire`] does;
//! decoding skips unknown fields and refuses, as a typed [`BatchCodecError`], whatever breaks
//! the spec's limits ([`MAX_BATCH_KEYS`], [`MAX_BATCH_KEY_LEN`], [`MAX_BATCH_MESSAGE_SIZE`]).

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    pb::{
        MAX_VARINT_LEN, PbError, Reader, WT_LEN, WT_VARINT, expect_wt, len_field, put_bytes,
        put_tag, put_varint, varint_len, varint_step,
    },
    peer::{Multiaddr, PeerId, PeerInfo},
};

/// The protocol id of the batched provide protocol.
pub const PROVIDE_BATCH_PROTOCOL: &str = "/amino-dht-rs/provide-batch/1.0.0";

/// The most keys one [`ProvideBatch`] may carry: 8,192.
pub const MAX_BATCH_KEYS: usize = 8192;

/// The longest key of a batch, in bytes: 80 (as ADD_PROVIDER's in go-libp2p-kad-dht).
pub const MAX_BATCH_KEY_LEN: usize = 80;

/// The largest message body of the protocol, either direction: 1 MiB.
pub const MAX_BATCH_MESSAGE_SIZE: usize = 1 << 20;

/// How many addresses of the provider decoding keeps (the rest are skipped).
pub const MAX_BATCH_PROVIDER_ADDRS: usize = 32;

/// How much of a body buffer is reserved before its bytes arrive.
const INITIAL_BODY_CAPACITY: u64 = 4096;

/// A batch of provider announcements: `provider` provides every key of `keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvideBatch {
    /// The provider: its peer id (which must be the sender's) and its addresses.
    pub provider: PeerInfo,
    /// The DHT keys provided (for content, multihash bytes), 1 to [`MAX_BATCH_KEYS`], each of
    /// 1 to [`MAX_BATCH_KEY_LEN`] bytes.
    pub keys: Vec<Vec<u8>>,
}

/// What the server did with one key of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// Stored (or refreshed), and durable.
    Stored,
    /// Not stored: the key holds as many providers as the server keeps.
    Full,
    /// Not stored: the server's key rules refuse the key.
    InvalidKey,
    /// A value this implementation does not know; read as not stored.
    Unknown(u64),
}

impl KeyStatus {
    /// The status of a wire value.
    pub const fn from_wire(v: u64) -> Self {
        match v {
            0 => KeyStatus::Stored,
            1 => KeyStatus::Full,
            2 => KeyStatus::InvalidKey,
            other => KeyStatus::Unknown(other),
        }
    }

    /// The wire value.
    pub const fn to_wire(self) -> u64 {
        match self {
            KeyStatus::Stored => 0,
            KeyStatus::Full => 1,
            KeyStatus::InvalidKey => 2,
            KeyStatus::Unknown(v) => v,
        }
    }

    /// Whether the record is stored.
    pub const fn is_stored(self) -> bool {
        matches!(self, KeyStatus::Stored)
    }
}

/// Why a server refused a whole batch (nothing of it was stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchError {
    /// The provider named is not the peer that sent the batch.
    ProviderNotSender,
    /// No usable address of the provider was left.
    NoAddresses,
    /// The sender sent more than the server takes now.
    RateLimited,
    /// The server cannot write now (store error, disk full, shutting down); try later.
    Unavailable,
    /// A value this implementation does not know; read as [`BatchError::Unavailable`].
    Unknown(u64),
}

impl BatchError {
    /// The error of a wire value; `None` for 0 (`NONE`).
    pub const fn from_wire(v: u64) -> Option<Self> {
        Some(match v {
            0 => return None,
            1 => BatchError::ProviderNotSender,
            2 => BatchError::NoAddresses,
            3 => BatchError::RateLimited,
            4 => BatchError::Unavailable,
            other => BatchError::Unknown(other),
        })
    }

    /// The wire value.
    pub const fn to_wire(self) -> u64 {
        match self {
            BatchError::ProviderNotSender => 1,
            BatchError::NoAddresses => 2,
            BatchError::RateLimited => 3,
            BatchError::Unavailable => 4,
            BatchError::Unknown(v) => v,
        }
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::ProviderNotSender => f.write_str("the provider is not the sender"),
            BatchError::NoAddresses => f.write_str("no usable provider address"),
            BatchError::RateLimited => f.write_str("rate limited"),
            BatchError::Unavailable => f.write_str("the server cannot write now"),
            BatchError::Unknown(v) => write!(f, "unknown batch error {v}"),
        }
    }
}

/// The server's answer to a [`ProvideBatch`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvideBatchResponse {
    /// One status per key of the batch, in its order (empty when `error` is set).
    pub statuses: Vec<KeyStatus>,
    /// Set when the whole batch was refused.
    pub error: Option<BatchError>,
    /// The sender's rate limit as the server sees it after this batch, where the server
    /// limits the rate: what a client needs to size and pace its next batches so that none
    /// is refused (`RATE_LIMITED`) and sent twice.
    pub allowance: Option<Allowance>,
}

/// A sender's rate limit, as a server tells it with each answer: keys the sender may send
/// now, and how that number grows. A server limiting both per peer and per network sends the
/// smaller of each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Allowance {
    /// Keys the sender may send now (after the batch answered).
    pub keys: u32,
    /// Keys a second that `keys` grows by.
    pub per_second: u32,
    /// The most `keys` grows to: a batch of more keys is never allowed.
    pub burst: u32,
}

impl ProvideBatchResponse {
    /// An answer refusing the whole batch.
    pub fn refused(error: BatchError) -> Self {
        ProvideBatchResponse {
            statuses: Vec::new(),
            error: Some(error),
            allowance: None,
        }
    }

    /// An answer with one status per key.
    pub fn answered(statuses: Vec<KeyStatus>) -> Self {
        ProvideBatchResponse {
            statuses,
            error: None,
            allowance: None,
        }
    }

    /// The same answer, telling the sender its `allowance`.
    pub fn with_allowance(mut self, allowance: Option<Allowance>) -> Self {
        self.allowance = allowance;
        self
    }

    /// Whether this is a valid answer to a batch of `keys` keys: refused as a whole, or one
    /// status per key.
    pub fn answers(&self, keys: usize) -> bool {
        self.error.is_some() || self.statuses.len() == keys
    }
}

/// What can go wrong reading or writing a message of the batched provide protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchCodecError {
    /// The body is longer than the limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// The announced (or, when encoding, actual) length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The input ended in the middle of a message.
    #[error("message truncated")]
    Truncated,
    /// More keys (or statuses) than the limit.
    #[error("{len} keys exceed the limit of {max}")]
    TooManyKeys {
        /// How many were found (counting stops one past the limit).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A key is longer than [`MAX_BATCH_KEY_LEN`].
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A key is empty.
    #[error("empty key")]
    EmptyKey,
    /// The batch holds no key.
    #[error("batch without keys")]
    NoKeys,
    /// The batch names no provider, or one whose peer id does not parse.
    #[error("batch without a valid provider")]
    NoProvider,
    /// The bytes are not a valid message of the schema.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads and writes the messages of the batched provide protocol within the spec's limits.
///
/// ```
/// use dht_proto::batch::{BatchCodec, ProvideBatch};
/// use dht_proto::{PeerId, PeerInfo};
/// let codec = BatchCodec::default();
/// let batch = ProvideBatch {
///     provider: PeerInfo::new(PeerId::random(), vec!["/ip4/192.0.2.1/tcp/4001".parse()?]),
///     keys: vec![b"key one".to_vec(), b"key two".to_vec()],
/// };
/// let mut buf = Vec::new();
/// codec.encode_request(&batch, &mut buf)?;
/// let (decoded, used) = codec.decode_request(&buf)?.expect("a whole frame");
/// assert_eq!((decoded, used), (batch, buf.len()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchCodec {
    max_keys: usize,
    max_message_size: usize,
}

impl Default for BatchCodec {
    fn default() -> Self {
        BatchCodec {
            max_keys: MAX_BATCH_KEYS,
            max_message_size: MAX_BATCH_MESSAGE_SIZE,
        }
    }
}

impl BatchCodec {
    /// The same codec taking at most `n` keys per batch (a server may take fewer than the
    /// spec's [`MAX_BATCH_KEYS`]; more is clamped to it).
    #[must_use]
    pub const fn with_max_keys(mut self, n: usize) -> Self {
        self.max_keys = if n < MAX_BATCH_KEYS {
            n
        } else {
            MAX_BATCH_KEYS
        };
        self
    }

    /// The most keys per batch this codec reads or writes.
    pub const fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Appends `batch` as one length-prefixed frame to `out`; refuses a batch the limits
    /// refuse (so a peer never receives one it must reject).
    pub fn encode_request(
        &self,
        batch: &ProvideBatch,
        out: &mut Vec<u8>,
    ) -> Result<(), BatchCodecError> {
        self.check_keys(batch.keys.len(), batch.keys.iter().map(Vec::len))?;
        let mut body = Vec::new();
        encode_request_body(batch, &mut body);
        self.frame(&body, out)
    }

    /// Appends `response` as one length-prefixed frame to `out`.
    pub fn encode_response(
        &self,
        response: &ProvideBatchResponse,
        out: &mut Vec<u8>,
    ) -> Result<(), BatchCodecError> {
        if response.statuses.len() > self.max_keys {
            return Err(BatchCodecError::TooManyKeys {
                len: response.statuses.len(),
                max: self.max_keys,
            });
        }
        let mut body = Vec::new();
        encode_response_body(response, &mut body);
        self.frame(&body, out)
    }

    /// Decodes the batch at the start of `buf`; `Ok(None)` when `buf` does not yet hold a
    /// whole frame. On success also returns the number of bytes the frame used.
    pub fn decode_request(
        &self,
        buf: &[u8],
    ) -> Result<Option<(ProvideBatch, usize)>, BatchCodecError> {
        self.unframe(buf, |b| self.decode_request_body(b))
    }

    /// Decodes the answer at the start of `buf`; see [`BatchCodec::decode_request`].
    pub fn decode_response(
        &self,
        buf: &[u8],
    ) -> Result<Option<(ProvideBatchResponse, usize)>, BatchCodecError> {
        self.unframe(buf, |b| self.decode_response_body(b))
    }

    /// Reads one batch from a stream; `Ok(None)` when the stream ends cleanly between frames.
    pub async fn read_request<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
    ) -> Result<Option<ProvideBatch>, BatchCodecError> {
        match self.read_body(io).await? {
            Some(body) => self.decode_request_body(&body).map(Some),
            None => Ok(None),
        }
    }

    /// Reads one answer from a stream; a stream that ends first is
    /// [`BatchCodecError::Truncated`].
    pub async fn read_response<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
    ) -> Result<ProvideBatchResponse, BatchCodecError> {
        match self.read_body(io).await? {
            Some(body) => self.decode_response_body(&body),
            None => Err(BatchCodecError::Truncated),
        }
    }

    /// Writes one batch to a stream and flushes it.
    pub async fn write_request<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        batch: &ProvideBatch,
    ) -> Result<(), BatchCodecError> {
        let mut buf = Vec::new();
        self.encode_request(batch, &mut buf)?;
        io.write_all(&buf).await?;
        io.flush().await?;
        Ok(())
    }

    /// Writes one answer to a stream and flushes it.
    pub async fn write_response<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        response: &ProvideBatchResponse,
    ) -> Result<(), BatchCodecError> {
        let mut buf = Vec::new();
        self.encode_response(response, &mut buf)?;
        io.write_all(&buf).await?;
        io.flush().await?;
        Ok(())
    }

    /// Decodes a batch from a protobuf body (no length prefix).
    pub fn decode_request_body(&self, buf: &[u8]) -> Result<ProvideBatch, BatchCodecError> {
        let mut r = Reader::new(buf);
        let mut provider = None;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        while let Some((field, wt)) = r.tag()? {
            match field {
                1 => {
                    expect_wt(wt, WT_LEN)?;
                    provider = decode_peer(r.bytes()?)?;
                }
                2 => {
                    expect_wt(wt, WT_LEN)?;
                    let key = r.bytes()?;
                    self.check_key(key.len())?;
                    if keys.len() == self.max_keys {
                        return Err(BatchCodecError::TooManyKeys {
                            len: keys.len() + 1,
                            max: self.max_keys,
                        });
                    }
                    keys.push(key.to_vec());
                }
                3 => {
                    expect_wt(wt, WT_LEN)?;
                    self.decode_run(r.bytes()?, &mut keys)?;
                }
                _ => r.skip(wt)?,
            }
        }
        let provider = provider.ok_or(BatchCodecError::NoProvider)?;
        if keys.is_empty() {
            return Err(BatchCodecError::NoKeys);
        }
        Ok(ProvideBatch { provider, keys })
    }

    /// Decodes an answer from a protobuf body (no length prefix); statuses packed or not.
    pub fn decode_response_body(
        &self,
        buf: &[u8],
    ) -> Result<ProvideBatchResponse, BatchCodecError> {
        let mut r = Reader::new(buf);
        let mut out = ProvideBatchResponse::default();
        let mut stored_first: u64 = 0;
        let push = |statuses: &mut Vec<KeyStatus>, v: u64| {
            if statuses.len() == self.max_keys {
                return Err(BatchCodecError::TooManyKeys {
                    len: statuses.len() + 1,
                    max: self.max_keys,
                });
            }
            statuses.push(KeyStatus::from_wire(v));
            Ok(())
        };
        while let Some((field, wt)) = r.tag()? {
            match (field, wt) {
                (1, WT_LEN) => {
                    let mut packed = Reader::new(r.bytes()?);
                    while !packed.is_empty() {
                        push(&mut out.statuses, packed.varint()?)?;
                    }
                }
                (1, WT_VARINT) => push(&mut out.statuses, r.varint()?)?,
                (1, _) => return Err(BatchCodecError::Malformed("statuses of a wrong wire type")),
                (2, WT_VARINT) => out.error = BatchError::from_wire(r.varint()?),
                (2, _) => return Err(BatchCodecError::Malformed("error of a wrong wire type")),
                (3, WT_LEN) => out.allowance = Some(decode_allowance(r.bytes()?)?),
                (3, _) => return Err(BatchCodecError::Malformed("allowance of a wrong wire type")),
                (4, WT_VARINT) => stored_first = r.varint()?,
                (4, _) => {
                    return Err(BatchCodecError::Malformed(
                        "stored_first of a wrong wire type",
                    ));
                }
                _ => r.skip(wt)?,
            }
        }
        if stored_first > 0 {
            let n = usize::try_from(stored_first).unwrap_or(usize::MAX);
            if n.saturating_add(out.statuses.len()) > self.max_keys {
                return Err(BatchCodecError::TooManyKeys {
                    len: n.saturating_add(out.statuses.len()).min(self.max_keys + 1),
                    max: self.max_keys,
                });
            }
            out.statuses
                .splice(0..0, std::iter::repeat_n(KeyStatus::Stored, n));
        }
        Ok(out)
    }

    /// Appends the keys of a `KeyRun` body to `keys`, within the limits.
    fn decode_run(&self, buf: &[u8], keys: &mut Vec<Vec<u8>>) -> Result<(), BatchCodecError> {
        let mut r = Reader::new(buf);
        let (mut prefix, mut suffix_len, mut suffixes): (&[u8], u64, &[u8]) = (&[], 0, &[]);
        while let Some((field, wt)) = r.tag()? {
            match (field, wt) {
                (1, WT_LEN) => prefix = r.bytes()?,
                (2, WT_VARINT) => suffix_len = r.varint()?,
                (3, WT_LEN) => suffixes = r.bytes()?,
                (1..=3, _) => {
                    return Err(BatchCodecError::Malformed("key run of a wrong wire type"));
                }
                _ => r.skip(wt)?,
            }
        }
        let suffix_len = usize::try_from(suffix_len).ok().filter(|&n| n > 0).ok_or(
            BatchCodecError::Malformed("key run without a suffix length"),
        )?;
        if suffixes.len() % suffix_len != 0 {
            return Err(BatchCodecError::Malformed(
                "key run not a whole number of keys",
            ));
        }
        self.check_key(prefix.len().saturating_add(suffix_len))?;
        let n = suffixes.len() / suffix_len;
        if keys.len() + n > self.max_keys {
            return Err(BatchCodecError::TooManyKeys {
                len: (keys.len() + n).min(self.max_keys + 1),
                max: self.max_keys,
            });
        }
        keys.extend(suffixes.chunks_exact(suffix_len).map(|suffix| {
            let mut key = Vec::with_capacity(prefix.len() + suffix_len);
            key.extend_from_slice(prefix);
            key.extend_from_slice(suffix);
            key
        }));
        Ok(())
    }

    fn check_key(&self, len: usize) -> Result<(), BatchCodecError> {
        if len == 0 {
            return Err(BatchCodecError::EmptyKey);
        }
        if len > MAX_BATCH_KEY_LEN {
            return Err(BatchCodecError::KeyTooLong {
                len,
                max: MAX_BATCH_KEY_LEN,
            });
        }
        Ok(())
    }

    fn check_keys(
        &self,
        n: usize,
        lens: impl IntoIterator<Item = usize>,
    ) -> Result<(), BatchCodecError> {
        if n == 0 {
            return Err(BatchCodecError::NoKeys);
        }
        if n > self.max_keys {
            return Err(BatchCodecError::TooManyKeys {
                len: n,
                max: self.max_keys,
            });
        }
        lens.into_iter().try_for_each(|l| self.check_key(l))
    }

    fn check_len(&self, len: u64) -> Result<(), BatchCodecError> {
        if len > self.max_message_size as u64 {
            Err(BatchCodecError::Oversized {
                len,
                max: self.max_message_size,
            })
        } else {
            Ok(())
        }
    }

    fn frame(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), BatchCodecError> {
        self.check_len(body.len() as u64)?;
        put_varint(out, body.len() as u64);
        out.extend_from_slice(body);
        Ok(())
    }

    fn unframe<T>(
        &self,
        buf: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, BatchCodecError>,
    ) -> Result<Option<(T, usize)>, BatchCodecError> {
        let mut r = Reader::new(buf);
        let len = match r.varint() {
            Ok(len) => len,
            Err(PbError::Truncated) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.check_len(len)?;
        let head = buf.len() - r.rest().len();
        if (r.rest().len() as u64) < len {
            return Ok(None);
        }
        let body = &r.rest()[..len as usize];
        Ok(Some((decode(body)?, head + len as usize)))
    }

    /// Reads the length prefix and the body; `None` on a clean end of stream before a frame.
    /// The body buffer grows as bytes arrive, never allocated from the announced length.
    async fn read_body<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
    ) -> Result<Option<Vec<u8>>, BatchCodecError> {
        let mut len: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let mut byte = [0u8];
            if io.read(&mut byte).await? == 0 {
                return if i == 0 {
                    Ok(None)
                } else {
                    Err(BatchCodecError::Truncated)
                };
            }
            len = varint_step(len, byte[0], i)?;
            if byte[0] & 0x80 == 0 {
                self.check_len(len)?;
                let mut body = Vec::with_capacity(len.min(INITIAL_BODY_CAPACITY) as usize);
                let got = (&mut *io).take(len).read_to_end(&mut body).await?;
                if got as u64 != len {
                    return Err(BatchCodecError::Truncated);
                }
                return Ok(Some(body));
            }
        }
        Err(BatchCodecError::Malformed("varint longer than 10 bytes"))
    }
}

/// Appends the protobuf body of `batch` (no length prefix, no limit checked) to `out`.
pub fn encode_request_body(batch: &ProvideBatch, out: &mut Vec<u8>) {
    let id = batch.provider.peer_id.to_bytes();
    let peer_len = len_field(1, id.len())
        + batch
            .provider
            .addrs
            .iter()
            .map(|a| len_field(2, a.as_ref().len()))
            .sum::<usize>();
    put_tag(out, 1, WT_LEN);
    put_varint(out, peer_len as u64);
    put_bytes(out, 1, &id);
    for a in &batch.provider.addrs {
        put_bytes(out, 2, a.as_ref());
    }
    match run_prefix(&batch.keys) {
        Some(prefix) => {
            let suffix_len = batch.keys[0].len() - prefix;
            let suffixes = batch.keys.len() * suffix_len;
            let run_len =
                len_field(1, prefix) + 1 + varint_len(suffix_len as u64) + len_field(3, suffixes);
            put_tag(out, 3, WT_LEN);
            put_varint(out, run_len as u64);
            put_bytes(out, 1, &batch.keys[0][..prefix]);
            put_tag(out, 2, WT_VARINT);
            put_varint(out, suffix_len as u64);
            put_tag(out, 3, WT_LEN);
            put_varint(out, suffixes as u64);
            for k in &batch.keys {
                out.extend_from_slice(&k[prefix..]);
            }
        }
        None => {
            for k in &batch.keys {
                put_bytes(out, 2, k);
            }
        }
    }
}

/// How the encoder writes `keys`: as one run (field 3) when that is shorter than listing them
/// (field 2), which takes two or more keys, all of one length, sharing a prefix of at least
/// one byte (a multihash's code and length, at least). Returns the prefix length of the run
/// (the keys' longest common prefix, at most one byte short of a key), or `None` when the
/// keys are listed. For batches of sha2-256 multihashes a run takes 32 bytes a key instead of
/// 36.
pub fn run_prefix(keys: &[Vec<u8>]) -> Option<usize> {
    let (first, rest) = keys.split_first()?;
    if rest.is_empty() || first.len() < 2 {
        return None;
    }
    let mut prefix = first.len() - 1;
    for k in rest {
        if k.len() != first.len() {
            return None;
        }
        prefix = first[..prefix]
            .iter()
            .zip(k.iter())
            .take_while(|(a, b)| a == b)
            .count();
        if prefix == 0 {
            return None;
        }
    }
    let suffix_len = first.len() - prefix;
    let run = len_field(1, prefix)
        + 1
        + varint_len(suffix_len as u64)
        + len_field(3, keys.len() * suffix_len);
    let listed = keys.len() * len_field(2, first.len());
    (len_field(3, run) < listed).then_some(prefix)
}

/// Appends the protobuf body of `response` (no length prefix) to `out`.
pub fn encode_response_body(response: &ProvideBatchResponse, out: &mut Vec<u8>) {
    // The leading run of STORED goes as a count (field 4), the rest as statuses.
    let stored_first = response
        .statuses
        .iter()
        .take_while(|s| s.is_stored())
        .count();
    let rest = &response.statuses[stored_first..];
    if !rest.is_empty() {
        let len: usize = rest.iter().map(|s| varint_len(s.to_wire())).sum();
        put_tag(out, 1, WT_LEN);
        put_varint(out, len as u64);
        for s in rest {
            put_varint(out, s.to_wire());
        }
    }
    if let Some(e) = response.error {
        put_tag(out, 2, WT_VARINT);
        put_varint(out, e.to_wire());
    }
    if let Some(a) = response.allowance {
        let fields = [(1, a.keys), (2, a.per_second), (3, a.burst)];
        let len: usize = fields
            .iter()
            .filter(|(_, v)| *v != 0)
            .map(|(_, v)| 1 + varint_len(u64::from(*v)))
            .sum();
        put_tag(out, 3, WT_LEN);
        put_varint(out, len as u64);
        for (field, v) in fields {
            if v != 0 {
                put_tag(out, field, WT_VARINT);
                put_varint(out, u64::from(v));
            }
        }
    }
    if stored_first > 0 {
        put_tag(out, 4, WT_VARINT);
        put_varint(out, stored_first as u64);
    }
}

/// Decodes an `Allowance` body; values past `u32` are read as `u32::MAX`.
fn decode_allowance(buf: &[u8]) -> Result<Allowance, BatchCodecError> {
    let mut r = Reader::new(buf);
    let mut a = Allowance::default();
    while let Some((field, wt)) = r.tag()? {
        let slot = match (field, wt) {
            (1, WT_VARINT) => &mut a.keys,
            (2, WT_VARINT) => &mut a.per_second,
            (3, WT_VARINT) => &mut a.burst,
            (1..=3, _) => return Err(BatchCodecError::Malformed("allowance of a wrong wire type")),
            _ => {
                r.skip(wt)?;
                continue;
            }
        };
        *slot = u32::try_from(r.varint()?).unwrap_or(u32::MAX);
    }
    Ok(a)
}

// --- protobuf primitives ----------------------------------------------------------------------
// The same few primitives as `wire.rs`'s, kept here so that this module stands apart from the
// `/ipfs/kad/1.0.0` codec.

impl From<PbError> for BatchCodecError {
    fn from(e: PbError) -> Self {
        match e {
            PbError::Truncated => BatchCodecError::Truncated,
            PbError::Malformed(why) => BatchCodecError::Malformed(why),
        }
    }
}

/// Decodes the provider entry: `Ok(None)` when its id is missing or does not parse.
/// Addresses that do not parse are skipped; at most [`MAX_BATCH_PROVIDER_ADDRS`] are kept.
fn decode_peer(buf: &[u8]) -> Result<Option<PeerInfo>, BatchCodecError> {
    let mut r = Reader::new(buf);
    let mut id = None;
    let mut addrs = Vec::new();
    while let Some((field, wt)) = r.tag()? {
        match field {
            1 => {
                expect_wt(wt, WT_LEN)?;
                id = Some(r.bytes()?);
            }
            2 => {
                expect_wt(wt, WT_LEN)?;
                let bytes = r.bytes()?;
                if addrs.len() < MAX_BATCH_PROVIDER_ADDRS
                    && let Ok(a) = Multiaddr::try_from(bytes.to_vec())
                {
                    addrs.push(a);
                }
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(id
        .and_then(|id| PeerId::from_bytes(id).ok())
        .map(|peer_id| PeerInfo::new(peer_id, addrs)))
}
