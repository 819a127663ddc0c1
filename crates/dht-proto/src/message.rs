//! Typed requests and responses of the six RPCs of `/ipfs/kad/1.0.0`.

use crate::{peer::PeerInfo, record::Record};

/// The protocol name spoken on the stream.
pub const PROTOCOL_NAME: &str = "/ipfs/kad/1.0.0";

/// The `type` field of a DHT message (`dht.proto`'s `MessageType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    /// Store a value record.
    PutValue = 0,
    /// Fetch a value record.
    GetValue = 1,
    /// Announce a provider of a key.
    AddProvider = 2,
    /// Ask for the providers of a key.
    GetProviders = 3,
    /// Ask for the peers closest to a key.
    FindNode = 4,
    /// Liveness check.
    Ping = 5,
}

impl MessageType {
    /// All six types, in wire-value order.
    pub const ALL: [MessageType; 6] = [
        MessageType::PutValue,
        MessageType::GetValue,
        MessageType::AddProvider,
        MessageType::GetProviders,
        MessageType::FindNode,
        MessageType::Ping,
    ];

    /// The type of a wire value, if it is one of the six.
    pub const fn from_wire(v: u64) -> Option<Self> {
        Some(match v {
            0 => MessageType::PutValue,
            1 => MessageType::GetValue,
            2 => MessageType::AddProvider,
            3 => MessageType::GetProviders,
            4 => MessageType::FindNode,
            5 => MessageType::Ping,
            _ => return None,
        })
    }

    /// The wire value.
    pub const fn to_wire(self) -> u64 {
        self as u64
    }

    /// The name used in `dht.proto` (e.g. `FIND_NODE`), for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageType::PutValue => "PUT_VALUE",
            MessageType::GetValue => "GET_VALUE",
            MessageType::AddProvider => "ADD_PROVIDER",
            MessageType::GetProviders => "GET_PROVIDERS",
            MessageType::FindNode => "FIND_NODE",
            MessageType::Ping => "PING",
        }
    }

    /// Whether the server answers this request type (every type except ADD_PROVIDER).
    pub const fn expects_response(self) -> bool {
        !matches!(self, MessageType::AddProvider)
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request a peer sends to a DHT server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// PUT_VALUE: store `record` under `record.key`.
    PutValue {
        /// The record; its key is also the message key.
        record: Record,
    },
    /// GET_VALUE: the record stored under `key`, and closer peers.
    GetValue {
        /// The record key.
        key: Vec<u8>,
    },
    /// ADD_PROVIDER: the sender provides `key`. Servers send no response.
    AddProvider {
        /// The provided key (multihash bytes for content).
        key: Vec<u8>,
        /// The provider entries; servers keep only the sender's own.
        providers: Vec<PeerInfo>,
    },
    /// GET_PROVIDERS: the providers of `key`, and closer peers.
    GetProviders {
        /// The key whose providers are asked for.
        key: Vec<u8>,
    },
    /// FIND_NODE: the peers closest to `key` that the server knows.
    FindNode {
        /// The target (the peer id bytes when looking for a peer; any bytes otherwise).
        key: Vec<u8>,
    },
    /// PING.
    Ping,
}

impl Request {
    /// The message type of the request.
    pub fn message_type(&self) -> MessageType {
        match self {
            Request::PutValue { .. } => MessageType::PutValue,
            Request::GetValue { .. } => MessageType::GetValue,
            Request::AddProvider { .. } => MessageType::AddProvider,
            Request::GetProviders { .. } => MessageType::GetProviders,
            Request::FindNode { .. } => MessageType::FindNode,
            Request::Ping => MessageType::Ping,
        }
    }

    /// The DHT key the request is about (empty for PING).
    pub fn key(&self) -> &[u8] {
        match self {
            Request::PutValue { record } => &record.key,
            Request::GetValue { key }
            | Request::AddProvider { key, .. }
            | Request::GetProviders { key }
            | Request::FindNode { key } => key,
            Request::Ping => &[],
        }
    }
}

/// A server's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Answer to PUT_VALUE: the stored record, echoed (as Go does).
    PutValue {
        /// The record as stored.
        record: Record,
    },
    /// Answer to GET_VALUE.
    GetValue {
        /// The record key, echoed.
        key: Vec<u8>,
        /// The record, if the server holds one.
        record: Option<Record>,
        /// Peers closer to the key.
        closer_peers: Vec<PeerInfo>,
    },
    /// Answer to GET_PROVIDERS.
    GetProviders {
        /// The key, echoed.
        key: Vec<u8>,
        /// The providers the server holds.
        providers: Vec<PeerInfo>,
        /// Peers closer to the key.
        closer_peers: Vec<PeerInfo>,
    },
    /// Answer to FIND_NODE.
    FindNode {
        /// The closest peers the server knows.
        closer_peers: Vec<PeerInfo>,
    },
    /// Answer to PING.
    Ping,
}

impl Response {
    /// The message type of the response (that of the request it answers).
    pub fn message_type(&self) -> MessageType {
        match self {
            Response::PutValue { .. } => MessageType::PutValue,
            Response::GetValue { .. } => MessageType::GetValue,
            Response::GetProviders { .. } => MessageType::GetProviders,
            Response::FindNode { .. } => MessageType::FindNode,
            Response::Ping => MessageType::Ping,
        }
    }

    /// The closer peers the response carries (none for PUT_VALUE and PING).
    pub fn closer_peers(&self) -> &[PeerInfo] {
        match self {
            Response::GetValue { closer_peers, .. }
            | Response::GetProviders { closer_peers, .. }
            | Response::FindNode { closer_peers } => closer_peers,
            Response::PutValue { .. } | Response::Ping => &[],
        }
    }
}
