#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod batch;
mod key;
mod message;
pub mod pb;
mod peer;
mod prefix;
mod record;
mod setting;
mod shared_error;
mod validator;
pub mod wire;

#[cfg(feature = "libp2p-kad")]
pub mod kad;

pub use batch::PROVIDE_BATCH_PROTOCOL;
pub use key::{Distance, KEY_BITS, Key};
pub use message::{MessageType, PROTOCOL_NAME, Request, Response};
pub use peer::{ConnectionType, Multiaddr, PeerId, PeerInfo, bound_addrs, is_dialable};
pub use prefix::{ParsePrefixError, Prefix};
pub use record::{
    K_VALUE, PROVIDER_ADDR_TTL_SECS, PROVIDER_RECORD_TTL_SECS, ProviderRecord,
    REPROVIDE_INTERVAL_SECS, Record, UnixSecs, VALUE_RECORD_TTL_SECS, provider_key_of_cid,
};
pub use setting::InvalidSetting;
pub use shared_error::SharedError;
pub use validator::{ValidationError, Validator, split_key};
pub use wire::{
    Codec, CodecError, DEFAULT_MAX_ADDRS_PER_PEER, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PEERS_PER_LIST,
};

// Re-exported so users name the same versions this crate was built against.
pub use cid;
pub use libp2p_identity;
pub use multiaddr;
pub use multihash;
