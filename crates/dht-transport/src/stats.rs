//! Counters of streams and requests, shared by all connections of one behaviour.

use std::{
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
};

use futures::AsyncWrite;

/// A snapshot of the kad protocol's counters since the transport started.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Outbound kad streams negotiated.
    pub outbound_streams_opened: u64,
    /// Outbound requests sent on a stream that had already carried a request.
    pub outbound_streams_reused: u64,
    /// Outbound requests that completed (a response, or ADD_PROVIDER written).
    pub outbound_requests_ok: u64,
    /// Outbound requests that failed (timeout, stream error, protocol error, no connection).
    pub outbound_requests_failed: u64,
    /// Flushed writes of outbound requests to a stream: one per request with a response;
    /// requests without one (ADD_PROVIDER) queued together for one peer share a write (see
    /// [`MAX_BATCHED_REQUESTS`](crate::MAX_BATCHED_REQUESTS)).
    pub outbound_writes: u64,
    /// Inbound kad streams accepted.
    pub inbound_streams_accepted: u64,
    /// Inbound kad streams reset because the connection had too many.
    pub inbound_streams_refused: u64,
    /// Inbound streams and requests reset because the node was answering as many requests
    /// as it may ([`KadConfig::max_inbound_requests`](crate::KadConfig::max_inbound_requests)),
    /// or as many from the sender's IP
    /// ([`KadConfig::max_inbound_requests_per_ip`](crate::KadConfig::max_inbound_requests_per_ip)).
    pub inbound_shed: u64,
    /// Inbound requests decoded and handed to the [`InboundHandler`](crate::InboundHandler).
    pub inbound_requests: u64,
    /// Inbound streams closed on a protocol error (undecodable or oversized message, handler
    /// error, failed write).
    pub inbound_stream_errors: u64,
    /// Batches of the batched provide protocol sent and answered (with any answer).
    pub outbound_batches: u64,
    /// Keys of the batches sent and answered.
    pub outbound_batch_records: u64,
    /// Keys that answers to this node's batches said were stored.
    pub outbound_batch_stored: u64,
    /// Batches that failed (timeout, stream error, malformed answer, no connection), besides
    /// those refused.
    pub outbound_batches_failed: u64,
    /// Batches not sent because the peer refused the protocol in negotiation.
    pub outbound_batches_refused: u64,
    /// Batches received, decoded and handed to the [`InboundHandler`](crate::InboundHandler).
    pub inbound_batches: u64,
    /// Keys of the batches received.
    pub inbound_batch_records: u64,
    /// Keys this node answered as stored.
    pub inbound_batch_stored: u64,
    /// Batches received and refused: answered with an error (wrong sender, no address, rate,
    /// store unavailable), or malformed (the stream is reset, nothing stored).
    pub inbound_batches_refused: u64,
    /// Bytes of kad and batched provide messages this node wrote to its streams: requests,
    /// batches and the answers it served, length prefixes included (not the noise, yamux,
    /// multistream-select or identify bytes around them).
    pub bytes_sent: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) outbound_streams_opened: AtomicU64,
    pub(crate) outbound_streams_reused: AtomicU64,
    pub(crate) outbound_requests_ok: AtomicU64,
    pub(crate) outbound_requests_failed: AtomicU64,
    pub(crate) outbound_writes: AtomicU64,
    pub(crate) inbound_streams_accepted: AtomicU64,
    pub(crate) inbound_streams_refused: AtomicU64,
    pub(crate) inbound_shed: AtomicU64,
    pub(crate) inbound_requests: AtomicU64,
    pub(crate) inbound_stream_errors: AtomicU64,
    pub(crate) outbound_batches: AtomicU64,
    pub(crate) outbound_batch_records: AtomicU64,
    pub(crate) outbound_batch_stored: AtomicU64,
    pub(crate) outbound_batches_failed: AtomicU64,
    pub(crate) outbound_batches_refused: AtomicU64,
    pub(crate) inbound_batches: AtomicU64,
    pub(crate) inbound_batch_records: AtomicU64,
    pub(crate) inbound_batch_stored: AtomicU64,
    pub(crate) inbound_batches_refused: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// A writer that adds every byte written through it to a counter: what the codecs write
/// (answers) is counted as it goes out.
pub(crate) struct Counted<'a, W> {
    inner: &'a mut W,
    counter: &'a AtomicU64,
}

impl<'a, W> Counted<'a, W> {
    pub(crate) fn new(inner: &'a mut W, counter: &'a AtomicU64) -> Self {
        Counted { inner, counter }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            add(self.counter, n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_close(cx)
    }
}

impl Stats {
    pub(crate) fn snapshot(&self) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            outbound_streams_opened: get(&self.outbound_streams_opened),
            outbound_streams_reused: get(&self.outbound_streams_reused),
            outbound_requests_ok: get(&self.outbound_requests_ok),
            outbound_requests_failed: get(&self.outbound_requests_failed),
            outbound_writes: get(&self.outbound_writes),
            inbound_streams_accepted: get(&self.inbound_streams_accepted),
            inbound_streams_refused: get(&self.inbound_streams_refused),
            inbound_shed: get(&self.inbound_shed),
            inbound_requests: get(&self.inbound_requests),
            inbound_stream_errors: get(&self.inbound_stream_errors),
            outbound_batches: get(&self.outbound_batches),
            outbound_batch_records: get(&self.outbound_batch_records),
            outbound_batch_stored: get(&self.outbound_batch_stored),
            outbound_batches_failed: get(&self.outbound_batches_failed),
            outbound_batches_refused: get(&self.outbound_batches_refused),
            inbound_batches: get(&self.inbound_batches),
            inbound_batch_records: get(&self.inbound_batch_records),
            inbound_batch_stored: get(&self.inbound_batch_stored),
            inbound_batches_refused: get(&self.inbound_batches_refused),
            bytes_sent: get(&self.bytes_sent),
        }
    }
}
