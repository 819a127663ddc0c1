package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// inboundCounter counts, server side, the kad requests that the nodes of this process
// receive from peers outside it (a provider under test), by message type, with their bytes
// on the wire (the protobuf and its varint length prefix), and remembers which node got an
// ADD_PROVIDER record of which key from which outside provider: what each node holds, as
// Go's handler stores a record only when its provider is the sender and has an address.
type inboundCounter struct {
	mu sync.Mutex
	// local holds the peer ids of this process's own nodes, whose requests are not counted.
	local           map[peer.ID]bool
	messages        map[string]uint64
	bytes           uint64
	last            time.Time
	lastAddProvider time.Time
	// providers gives each outside provider seen its bit in index (at most 8 providers).
	providers map[peer.ID]uint8
	// index[node][SHA-256 of the key] is the set of providers (bits) whose record of the
	// key the node received. Keys hold no pointers, so the GC does not scan them.
	index []map[[32]byte]uint8
}

var inbound = &inboundCounter{
	local:     map[peer.ID]bool{},
	messages:  map[string]uint64{},
	providers: map[peer.ID]uint8{},
}

// hook is node i's OnRequestHook: it runs on every request the node reads.
func (c *inboundCounter) hook(i int) func(context.Context, network.Stream, *pb.Message) {
	return func(_ context.Context, s network.Stream, req *pb.Message) {
		from := s.Conn().RemotePeer()
		size := proto.Size(req)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.local[from] {
			return
		}
		now := time.Now()
		c.messages[req.GetType().String()]++
		c.bytes += uint64(size + protowire.SizeVarint(uint64(size)))
		c.last = now
		if req.GetType() != pb.Message_ADD_PROVIDER {
			return
		}
		c.lastAddProvider = now
		for _, p := range req.GetProviderPeers() {
			if peer.ID(p.GetId()) != from || len(p.GetAddrs()) == 0 {
				continue
			}
			bit, ok := c.bit(from)
			if !ok || i >= len(c.index) {
				return
			}
			if c.index[i] == nil {
				c.index[i] = map[[32]byte]uint8{}
			}
			c.index[i][sha256.Sum256(req.GetKey())] |= bit
			return
		}
	}
}

// bit is the provider's bit in the index, given it on first sight; false past 8 providers.
func (c *inboundCounter) bit(p peer.ID) (uint8, bool) {
	if b, ok := c.providers[p]; ok {
		return b, true
	}
	if len(c.providers) >= 8 {
		return 0, false
	}
	b := uint8(1) << len(c.providers)
	c.providers[p] = b
	return b, true
}

// read returns the counters (times in seconds since the Unix epoch, 0 for never), then
// zeroes them when reset is set.
func (c *inboundCounter) read(reset bool) map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	secs := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	messages := map[string]uint64{}
	for t, n := range c.messages {
		messages[t] = n
	}
	out := map[string]any{
		"messages":          messages,
		"bytes":             c.bytes,
		"last":              secs(c.last),
		"last_add_provider": secs(c.lastAddProvider),
	}
	if reset {
		c.messages = map[string]uint64{}
		c.bytes = 0
		c.last = time.Time{}
		c.lastAddProvider = time.Time{}
	}
	return out
}

// placement returns, for each node, the indices of the keys (multihashes) whose record
// from provider p the node holds; with forget, it then drops p's records from the index.
func (c *inboundCounter) placement(p peer.ID, keys [][]byte, forget bool) ([][]int, error) {
	hashes := make([][32]byte, len(keys))
	for j, k := range keys {
		hashes[j] = sha256.Sum256(k)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][]int, len(c.index))
	bit, ok := c.providers[p]
	for i, held := range c.index {
		out[i] = []int{}
		if !ok {
			continue
		}
		for j, h := range hashes {
			if held[h]&bit != 0 {
				out[i] = append(out[i], j)
			}
		}
		if forget {
			for h, bits := range held {
				if bits &^= bit; bits == 0 {
					delete(held, h)
				} else {
					held[h] = bits
				}
			}
		}
	}
	if !ok && len(c.providers) >= 8 {
		return nil, errors.New("more than 8 outside providers: records of later ones are not indexed")
	}
	return out, nil
}
