//! The batched provide (`docs/specs/provide-batch.md`) on the sweep's side, sans-IO: how one
//! peer's share of a page is cut into batches, and what a batch's answer says of each of its
//! records.
//!
//! The shell (`send.rs`) sends each batch with [`Network::provide_batch`] and hands the result
//! to [`settle`]; nothing here does I/O.
//!
//! [`Network::provide_batch`]: dht_routing::Network::provide_batch

use dht_proto::{
    PeerInfo,
    batch::{ProvideBatch, ProvideBatchResponse, encode_request_body},
};
use dht_routing::RpcError;

/// The bytes of the provider entry of a batch sent by `provider` (field 1 of the request
/// body, with its tag and length).
pub(crate) fn provider_entry_bytes(provider: &PeerInfo) -> usize {
    let mut body = Vec::new();
    encode_request_body(
        &ProvideBatch {
            provider: provider.clone(),
            keys: Vec::new(),
        },
        &mut body,
    );
    body.len()
}

/// The bytes one key of `len` bytes adds to a request body: its tag (field 2, one byte), its
/// length as a varint, and the key.
pub(crate) fn key_entry_bytes(len: usize) -> usize {
    let mut varint = 1;
    let mut v = len >> 7;
    while v > 0 {
        varint += 1;
        v >>= 7;
    }
    1 + varint + len
}

/// Cuts keys of the lengths `key_lens` into consecutive batches of at most `max_keys` keys
/// whose request body (the provider entry of `provider_bytes`, then the keys) takes at most
/// `max_bytes`; returns how many keys each batch takes, in order.
///
/// A key too large for any batch still gets one of its own (the codec refuses it, and the
/// send counts as failed), so that every key is accounted for.
pub(crate) fn cut(
    provider_bytes: usize,
    key_lens: impl IntoIterator<Item = usize>,
    max_keys: usize,
    max_bytes: usize,
) -> Vec<usize> {
    let max_keys = max_keys.max(1);
    let mut sizes = Vec::new();
    let (mut keys, mut bytes) = (0usize, provider_bytes);
    for len in key_lens {
        let add = key_entry_bytes(len);
        if keys > 0 && (keys == max_keys || bytes + add > max_bytes) {
            sizes.push(keys);
            keys = 0;
            bytes = provider_bytes;
        }
        keys += 1;
        bytes += add;
    }
    if keys > 0 {
        sizes.push(keys);
    }
    sizes
}

/// What one batch came to, per record (as positions in the batch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The server answered per key: the positions it stored (durable, it holds them), and
    /// those it refused (`FULL`, `INVALID_KEY`, or a status unknown here), which are not sent
    /// again.
    Answered {
        /// Positions answered `STORED`.
        stored: Vec<usize>,
        /// Positions answered with any other status.
        refused: Vec<usize>,
    },
    /// The peer does not speak the protocol (after all): its records go as ADD_PROVIDER.
    Unsupported,
    /// Nothing of the batch is stored: a batch error (`RATE_LIMITED`, `UNAVAILABLE`, …), an
    /// answer whose statuses do not match the keys, or a failed call (timeout, lost message,
    /// unreachable). The sweep treats it as a failed send to the peer: a failed call may be
    /// tried `again` (as an ADD_PROVIDER, a peer is given up only after failures in a row),
    /// an answer refusing the batch is not, and once the peer is given up for the slice its
    /// records go to the next closest servers.
    Failed {
        /// What went wrong.
        why: String,
        /// The call failed (no answer): sending the batch again may work.
        again: bool,
    },
}

/// What the answer to a batch of `keys` keys (or the call's failure) says.
pub(crate) fn settle(keys: usize, answer: Result<ProvideBatchResponse, RpcError>) -> Settled {
    let response = match answer {
        Ok(response) => response,
        Err(RpcError::Unsupported(_)) => return Settled::Unsupported,
        Err(e) => {
            return Settled::Failed {
                why: e.to_string(),
                again: true,
            };
        }
    };
    if let Some(error) = response.error {
        return Settled::Failed {
            why: error.to_string(),
            again: false,
        };
    }
    if !response.answers(keys) {
        return Settled::Failed {
            why: format!(
                "{} statuses answer a batch of {keys} keys",
                response.statuses.len()
            ),
            again: false,
        };
    }
    let (stored, refused) = (0..keys).partition(|&i| response.statuses[i].is_stored());
    Settled::Answered { stored, refused }
}

#[cfg(test)]
mod tests {
    use dht_proto::{
        PeerId,
        batch::{
            BatchCodec, BatchError, KeyStatus, MAX_BATCH_KEYS, MAX_BATCH_MESSAGE_SIZE, ProvideBatch,
        },
    };
    use dht_routing::Feature;

    use super::*;

    fn provider() -> PeerInfo {
        PeerInfo::new(
            PeerId::random(),
            vec!["/ip4/192.0.2.1/tcp/4001".parse().unwrap()],
        )
    }

    #[test]
    fn sizes_are_those_the_codec_writes() {
        let p = provider();
        for n in [1usize, 2, 100] {
            for len in [1usize, 34, 80, 127, 128, 300] {
                let batch = ProvideBatch {
                    provider: p.clone(),
                    keys: vec![vec![7u8; len]; n],
                };
                let mut body = Vec::new();
                encode_request_body(&batch, &mut body);
                assert_eq!(
                    body.len(),
                    provider_entry_bytes(&p) + n * key_entry_bytes(len),
                    "{n} keys of {len} bytes"
                );
            }
        }
    }

    #[test]
    fn batches_keep_to_the_key_count_and_the_message_size() {
        let p = provider_entry_bytes(&provider());
        // 20,000 multihash keys: the key count binds.
        let sizes = cut(p, std::iter::repeat_n(34, 20_000), MAX_BATCH_KEYS, 1 << 20);
        assert_eq!(sizes, vec![8192, 8192, 3616]);
        // Keys of 80 bytes, a limit of 64 KiB: the size binds, and every batch fits.
        let sizes = cut(p, std::iter::repeat_n(80, 2000), MAX_BATCH_KEYS, 65_536);
        assert_eq!(sizes.iter().sum::<usize>(), 2000);
        for (i, n) in sizes.iter().enumerate() {
            let bytes = p + n * key_entry_bytes(80);
            assert!(bytes <= 65_536, "batch {i}: {bytes}");
            if i + 1 < sizes.len() {
                assert!(
                    bytes + key_entry_bytes(80) > 65_536,
                    "batch {i} could take more"
                );
            }
        }
        // Each batch is one the codec writes.
        let first = cut(p, [34; 9000], MAX_BATCH_KEYS, MAX_BATCH_MESSAGE_SIZE)[0];
        assert_eq!(first, MAX_BATCH_KEYS);
        let batch = ProvideBatch {
            provider: provider(),
            keys: vec![vec![1u8; 34]; first],
        };
        BatchCodec::default()
            .encode_request(&batch, &mut Vec::new())
            .unwrap();
        assert!(cut(p, std::iter::empty(), 10, 100).is_empty());
        // One key larger than a message still gets its batch.
        assert_eq!(cut(p, [10, 5000, 10], 10, 1000), vec![1, 1, 1]);
    }

    #[test]
    fn answers_say_what_is_stored_refused_or_failed() {
        let answer = ProvideBatchResponse {
            statuses: vec![
                KeyStatus::Stored,
                KeyStatus::Full,
                KeyStatus::Stored,
                KeyStatus::InvalidKey,
                KeyStatus::Unknown(9),
            ],
            error: None,
        };
        assert_eq!(
            settle(5, Ok(answer.clone())),
            Settled::Answered {
                stored: vec![0, 2],
                refused: vec![1, 3, 4]
            }
        );
        // Statuses that do not match the keys: nothing counts as stored.
        assert!(matches!(
            settle(4, Ok(answer)),
            Settled::Failed { again: false, .. }
        ));
        for error in [
            BatchError::RateLimited,
            BatchError::Unavailable,
            BatchError::ProviderNotSender,
            BatchError::NoAddresses,
            BatchError::Unknown(77),
        ] {
            assert!(matches!(
                settle(3, Ok(ProvideBatchResponse::refused(error))),
                Settled::Failed { again: false, .. }
            ));
        }
        assert_eq!(
            settle(3, Err(RpcError::Unsupported(Feature::ProvideBatch))),
            Settled::Unsupported
        );
        // A call that failed may be tried again.
        assert!(matches!(
            settle(3, Err(RpcError::Timeout)),
            Settled::Failed { again: true, .. }
        ));
        assert!(matches!(
            settle(3, Err(RpcError::NoResponse)),
            Settled::Failed { again: true, .. }
        ));
    }
}
