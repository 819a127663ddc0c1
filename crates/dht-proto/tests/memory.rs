//! What decoding costs in memory: a hostile peer's bytes may not turn into much more memory
//! than they occupy on the wire, and an announced length costs nothing until its bytes arrive.
#![allow(clippy::unwrap_used)]

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use dht_proto::{Codec, CodecError, PeerId, Request, Response, pb::put_varint};
use futures::AsyncRead;

/// A stream that hands out `data` and then ends, recording the largest buffer a reader
/// offered it (what the reader had allocated to fill).
struct Watched<'a> {
    data: &'a [u8],
    largest_buffer: usize,
}

impl AsyncRead for Watched<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.largest_buffer = self.largest_buffer.max(buf.len());
        let n = buf.len().min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

fn len_field(field: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push((field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

const FOUR_MIB: usize = 4 * 1024 * 1024;

#[test]
fn an_announced_length_costs_nothing_until_its_bytes_arrive() {
    // A 4 MiB frame announced, 100 bytes of it sent, then the stream ends.
    let mut wire = Vec::new();
    put_varint(&mut wire, FOUR_MIB as u64);
    wire.extend_from_slice(&[0u8; 100]);
    let mut io = Watched {
        data: &wire,
        largest_buffer: 0,
    };
    let out = futures::executor::block_on(Codec::default().read_request(&mut io));
    assert!(matches!(out, Err(CodecError::Truncated)), "{out:?}");
    let offered = io.largest_buffer;
    assert!(
        offered <= 8 * 1024,
        "reading 100 bytes used a {offered}-byte buffer"
    );
}

#[test]
fn a_whole_frame_is_still_read() {
    // The growing buffer reads a large body completely.
    let req = Request::FindNode {
        key: vec![7; 1024 * 1024],
    };
    let codec = Codec::default();
    let mut wire = Vec::new();
    codec.encode_request(&req, &mut wire).unwrap();
    let mut io = Watched {
        data: &wire,
        largest_buffer: 0,
    };
    let out = futures::executor::block_on(codec.read_request(&mut io));
    assert_eq!(out.unwrap(), Some(req));
}

/// A FIND_NODE response body of about `size` bytes: `peers` peers, each with as many empty
/// addresses (2 bytes each on the wire) as fit.
fn tiny_addresses_response(size: usize, peers: usize) -> Vec<u8> {
    let mut body = vec![0x08, 0x04]; // type = FIND_NODE
    let per_peer = size / peers;
    for _ in 0..peers {
        let mut peer = Vec::new();
        len_field(1, &PeerId::random().to_bytes(), &mut peer);
        while peer.len() + 2 <= per_peer {
            len_field(2, &[], &mut peer);
        }
        len_field(8, &peer, &mut body);
    }
    body
}

#[test]
fn tiny_addresses_do_not_grow_into_many_times_the_message() {
    let body = tiny_addresses_response(FOUR_MIB - 1024, 20);
    let out = dht_proto::wire::decode_response_body(&body);
    let Ok(Response::FindNode { closer_peers }) = out else {
        panic!("decodes: {out:?}");
    };
    assert_eq!(closer_peers.len(), 20);
    // Before the cap each peer kept ~100,000 empty addresses (~56 bytes each in memory):
    // over 100 MiB from 4 MiB on the wire.
    let addrs: Vec<usize> = closer_peers.iter().map(|p| p.addrs.len()).collect();
    assert_eq!(
        addrs,
        vec![32; 20],
        "each peer keeps its first 32 addresses"
    );
}

#[test]
fn many_small_peers_do_not_grow_into_many_times_the_message() {
    // About 100,000 peers of one address each.
    let body = tiny_addresses_response(FOUR_MIB - 1024, 100_000);
    let out = dht_proto::wire::decode_response_body(&body);
    let Ok(Response::FindNode { closer_peers }) = out else {
        panic!("decodes: {out:?}");
    };
    assert_eq!(closer_peers.len(), 256, "the first 256 peers are kept");
}

#[test]
fn the_caps_are_the_codec_s_own() {
    let peers: Vec<dht_proto::PeerInfo> = (0..5u16)
        .map(|i| {
            let addrs = (0..5u16)
                .map(|j| format!("/ip4/10.0.0.1/tcp/{}", i * 10 + j).parse().unwrap())
                .collect();
            dht_proto::PeerInfo::new(PeerId::random(), addrs)
        })
        .collect();
    let resp = Response::GetProviders {
        key: b"k".to_vec(),
        providers: peers.clone(),
        closer_peers: peers.clone(),
    };
    let mut frame = Vec::new();
    Codec::default().encode_response(&resp, &mut frame).unwrap();
    let codec = Codec::default()
        .with_max_peers_per_list(3)
        .with_max_addrs_per_peer(2);
    assert_eq!(
        (codec.max_peers_per_list(), codec.max_addrs_per_peer()),
        (3, 2)
    );
    let (got, used) = codec.decode_response(&frame).unwrap().unwrap();
    assert_eq!(used, frame.len());
    let want: Vec<dht_proto::PeerInfo> = peers[..3]
        .iter()
        .map(|p| dht_proto::PeerInfo::new(p.peer_id, p.addrs[..2].to_vec()))
        .collect();
    assert_eq!(
        got,
        Response::GetProviders {
            key: b"k".to_vec(),
            providers: want.clone(),
            closer_peers: want,
        }
    );
    // The default keeps them all.
    let (all, _) = Codec::default().decode_response(&frame).unwrap().unwrap();
    assert_eq!(all, resp);
}
