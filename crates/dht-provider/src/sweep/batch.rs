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
    batch::{Allowance, BatchError, ProvideBatch, ProvideBatchResponse, encode_request_body},
};
use dht_routing::RpcError;
use std::time::Duration;

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

/// How much more than the keys listed one by one a batch may take when the codec packs them
/// as one run (field 3: the run's header and the shared prefix), which for more than a few
/// keys takes less than listing them.
pub(crate) const RUN_SLACK: usize = 96;

/// Cuts keys of the lengths `key_lens` into consecutive batches of at most `max_keys` keys
/// whose request body (the provider entry of `provider_bytes`, then the keys) takes at most
/// `max_bytes`, packed or not (keys counted as listed one by one, less [`RUN_SLACK`]);
/// returns how many keys each batch takes, in order.
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
    let max_bytes = max_bytes.saturating_sub(RUN_SLACK);
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

/// The first wait after a batch answered "later" (`RATE_LIMITED`, `UNAVAILABLE`): 1 s.
/// Each "later" in a row doubles it, up to [`BATCH_BACKOFF_MAX`].
pub(crate) const BATCH_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between two batches to one peer: 16 s.
pub(crate) const BATCH_BACKOFF_MAX: Duration = Duration::from_secs(16);

/// "Later" answers in a row after which a peer is given up on for the slice (its records go
/// to the next closest servers): 8, about a minute and a half of waiting in all.
pub(crate) const MAX_BATCH_DEFERRALS: u32 = 8;

/// How a peer that answered "later" `deferrals` times in a row (at least once) is sent to
/// next, after a batch of `n` keys: the most keys of the next batch (half of `n`: a batch
/// larger than a server's burst is never allowed, and a smaller one waits less for its
/// tokens) and the wait before it; `None` once the peer is to be given up on.
pub(crate) fn defer(n: usize, deferrals: u32) -> Option<(usize, Duration)> {
    if deferrals >= MAX_BATCH_DEFERRALS {
        return None;
    }
    let doubling = 1u32 << deferrals.saturating_sub(1).min(16);
    let wait = BATCH_BACKOFF
        .saturating_mul(doubling)
        .min(BATCH_BACKOFF_MAX);
    Some(((n / 2).max(1), wait))
}

/// The most keys of the first batch to a peer, before its answer has told its allowance: a
/// batch over a server's rate limit is refused whole and its bytes sent twice, so the first
/// is small; 256 keys of 34 bytes are about 9 KiB.
pub(crate) const FIRST_BATCH_KEYS: usize = 256;

/// Servers whose last allowance the provider remembers: 4,096 (about 100 KiB).
pub(crate) const ALLOWANCES_KEPT: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(4096) {
    Some(n) => n,
    None => std::num::NonZeroUsize::MIN,
};

/// An allowance a server told, and when the answer came.
pub(crate) type Told = (Allowance, tokio::time::Instant);

/// How many of `want` keys to send a peer that told its `allowance` `since` ago, and how long
/// to wait first, so that the batch is within the server's rate limit and is not refused
/// (and its bytes sent twice): no more than the server's burst; at once if its allowance has
/// grown to the batch; otherwise after the wait for the tokens missing, in whole seconds (a
/// server counts time in seconds). The wait is at most [`BATCH_BACKOFF_MAX`]: a batch that
/// would need longer is cut to what the peer takes by then.
pub(crate) fn pace(want: usize, allowance: &Allowance, since: Duration) -> (usize, Duration) {
    let per_second = u64::from(allowance.per_second);
    let burst = u64::from(allowance.burst.max(1));
    let have = u64::from(allowance.keys)
        .saturating_add(since.as_secs().saturating_mul(per_second))
        .min(burst);
    let n = (want as u64).min(burst).max(1);
    if have >= n {
        return (n as usize, Duration::ZERO);
    }
    let most = BATCH_BACKOFF_MAX.as_secs();
    let secs = if per_second == 0 {
        most
    } else {
        (n - have).div_ceil(per_second).min(most)
    };
    let n = n
        .min(have.saturating_add(secs.saturating_mul(per_second)))
        .max(1);
    (n as usize, Duration::from_secs(secs))
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
    /// Nothing of the batch is stored, and the server said to come back later: `RATE_LIMITED`
    /// (the batch is more than its rate limit allows now) or `UNAVAILABLE` (it cannot write
    /// now), or an error value unknown here, read as `UNAVAILABLE`. The sweep waits, and sends
    /// the keys again in smaller batches, while the peer's budget lasts.
    Later {
        /// What the server answered.
        why: BatchError,
    },
    /// Nothing of the batch is stored: a refusal that waiting does not change
    /// (`PROVIDER_NOT_SENDER`, `NO_ADDRESSES`), an answer whose statuses do not match the
    /// keys, or a failed call (timeout, lost message, unreachable). The sweep treats it as a
    /// failed send to the peer: a failed call may be tried `again` (as an ADD_PROVIDER, a
    /// peer is given up only after failures in a row), an answer refusing the batch is not,
    /// and once the peer is given up for the slice its records go to the next closest servers.
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
        if matches!(
            error,
            BatchError::RateLimited | BatchError::Unavailable | BatchError::Unknown(_)
        ) {
            return Settled::Later { why: error };
        }
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
        batch::{BatchCodec, KeyStatus, MAX_BATCH_KEYS, MAX_BATCH_MESSAGE_SIZE, ProvideBatch},
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
                let listed = provider_entry_bytes(&p) + n * key_entry_bytes(len);
                if n == 1 || len == 1 {
                    // Not packed: exactly the keys listed.
                    assert_eq!(body.len(), listed, "{n} keys of {len} bytes");
                } else {
                    assert!(body.len() <= listed + RUN_SLACK, "{n} keys of {len} bytes");
                }
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
            assert!(bytes + RUN_SLACK <= 65_536, "batch {i}: {bytes}");
            if i + 1 < sizes.len() {
                assert!(
                    bytes + key_entry_bytes(80) + RUN_SLACK > 65_536,
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
    fn an_allowance_paces_batches_within_the_rate_limit() {
        let a = |keys, per_second, burst| Allowance {
            keys,
            per_second,
            burst,
        };
        let now = Duration::ZERO;
        // Enough now: at once.
        assert_eq!(pace(500, &a(600, 100, 1000), now), (500, Duration::ZERO));
        // Never more than the burst.
        assert_eq!(
            pace(8192, &a(10_000, 1000, 10_000), now),
            (8192, Duration::ZERO)
        );
        assert_eq!(
            pace(8192, &a(5000, 1000, 5000), now),
            (5000, Duration::ZERO)
        );
        // Tokens earned since the answer count, in whole seconds.
        assert_eq!(
            pace(500, &a(100, 100, 1000), Duration::from_millis(4900)),
            (500, Duration::ZERO)
        );
        assert_eq!(
            pace(500, &a(100, 100, 1000), Duration::from_millis(3900)),
            (500, Duration::from_secs(1))
        );
        // Short: wait for the missing tokens.
        assert_eq!(
            pace(8192, &a(1808, 1000, 10_000), now),
            (8192, Duration::from_secs(7))
        );
        // A wait past the longest is cut to what the peer takes by then.
        assert_eq!(
            pace(8192, &a(0, 100, 10_000), now),
            (1600, BATCH_BACKOFF_MAX)
        );
        // A server that earns nothing: one key after the longest wait.
        assert_eq!(pace(10, &a(0, 0, 0), now), (1, BATCH_BACKOFF_MAX));
    }

    #[test]
    fn a_later_answer_halves_the_batch_and_doubles_the_wait() {
        assert_eq!(defer(8192, 1), Some((4096, Duration::from_secs(1))));
        assert_eq!(defer(4096, 2), Some((2048, Duration::from_secs(2))));
        assert_eq!(defer(2048, 3), Some((1024, Duration::from_secs(4))));
        assert_eq!(defer(1, 5), Some((1, BATCH_BACKOFF_MAX)));
        assert_eq!(
            defer(10, MAX_BATCH_DEFERRALS - 1).unwrap().1,
            BATCH_BACKOFF_MAX
        );
        assert_eq!(defer(10, MAX_BATCH_DEFERRALS), None);
        let waited: Duration = (1..MAX_BATCH_DEFERRALS)
            .map(|d| defer(100, d).unwrap().1)
            .sum();
        assert_eq!(waited, Duration::from_secs(1 + 2 + 4 + 8 + 16 + 16 + 16));
    }

    #[test]
    fn answers_say_what_is_stored_refused_or_failed() {
        let answer = ProvideBatchResponse::answered(vec![
            KeyStatus::Stored,
            KeyStatus::Full,
            KeyStatus::Stored,
            KeyStatus::InvalidKey,
            KeyStatus::Unknown(9),
        ]);
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
        // A server that says "later" is waited for; one that refuses the provider is not.
        for error in [
            BatchError::RateLimited,
            BatchError::Unavailable,
            BatchError::Unknown(77),
        ] {
            assert_eq!(
                settle(3, Ok(ProvideBatchResponse::refused(error))),
                Settled::Later { why: error }
            );
        }
        for error in [BatchError::ProviderNotSender, BatchError::NoAddresses] {
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
