//! The vocabulary of the IPFS Amino DHT (`/ipfs/kad/1.0.0`), shared by every crate of the
//! workspace.
//!
//! - [`Key`] and [`Distance`]: 256-bit Kademlia keys and the XOR metric.
//! - [`Prefix`]: a region of the keyspace, as the routing table, the keystore and the sweep use it.
//! - [`PeerInfo`]: a peer and its addresses.
//! - [`Record`] and [`ProviderRecord`]: what DHT servers store.
//! - [`Request`] and [`Response`]: the six RPCs, typed.
//! - [`Codec`]: the length-prefixed protobuf wire format, byte-compatible with
//!   go-libp2p-kad-dht and rust-libp2p, with a size limit and typed errors.
//!
//! The crate does no I/O of its own beyond the optional async helpers of [`Codec`], which
//! work on any `futures::io` stream; it depends on neither tokio nor libp2p-swarm.
//!
//! ```
//! use dht_proto::{Codec, Key, PeerInfo, Request, Response};
//! use libp2p_identity::PeerId;
//!
//! let peer = PeerInfo::new(PeerId::random(), vec!["/ip4/127.0.0.1/tcp/4001".parse()?]);
//! let resp = Response::FindNode { closer_peers: vec![peer.clone()] };
//! let mut wire = Vec::new();
//! Codec::default().encode_response(&resp, &mut wire)?;
//! let (back, _) = Codec::default().decode_response(&wire)?.expect("whole frame");
//! assert_eq!(back, resp);
//! assert_eq!(peer.key(), Key::from_peer_id(&peer.peer_id));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod key;
mod message;
mod peer;
mod prefix;
mod record;
pub mod wire;

#[cfg(feature = "libp2p-kad")]
pub mod kad;

pub use key::{Distance, KEY_BITS, Key};
pub use message::{MessageType, PROTOCOL_NAME, Request, Response};
pub use peer::{ConnectionType, Multiaddr, PeerId, PeerInfo};
pub use prefix::{ParsePrefixError, Prefix};
pub use record::{
    K_VALUE, PROVIDER_ADDR_TTL_SECS, PROVIDER_RECORD_TTL_SECS, ProviderRecord,
    REPROVIDE_INTERVAL_SECS, Record, UnixSecs, VALUE_RECORD_TTL_SECS, provider_key_of_cid,
};
pub use wire::{Codec, CodecError, DEFAULT_MAX_MESSAGE_SIZE};

// Re-exported so users name the same versions this crate was built against.
pub use cid;
pub use libp2p_identity;
pub use multihash;
