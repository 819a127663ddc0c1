//! The wire codec of `/ipfs/kad/1.0.0`: unsigned-varint length-prefixed protobuf.
//!
//! The schema is go-libp2p-kad-dht's `dht.proto`:
//!
//! ```text
//! message Record  { bytes key = 1; bytes value = 2; string timeReceived = 5; }
//! message Message {
//!   message Peer { bytes id = 1; repeated bytes addrs = 2; ConnectionType connection = 3; }
//!   MessageType type = 1; int32 clusterLevelRaw = 10; bytes key = 2; Record record = 3;
//!   repeated Peer closerPeers = 8; repeated Peer providerPeers = 9;
//! }
//! ```
//!
//! Encoding writes fields in field-number order and omits proto3 defaults, which is what Go
//! (and prost, in rust-libp2p) produce, so the bytes are identical. Decoding skips unknown
//! fields, drops peers whose id does not parse and addresses that do not parse (as
//! rust-libp2p does), and reports everything else that is wrong as a typed [`CodecError`].
//!
//! Decoding is bounded in memory by what arrived, not by what a peer announces: a stream's
//! body buffer grows as its bytes arrive (never allocated up front from the length prefix),
//! and each peer list keeps at most [`DEFAULT_MAX_PEERS_PER_LIST`] peers with at most
//! [`DEFAULT_MAX_ADDRS_PER_PEER`] addresses each ([`Codec::max_peers_per_list`],
//! [`Codec::max_addrs_per_peer`]); the rest are skipped, so a message of tiny addresses
//! cannot grow into many times its size once decoded.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    message::{MessageType, Request, Response},
    pb::{
        MAX_VARINT_LEN, PbError, Reader, WT_LEN, WT_VARINT, expect_wt, len_field, put_bytes,
        put_tag, put_varint, varint_len, varint_step,
    },
    peer::{ConnectionType, Multiaddr, PeerId, PeerInfo},
    record::Record,
};

/// The default maximum size of one message body: 4 MiB, as go-libp2p-kad-dht.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// The default number of peers kept from each peer list of a decoded message (`closerPeers`,
/// `providerPeers`): 256. Servers answer with k = 20 closer peers; a provider list of a
/// popular key may be longer, and its first 256 are plenty for a lookup.
pub const DEFAULT_MAX_PEERS_PER_LIST: usize = 256;

/// The default number of addresses kept per decoded peer: 32.
pub const DEFAULT_MAX_ADDRS_PER_PEER: usize = 32;

/// How much of a body buffer is reserved before its bytes arrive.
const INITIAL_BODY_CAPACITY: u64 = 4096;

/// What can go wrong reading or writing a DHT message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The length prefix announces more bytes than the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// The announced (or, when encoding, actual) length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The input ended in the middle of a message.
    #[error("message truncated")]
    Truncated,
    /// The `type` field holds a value that is not one of the six message types.
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// A valid message type where it cannot appear (an ADD_PROVIDER response).
    #[error("unexpected {0} message")]
    UnexpectedType(MessageType),
    /// The bytes are not a valid message of the schema.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads and writes length-prefixed DHT messages with a size limit.
///
/// ```
/// use dht_proto::{Codec, Request};
/// let codec = Codec::default();
/// let mut buf = Vec::new();
/// codec.encode_request(&Request::FindNode { key: b"hello".to_vec() }, &mut buf)?;
/// let (decoded, used) = codec.decode_request(&buf)?.expect("a whole frame");
/// assert_eq!(used, buf.len());
/// assert_eq!(decoded, Request::FindNode { key: b"hello".to_vec() });
/// # Ok::<(), dht_proto::CodecError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    max_message_size: usize,
    limits: Limits,
}

/// What decoding keeps of a message's peer lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limits {
    peers_per_list: usize,
    addrs_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            peers_per_list: DEFAULT_MAX_PEERS_PER_LIST,
            addrs_per_peer: DEFAULT_MAX_ADDRS_PER_PEER,
        }
    }
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl Codec {
    /// A codec that accepts message bodies of at most `max_message_size` bytes, with the
    /// default peer and address caps.
    pub const fn new(max_message_size: usize) -> Self {
        Codec {
            max_message_size,
            limits: Limits {
                peers_per_list: DEFAULT_MAX_PEERS_PER_LIST,
                addrs_per_peer: DEFAULT_MAX_ADDRS_PER_PEER,
            },
        }
    }

    /// The same codec keeping at most `n` peers of each decoded peer list (further peers are
    /// skipped).
    #[must_use]
    pub const fn with_max_peers_per_list(mut self, n: usize) -> Self {
        self.limits.peers_per_list = n;
        self
    }

    /// The same codec keeping at most `n` addresses of each decoded peer (further addresses
    /// are skipped).
    #[must_use]
    pub const fn with_max_addrs_per_peer(mut self, n: usize) -> Self {
        self.limits.addrs_per_peer = n;
        self
    }

    /// The largest message body this codec reads or writes.
    pub const fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// How many peers of each peer list decoding keeps (default
    /// [`DEFAULT_MAX_PEERS_PER_LIST`]).
    pub const fn max_peers_per_list(&self) -> usize {
        self.limits.peers_per_list
    }

    /// How many addresses of each peer decoding keeps (default
    /// [`DEFAULT_MAX_ADDRS_PER_PEER`]).
    pub const fn max_addrs_per_peer(&self) -> usize {
        self.limits.addrs_per_peer
    }

    /// Appends `req` as one length-prefixed frame to `out`.
    pub fn encode_request(&self, req: &Request, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.frame(out, |body| encode_request_body(req, body))
    }

    /// Appends `resp` as one length-prefixed frame to `out`.
    pub fn encode_response(&self, resp: &Response, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.frame(out, |body| encode_response_body(resp, body))
    }

    /// Decodes the request at the start of `buf`; `Ok(None)` when `buf` does not yet hold a
    /// whole frame. On success also returns the number of bytes the frame used.
    pub fn decode_request(&self, buf: &[u8]) -> Result<Option<(Request, usize)>, CodecError> {
        self.unframe(buf, |b| request_of(decode_raw(b, self.limits)?))
    }

    /// Decodes the response at the start of `buf`; see [`Codec::decode_request`].
    pub fn decode_response(&self, buf: &[u8]) -> Result<Option<(Response, usize)>, CodecError> {
        self.unframe(buf, |b| response_of(decode_raw(b, self.limits)?))
    }

    /// Reads one request from a stream; `Ok(None)` when the stream ends cleanly between frames.
    pub async fn read_request<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
    ) -> Result<Option<Request>, CodecError> {
        match self.read_body(io).await? {
            Some(body) => request_of(decode_raw(&body, self.limits)?).map(Some),
            None => Ok(None),
        }
    }

    /// Reads one response from a stream; a stream that ends first is [`CodecError::Truncated`].
    pub async fn read_response<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
    ) -> Result<Response, CodecError> {
        match self.read_body(io).await? {
            Some(body) => response_of(decode_raw(&body, self.limits)?),
            None => Err(CodecError::Truncated),
        }
    }

    /// Writes one request to a stream and flushes it.
    pub async fn write_request<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        req: &Request,
    ) -> Result<(), CodecError> {
        let mut buf = Vec::new();
        self.encode_request(req, &mut buf)?;
        io.write_all(&buf).await?;
        io.flush().await?;
        Ok(())
    }

    /// Writes one response to a stream and flushes it.
    pub async fn write_response<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        resp: &Response,
    ) -> Result<(), CodecError> {
        let mut buf = Vec::new();
        self.encode_response(resp, &mut buf)?;
        io.write_all(&buf).await?;
        io.flush().await?;
        Ok(())
    }

    fn frame(&self, out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) -> Result<(), CodecError> {
        let mut b = Vec::new();
        body(&mut b);
        if b.len() > self.max_message_size {
            return Err(CodecError::Oversized {
                len: b.len() as u64,
                max: self.max_message_size,
            });
        }
        put_varint(out, b.len() as u64);
        out.extend_from_slice(&b);
        Ok(())
    }

    fn unframe<T>(
        &self,
        buf: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, CodecError>,
    ) -> Result<Option<(T, usize)>, CodecError> {
        let mut r = Reader::new(buf);
        let len = match r.varint() {
            Ok(len) => len,
            // A varint cut short is only a frame that has not fully arrived.
            Err(PbError::Truncated) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.check_len(len)?;
        let header = buf.len() - r.rest().len();
        let len = len as usize;
        if r.rest().len() < len {
            return Ok(None);
        }
        let msg = decode(&r.rest()[..len])?;
        Ok(Some((msg, header + len)))
    }

    fn check_len(&self, len: u64) -> Result<(), CodecError> {
        if len > self.max_message_size as u64 {
            Err(CodecError::Oversized {
                len,
                max: self.max_message_size,
            })
        } else {
            Ok(())
        }
    }

    /// Reads the length prefix and the body; `None` on a clean end of stream before a frame.
    ///
    /// The body buffer grows as bytes arrive: a peer that announces the largest body and
    /// sends nothing costs [`INITIAL_BODY_CAPACITY`] bytes, not the announced length.
    async fn read_body<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
    ) -> Result<Option<Vec<u8>>, CodecError> {
        let mut len: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let mut byte = [0u8];
            if io.read(&mut byte).await? == 0 {
                return if i == 0 {
                    Ok(None)
                } else {
                    Err(CodecError::Truncated)
                };
            }
            len = varint_step(len, byte[0], i)?;
            if byte[0] & 0x80 == 0 {
                self.check_len(len)?;
                let mut body = Vec::with_capacity(len.min(INITIAL_BODY_CAPACITY) as usize);
                let got = (&mut *io).take(len).read_to_end(&mut body).await?;
                if got as u64 != len {
                    return Err(CodecError::Truncated);
                }
                return Ok(Some(body));
            }
        }
        Err(CodecError::Malformed("varint longer than 10 bytes"))
    }
}

impl From<PbError> for CodecError {
    fn from(e: PbError) -> Self {
        match e {
            PbError::Truncated => CodecError::Truncated,
            PbError::Malformed(why) => CodecError::Malformed(why),
        }
    }
}

// --- encoding ---------------------------------------------------------------------------------

/// Writes a proto3 singular bytes field: omitted when empty.
fn put_opt_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_bytes(out, field, bytes);
    }
}

fn record_len(r: &Record) -> usize {
    let opt = |f, n: usize| if n == 0 { 0 } else { len_field(f, n) };
    opt(1, r.key.len()) + opt(2, r.value.len()) + opt(5, r.time_received.len())
}

fn put_record(out: &mut Vec<u8>, field: u32, r: &Record) {
    put_tag(out, field, WT_LEN);
    put_varint(out, record_len(r) as u64);
    put_opt_bytes(out, 1, &r.key);
    put_opt_bytes(out, 2, &r.value);
    put_opt_bytes(out, 5, r.time_received.as_bytes());
}

fn put_peer(out: &mut Vec<u8>, field: u32, p: &PeerInfo) {
    let id = p.peer_id.to_bytes();
    let conn = p.connection.as_i32() as u64;
    let len = len_field(1, id.len())
        + p.addrs
            .iter()
            .map(|a| len_field(2, a.as_ref().len()))
            .sum::<usize>()
        + if conn == 0 { 0 } else { 1 + varint_len(conn) };
    put_tag(out, field, WT_LEN);
    put_varint(out, len as u64);
    put_bytes(out, 1, &id);
    for a in &p.addrs {
        put_bytes(out, 2, a.as_ref());
    }
    if conn != 0 {
        put_tag(out, 3, WT_VARINT);
        put_varint(out, conn);
    }
}

/// The fields of a message in field-number order; defaults are omitted.
struct Fields<'a> {
    ty: MessageType,
    key: &'a [u8],
    record: Option<&'a Record>,
    closer: &'a [PeerInfo],
    providers: &'a [PeerInfo],
}

impl Fields<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        if self.ty.to_wire() != 0 {
            put_tag(out, 1, WT_VARINT);
            put_varint(out, self.ty.to_wire());
        }
        put_opt_bytes(out, 2, self.key);
        if let Some(r) = self.record {
            put_record(out, 3, r);
        }
        for p in self.closer {
            put_peer(out, 8, p);
        }
        for p in self.providers {
            put_peer(out, 9, p);
        }
    }
}

fn fields(ty: MessageType) -> Fields<'static> {
    Fields {
        ty,
        key: &[],
        record: None,
        closer: &[],
        providers: &[],
    }
}

/// Appends the protobuf body of `req` (no length prefix) to `out`.
pub fn encode_request_body(req: &Request, out: &mut Vec<u8>) {
    let f = match req {
        Request::PutValue { record } => Fields {
            key: &record.key,
            record: Some(record),
            ..fields(MessageType::PutValue)
        },
        Request::GetValue { key } => Fields {
            key,
            ..fields(MessageType::GetValue)
        },
        Request::AddProvider { key, providers } => Fields {
            key,
            providers,
            ..fields(MessageType::AddProvider)
        },
        Request::GetProviders { key } => Fields {
            key,
            ..fields(MessageType::GetProviders)
        },
        Request::FindNode { key } => Fields {
            key,
            ..fields(MessageType::FindNode)
        },
        Request::Ping => fields(MessageType::Ping),
    };
    f.encode(out);
}

/// Appends the protobuf body of `resp` (no length prefix) to `out`.
pub fn encode_response_body(resp: &Response, out: &mut Vec<u8>) {
    let f = match resp {
        Response::PutValue { record } => Fields {
            key: &record.key,
            record: Some(record),
            ..fields(MessageType::PutValue)
        },
        Response::GetValue {
            key,
            record,
            closer_peers,
        } => Fields {
            key,
            record: record.as_ref(),
            closer: closer_peers,
            ..fields(MessageType::GetValue)
        },
        Response::GetProviders {
            key,
            providers,
            closer_peers,
        } => Fields {
            key,
            closer: closer_peers,
            providers,
            ..fields(MessageType::GetProviders)
        },
        Response::FindNode { closer_peers } => Fields {
            closer: closer_peers,
            ..fields(MessageType::FindNode)
        },
        Response::Ping => fields(MessageType::Ping),
    };
    f.encode(out);
}

// --- decoding ---------------------------------------------------------------------------------

/// A decoded message before it is read as a request or a response.
#[derive(Default)]
struct RawMessage {
    ty: u64,
    key: Vec<u8>,
    record: Option<Record>,
    closer: Vec<PeerInfo>,
    providers: Vec<PeerInfo>,
}

fn decode_raw(buf: &[u8], limits: Limits) -> Result<RawMessage, CodecError> {
    let mut r = Reader::new(buf);
    let mut m = RawMessage::default();
    while let Some((field, wt)) = r.tag()? {
        match field {
            1 => {
                expect_wt(wt, WT_VARINT)?;
                m.ty = r.varint()?;
            }
            2 => {
                expect_wt(wt, WT_LEN)?;
                m.key = r.bytes()?.to_vec();
            }
            3 => {
                expect_wt(wt, WT_LEN)?;
                m.record = Some(decode_record(r.bytes()?)?);
            }
            8 | 9 => {
                expect_wt(wt, WT_LEN)?;
                let bytes = r.bytes()?;
                let list = if field == 8 {
                    &mut m.closer
                } else {
                    &mut m.providers
                };
                // Peers beyond the cap are skipped undecoded.
                if list.len() < limits.peers_per_list {
                    list.extend(decode_peer(bytes, limits.addrs_per_peer)?);
                }
            }
            10 => {
                expect_wt(wt, WT_VARINT)?;
                r.varint()?; // clusterLevelRaw: unused by every implementation.
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(m)
}

fn decode_record(buf: &[u8]) -> Result<Record, CodecError> {
    let mut r = Reader::new(buf);
    let mut rec = Record::default();
    while let Some((field, wt)) = r.tag()? {
        match field {
            1 => {
                expect_wt(wt, WT_LEN)?;
                rec.key = r.bytes()?.to_vec();
            }
            2 => {
                expect_wt(wt, WT_LEN)?;
                rec.value = r.bytes()?.to_vec();
            }
            5 => {
                expect_wt(wt, WT_LEN)?;
                rec.time_received = std::str::from_utf8(r.bytes()?)
                    .map_err(|_| CodecError::Malformed("timeReceived is not UTF-8"))?
                    .to_owned();
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(rec)
}

/// Decodes a peer, keeping its first `max_addrs` valid addresses; `Ok(None)` when its id is
/// not a valid peer id (the peer is dropped).
fn decode_peer(buf: &[u8], max_addrs: usize) -> Result<Option<PeerInfo>, CodecError> {
    let mut r = Reader::new(buf);
    let mut id = None;
    let mut addrs = Vec::new();
    let mut connection = ConnectionType::NotConnected;
    while let Some((field, wt)) = r.tag()? {
        match field {
            1 => {
                expect_wt(wt, WT_LEN)?;
                id = Some(r.bytes()?);
            }
            2 => {
                expect_wt(wt, WT_LEN)?;
                let bytes = r.bytes()?;
                if addrs.len() < max_addrs
                    && let Ok(a) = Multiaddr::try_from(bytes.to_vec())
                {
                    addrs.push(a);
                }
            }
            3 => {
                expect_wt(wt, WT_VARINT)?;
                connection = ConnectionType::from_i32(r.varint()? as i32);
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(id
        .and_then(|id| PeerId::from_bytes(id).ok())
        .map(|peer_id| PeerInfo {
            peer_id,
            addrs,
            connection,
        }))
}

fn message_type(raw: &RawMessage) -> Result<MessageType, CodecError> {
    MessageType::from_wire(raw.ty).ok_or(CodecError::UnknownType(raw.ty))
}

/// Decodes a request from a protobuf body (no length prefix), with the default peer and
/// address caps.
pub fn decode_request_body(buf: &[u8]) -> Result<Request, CodecError> {
    request_of(decode_raw(buf, Limits::default())?)
}

fn request_of(raw: RawMessage) -> Result<Request, CodecError> {
    Ok(match message_type(&raw)? {
        MessageType::PutValue => {
            let record = raw
                .record
                .ok_or(CodecError::Malformed("PUT_VALUE without a record"))?;
            if record.key != raw.key {
                return Err(CodecError::Malformed(
                    "PUT_VALUE record key differs from the message key",
                ));
            }
            Request::PutValue { record }
        }
        MessageType::GetValue => Request::GetValue { key: raw.key },
        MessageType::AddProvider => Request::AddProvider {
            key: raw.key,
            providers: raw.providers,
        },
        MessageType::GetProviders => Request::GetProviders { key: raw.key },
        MessageType::FindNode => Request::FindNode { key: raw.key },
        MessageType::Ping => Request::Ping,
    })
}

/// Decodes a response from a protobuf body (no length prefix), with the default peer and
/// address caps.
pub fn decode_response_body(buf: &[u8]) -> Result<Response, CodecError> {
    response_of(decode_raw(buf, Limits::default())?)
}

fn response_of(raw: RawMessage) -> Result<Response, CodecError> {
    Ok(match message_type(&raw)? {
        MessageType::PutValue => Response::PutValue {
            record: raw
                .record
                .ok_or(CodecError::Malformed("PUT_VALUE response without a record"))?,
        },
        MessageType::GetValue => Response::GetValue {
            key: raw.key,
            record: raw.record,
            closer_peers: raw.closer,
        },
        MessageType::AddProvider => {
            return Err(CodecError::UnexpectedType(MessageType::AddProvider));
        }
        MessageType::GetProviders => Response::GetProviders {
            key: raw.key,
            providers: raw.providers,
            closer_peers: raw.closer,
        },
        MessageType::FindNode => Response::FindNode {
            closer_peers: raw.closer,
        },
        MessageType::Ping => Response::Ping,
    })
}
