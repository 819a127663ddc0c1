// Command kadpeers runs N go-libp2p-kad-dht nodes in one process, for the interop tests and
// the side-by-side bench of amino-dht-rs. It is test tooling, not a product.
//
// Every node listens on 127.0.0.1 (TCP, noise, yamux) and speaks /ipfs/kad/1.0.0 in server
// mode (the last -clients nodes in client mode), with no bootstrap peers. On start the program prints one JSON line
// {"ready":true,"nodes":[{"id":…,"addrs":[…]},…]}; then it reads one JSON command per line on
// stdin and prints one JSON answer per line, in order: {"ok":true,"result":…} or
// {"ok":false,"error":"…"}. Commands name a node by its index ("node"). Keys of providers are
// CIDs (text), keys and values of records are hex. The commands are listed in run below.
package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/ipns"
	ipnspb "github.com/ipfs/boxo/ipns/pb"
	"github.com/ipfs/boxo/path"
	drclient "github.com/ipfs/boxo/routing/http/client"
	"github.com/ipfs/boxo/routing/http/types"
	"github.com/ipfs/boxo/routing/http/types/iter"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p-kad-dht/provider"
	"github.com/libp2p/go-libp2p-kad-dht/provider/buffered"
	"github.com/libp2p/go-libp2p-kad-dht/provider/keystore"
	record "github.com/libp2p/go-libp2p-record"
	ic "github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

// node is one Go DHT server; sweep is its SweepingProvider, made on first use, and front
// the provider that StartProviding and StopProviding go through (sweep itself, or with
// -keystore Kubo's buffered provider around it).
type node struct {
	host  host.Host
	dht   *dht.IpfsDHT
	sweep *provider.SweepingProvider
	front interface {
		StartProviding(force bool, keys ...mh.Multihash) error
		StopProviding(keys ...mh.Multihash) error
		Close() error
	}
}

// settings are the command-line settings the nodes are made with.
type settings struct {
	// keystore, when set, is the directory of a LevelDB datastore that holds the
	// SweepingProvider's keystore and state, as Kubo's repo datastore does.
	keystore string
	// reprovide is the SweepingProvider's reprovide interval (Kubo: Provide.DHT.Interval).
	reprovide time.Duration
	// listen is each node's listen multiaddrs, comma-separated.
	listen string
	// defaultLimits keeps go-libp2p's default resource manager (for one node facing
	// hostile peers) instead of no limits (for many nodes in one process).
	defaultLimits bool
}

var config settings

// peerJSON is a peer as the commands and answers write it.
type peerJSON struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// command is one line of stdin; each command reads the fields it needs.
type command struct {
	Cmd      string    `json:"cmd"`
	Node     int       `json:"node"`
	Peer     *peerJSON `json:"peer,omitempty"`
	Keys     []string  `json:"keys,omitempty"`
	Key      string    `json:"key,omitempty"`
	Value    string    `json:"value,omitempty"`
	Count    int       `json:"count,omitempty"`
	Force    bool      `json:"force,omitempty"`
	Times    int       `json:"times,omitempty"`
	Invalid  bool      `json:"invalid,omitempty"`
	URL      string    `json:"url,omitempty"`
	Parallel int       `json:"parallel,omitempty"`
	Timeout  float64   `json:"timeout,omitempty"`
	Seed     string    `json:"seed,omitempty"`
	Seq      uint64    `json:"seq,omitempty"`
	EOL      int64     `json:"eol,omitempty"`
	KeyType  string    `json:"key_type,omitempty"`
	Reset    bool      `json:"reset,omitempty"`
}

func main() {
	n := flag.Int("n", 1, "number of Go DHT nodes")
	clients := flag.Int("clients", 0, "how many of the last nodes run in client mode")
	flag.StringVar(&config.keystore, "keystore", "", "LevelDB datastore directory of the SweepingProvider (default: in memory)")
	flag.DurationVar(&config.reprovide, "reprovide", 22*time.Hour, "the SweepingProvider's reprovide interval")
	flag.BoolVar(&config.defaultLimits, "default-limits", false, "keep go-libp2p's default resource manager (default: no limits, as N nodes share one process)")
	flag.StringVar(&config.listen, "listen", "/ip4/127.0.0.1/tcp/0", "comma-separated listen multiaddrs of each node (TCP and QUIC v1 are spoken)")
	flag.Parse()
	nodes := make([]*node, 0, *n)
	for i := 0; i < *n; i++ {
		mode := dht.ModeServer
		if i >= *n-*clients {
			mode = dht.ModeClient
		}
		nd, err := newNode(mode, i)
		if err != nil {
			fatal(err)
		}
		nodes = append(nodes, nd)
	}
	for _, nd := range nodes {
		inbound.local[nd.host.ID()] = true
	}
	inbound.index = make([]map[[32]byte]uint8, len(nodes))
	infos := make([]peerJSON, len(nodes))
	for i, nd := range nodes {
		infos[i] = info(peer.AddrInfo{ID: nd.host.ID(), Addrs: nd.host.Addrs()})
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string]any{"ready": true, "nodes": infos}); err != nil {
		fatal(err)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		var c command
		var result any
		err := json.Unmarshal(in.Bytes(), &c)
		if err == nil {
			if c.Cmd == "quit" {
				break
			}
			if c.Node < 0 || c.Node >= len(nodes) {
				err = fmt.Errorf("no node %d", c.Node)
			} else {
				timeout := 60 * time.Second
				if c.Timeout > 0 {
					timeout = time.Duration(c.Timeout * float64(time.Second))
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				result, err = run(ctx, nodes, nodes[c.Node], &c)
				cancel()
			}
		}
		answer := map[string]any{"ok": err == nil}
		if err != nil {
			answer["error"] = err.Error()
		} else {
			answer["result"] = result
		}
		if err := out.Encode(answer); err != nil {
			fatal(err)
		}
	}
	for _, nd := range nodes {
		if nd.front != nil {
			_ = nd.front.Close()
		}
		_ = nd.dht.Close()
		_ = nd.host.Close()
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "kadpeers:", err)
	os.Exit(1)
}

func newNode(mode dht.ModeOpt, index int) (*node, error) {
	opts := []libp2p.Option{
		libp2p.ListenAddrStrings(strings.Split(config.listen, ",")...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(libp2pquic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
	}
	if !config.defaultLimits {
		// One process holds every node: the default limits are per process.
		opts = append(opts, libp2p.ResourceManager(&network.NullResourceManager{}))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, err
	}
	d, err := dht.New(h, dht.Mode(mode), dht.OnRequestHook(inbound.hook(index)))
	if err != nil {
		return nil, err
	}
	return &node{host: h, dht: d}, nil
}

// newKey is a fresh private key of the libp2p key type named (default ed25519).
func newKey(keyType string) (ic.PrivKey, error) {
	var sk ic.PrivKey
	var err error
	switch keyType {
	case "", "ed25519":
		sk, _, err = ic.GenerateEd25519Key(nil)
	case "rsa":
		sk, _, err = ic.GenerateKeyPair(ic.RSA, 2048)
	case "secp256k1":
		sk, _, err = ic.GenerateKeyPair(ic.Secp256k1, 0)
	case "ecdsa":
		sk, _, err = ic.GenerateKeyPair(ic.ECDSA, 0)
	default:
		err = fmt.Errorf("unknown key type %q", keyType)
	}
	return sk, err
}

// weakRsaPkRecord is the /pk/ record of a fresh 1024-bit RSA key, encoded by hand since
// go-libp2p refuses to make or read RSA keys under 2048 bits.
func weakRsaPkRecord() (any, error) {
	sk, err := rsa.GenerateKey(crand.Reader, 1024)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&sk.PublicKey)
	if err != nil {
		return nil, err
	}
	pub, err := proto.Marshal(&cryptopb.PublicKey{Type: cryptopb.KeyType_RSA.Enum(), Data: der})
	if err != nil {
		return nil, err
	}
	id, err := mh.Sum(pub, mh.SHA2_256, -1)
	if err != nil {
		return nil, err
	}
	key := append([]byte("/pk/"), id...)
	return map[string]string{"key": hex.EncodeToString(key), "value": hex.EncodeToString(pub)}, nil
}

// peerRecords drains a Delegated Routing V1 answer: the peer records that asPeer finds in
// it, or its first error.
func peerRecords[T any](it iter.ResultIter[T], asPeer func(T) *types.PeerRecord) ([]peerJSON, error) {
	defer it.Close()
	records := []peerJSON{}
	for it.Next() {
		r := it.Val()
		if r.Err != nil {
			return nil, r.Err
		}
		pr := asPeer(r.Val)
		if pr == nil {
			continue
		}
		p := peerJSON{Addrs: []string{}}
		if pr.ID != nil {
			p.ID = pr.ID.String()
		}
		for _, a := range pr.Addrs {
			p.Addrs = append(p.Addrs, a.String())
		}
		records = append(records, p)
	}
	return records, nil
}

// connect dials the peer, ignoring the dial backoff of an earlier failed dial (a dial of the
// DHT's own, crossing another on loopback), with up to three tries.
func connect(ctx context.Context, h host.Host, ai peer.AddrInfo) error {
	ctx = network.WithForceDirectDial(ctx, "interop test")
	var err error
	for try := 0; try < 3; try++ {
		if err = h.Connect(ctx, ai); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}

func info(ai peer.AddrInfo) peerJSON {
	p := peerJSON{ID: ai.ID.String(), Addrs: []string{}}
	for _, a := range ai.Addrs {
		p.Addrs = append(p.Addrs, a.String())
	}
	return p
}

func parsePeer(p *peerJSON) (peer.AddrInfo, error) {
	if p == nil {
		return peer.AddrInfo{}, errors.New("missing peer")
	}
	id, err := peer.Decode(p.ID)
	if err != nil {
		return peer.AddrInfo{}, err
	}
	ai := peer.AddrInfo{ID: id}
	for _, s := range p.Addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return peer.AddrInfo{}, err
		}
		ai.Addrs = append(ai.Addrs, a)
	}
	return ai, nil
}

func parseCids(keys []string) ([]cid.Cid, error) {
	out := make([]cid.Cid, len(keys))
	for i, k := range keys {
		c, err := cid.Decode(k)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		out[i] = c
	}
	return out, nil
}

func multihashes(cids []cid.Cid) []mh.Multihash {
	out := make([]mh.Multihash, len(cids))
	for i, c := range cids {
		out[i] = c.Hash()
	}
	return out
}

// parallel runs f(i) for i in [0, n) on at most width goroutines and returns the first error.
func parallel(n, width int, f func(i int) error) error {
	if width <= 0 {
		width = 32
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for w := 0; w < width; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// messenger learns the peer's addresses and returns its id with a messenger over this node's
// message sender (which keeps one stream per peer and reuses it).
func (nd *node) messenger(p *peerJSON) (peer.ID, *pb.ProtocolMessenger, error) {
	ai, err := parsePeer(p)
	if err != nil {
		return "", nil, err
	}
	nd.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Hour)
	pm, err := pb.NewProtocolMessenger(nd.dht.MessageSender())
	return ai.ID, pm, err
}

// keyValue decodes the command's hex key and, if it has one, its hex value.
func keyValue(c *command) (key, value []byte, err error) {
	if key, err = hex.DecodeString(c.Key); err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	if value, err = hex.DecodeString(c.Value); err != nil {
		return nil, nil, fmt.Errorf("value: %w", err)
	}
	return key, value, nil
}

func (nd *node) sweeper() (*provider.SweepingProvider, error) {
	if nd.sweep != nil {
		return nd.sweep, nil
	}
	// Kubo's defaults (Provide.DHT.*, Kubo 0.38+): 16 workers, 2 dedicated periodic, 1
	// dedicated burst, 20 connections each, 22 h interval, 1 h most reprovide delay, 2 h
	// offline delay, online check every minute, replication 20.
	opts := []provider.Option{
		provider.WithHost(nd.host),
		provider.WithRouter(nd.dht),
		provider.WithMessageSender(nd.dht.MessageSender()),
		provider.WithSelfAddrs(nd.dht.FilteredAddrs),
		provider.WithReplicationFactor(20),
		provider.WithReprovideInterval(config.reprovide),
		provider.WithMaxReprovideDelay(time.Hour),
		provider.WithOfflineDelay(2 * time.Hour),
		provider.WithConnectivityCheckOnlineInterval(time.Minute),
		provider.WithMaxWorkers(16),
		provider.WithDedicatedPeriodicWorkers(2),
		provider.WithDedicatedBurstWorkers(1),
		provider.WithMaxProvideConnsPerWorker(20),
	}
	var ds datastore.Batching
	if config.keystore != "" {
		// As Kubo: the keystore (16 prefix bits, batches of 16384) and the provider's state
		// in the repo's datastore, here a LevelDB datastore on disk (Kubo's default repo keeps everything but blocks in LevelDB).
		repo, err := leveldb.NewDatastore(config.keystore, nil)
		if err != nil {
			return nil, err
		}
		ds = namespace.Wrap(repo, datastore.NewKey("provider"))
		ks, err := keystore.NewKeystore(namespace.Wrap(ds, datastore.NewKey("keystore")),
			keystore.WithPrefixBits(16), keystore.WithBatchSize(16384))
		if err != nil {
			return nil, err
		}
		opts = append(opts, provider.WithKeystore(ks), provider.WithDatastore(ds))
	}
	s, err := provider.New(opts...)
	if err != nil {
		return nil, err
	}
	nd.sweep = s
	nd.front = s
	if ds != nil {
		// Kubo puts its buffered provider in front: StartProviding queues on the datastore
		// and a worker hands the keys on in batches of 1024.
		nd.front = buffered.New(s, ds, buffered.WithBatchSize(1024),
			buffered.WithDsName("bprov"), buffered.WithIdleWriteTime(time.Minute))
	}
	return s, nil
}

// run executes one command on nd.
func run(ctx context.Context, nodes []*node, nd *node, c *command) (any, error) {
	switch c.Cmd {
	// connect {peer}: dials the peer (the DHT adds it to its table after identify and its checks).
	case "connect":
		ai, err := parsePeer(c.Peer)
		if err != nil {
			return nil, err
		}
		return nil, connect(ctx, nd.host, ai)

	// mesh: connects every node to every other node of this process, then refreshes each table.
	case "mesh":
		for i, a := range nodes {
			for _, b := range nodes[i+1:] {
				if err := connect(ctx, a.host, peer.AddrInfo{ID: b.host.ID(), Addrs: b.host.Addrs()}); err != nil {
					return nil, err
				}
			}
		}
		return nil, nil

	// refresh: one refresh of the node's routing table, waited for.
	case "refresh":
		select {
		case err := <-nd.dht.ForceRefresh():
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}

	// routing_table: the peer ids in the node's routing table.
	case "routing_table":
		ids := []string{}
		for _, p := range nd.dht.RoutingTable().ListPeers() {
			ids = append(ids, p.String())
		}
		return ids, nil

	// provide {keys, parallel}: the legacy provide (one walk per key) of each CID.
	case "provide":
		cids, err := parseCids(c.Keys)
		if err != nil {
			return nil, err
		}
		return nil, parallel(len(cids), c.Parallel, func(i int) error {
			return nd.dht.Provide(ctx, cids[i], true)
		})

	// find_providers {keys, count}: for each CID, the providers found (peer ids and addrs).
	case "find_providers":
		cids, err := parseCids(c.Keys)
		if err != nil {
			return nil, err
		}
		count := c.Count
		if count <= 0 {
			count = 20
		}
		found := make([][]peerJSON, len(cids))
		err = parallel(len(cids), c.Parallel, func(i int) error {
			found[i] = []peerJSON{}
			for ai := range nd.dht.FindProvidersAsync(ctx, cids[i], count) {
				found[i] = append(found[i], info(ai))
			}
			return nil
		})
		return found, err

	// holds {keys}: for each CID, the providers this node itself stores.
	case "holds":
		cids, err := parseCids(c.Keys)
		if err != nil {
			return nil, err
		}
		held := make([][]string, len(cids))
		for i, k := range cids {
			provs, err := nd.dht.ProviderStore().GetProviders(ctx, k.Hash())
			if err != nil {
				return nil, err
			}
			held[i] = []string{}
			for _, p := range provs {
				held[i] = append(held[i], p.ID.String())
			}
		}
		return held, nil

	// add_local_providers {key, count}: stores `count` provider records for the CID in this
	// node's own provider store, from random peer ids with three addresses each (to make its
	// GET_PROVIDERS answer large).
	case "add_local_providers":
		k, err := cid.Decode(c.Key)
		if err != nil {
			return nil, err
		}
		for i := 0; i < c.Count; i++ {
			sk, _, err := ic.GenerateEd25519Key(nil)
			if err != nil {
				return nil, err
			}
			id, err := peer.IDFromPrivateKey(sk)
			if err != nil {
				return nil, err
			}
			a, b, d := i>>16&0xff, i>>8&0xff, i&0xff
			addrs := []ma.Multiaddr{
				ma.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001", a, b, d)),
				ma.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/udp/4001/quic-v1", a, b, d)),
				ma.StringCast(fmt.Sprintf("/ip6/fd00::%x:%x:%x/tcp/4001", a, b, d)),
			}
			if err := nd.dht.ProviderStore().AddProvider(ctx, k.Hash(), peer.AddrInfo{ID: id, Addrs: addrs}); err != nil {
				return nil, err
			}
		}
		return nil, nil

	// find_peer {peer: {id}}: the addresses found for the peer.
	case "find_peer":
		id, err := peer.Decode(c.Peer.ID)
		if err != nil {
			return nil, err
		}
		ai, err := nd.dht.FindPeer(ctx, id)
		if err != nil {
			return nil, err
		}
		return info(ai), nil

	// closest_peers {key}: Go's closest-peers walk for the key bytes (hex).
	case "closest_peers":
		key, _, err := keyValue(c)
		if err != nil {
			return nil, err
		}
		peers, err := nd.dht.GetClosestPeers(ctx, string(key))
		if err != nil {
			return nil, err
		}
		ids := []string{}
		for _, p := range peers {
			ids = append(ids, p.String())
		}
		return ids, nil

	// put_value {key, value}: PutValue of the record (hex key and value).
	case "put_value":
		key, value, err := keyValue(c)
		if err != nil {
			return nil, err
		}
		return nil, nd.dht.PutValue(ctx, string(key), value)

	// get_value {key}: GetValue of the key (hex); the value in hex.
	case "get_value":
		key, _, err := keyValue(c)
		if err != nil {
			return nil, err
		}
		value, err := nd.dht.GetValue(ctx, string(key))
		if err != nil {
			return nil, err
		}
		return hex.EncodeToString(value), nil

	// pk_record {key_type}: this node's /pk/ record {key, value} (hex); with key_type "rsa",
	// "secp256k1" or "ecdsa", the record of a fresh key of that type instead; with "rsa1024",
	// of a 1024-bit RSA key, which go-libp2p refuses.
	case "pk_record":
		if c.KeyType == "rsa1024" {
			return weakRsaPkRecord()
		}
		pk := nd.host.Peerstore().PubKey(nd.host.ID())
		if c.KeyType != "" {
			sk, err := newKey(c.KeyType)
			if err != nil {
				return nil, err
			}
			pk = sk.GetPublic()
		}
		id, err := peer.IDFromPublicKey(pk)
		if err != nil {
			return nil, err
		}
		pub, err := ic.MarshalPublicKey(pk)
		if err != nil {
			return nil, err
		}
		key := "/pk/" + string(id)
		return map[string]string{"key": hex.EncodeToString([]byte(key)), "value": hex.EncodeToString(pub)}, nil

	// ipns_record {value, seed, seq, eol, invalid}: an IPNS record made with boxo/ipns that
	// points to the path `value`, with sequence number `seq`, valid until `eol` seconds from
	// now (default 3600; negative: expired), for the name of the ed25519 key made from `seed`
	// (hex, 32 bytes; default a fresh key of key_type, ed25519 by default); with invalid,
	// its signature is broken.
	case "ipns_record":
		var sk ic.PrivKey
		var err error
		if c.Seed != "" {
			seed, err := hex.DecodeString(c.Seed)
			if err != nil || len(seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("seed must be %d bytes of hex", ed25519.SeedSize)
			}
			sk, err = ic.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
			if err != nil {
				return nil, err
			}
		} else if sk, err = newKey(c.KeyType); err != nil {
			return nil, err
		}
		eol := time.Hour
		if c.EOL != 0 {
			eol = time.Duration(c.EOL) * time.Second
		}
		pid, err := peer.IDFromPrivateKey(sk)
		if err != nil {
			return nil, err
		}
		p, err := path.NewPath(c.Value)
		if err != nil {
			return nil, err
		}
		rec, err := ipns.NewRecord(sk, p, max(c.Seq, 1), time.Now().Add(eol), time.Minute)
		if err != nil {
			return nil, err
		}
		raw, err := ipns.MarshalRecord(rec)
		if err != nil {
			return nil, err
		}
		if c.Invalid {
			var msg ipnspb.IpnsRecord
			if err := proto.Unmarshal(raw, &msg); err != nil {
				return nil, err
			}
			msg.SignatureV2[0] ^= 0xff
			if raw, err = proto.Marshal(&msg); err != nil {
				return nil, err
			}
		}
		name := ipns.NameFromPeer(pid)
		return map[string]string{
			"key":   hex.EncodeToString(name.RoutingKey()),
			"value": hex.EncodeToString(raw),
			"name":  name.String(),
		}, nil

	// validate {key, value}: whether Go's validator of this DHT accepts the record.
	case "validate":
		key, value, err := keyValue(c)
		if err != nil {
			return nil, err
		}
		if err := nd.dht.Validator.Validate(string(key), value); err != nil {
			return map[string]any{"valid": false, "error": err.Error()}, nil
		}
		return map[string]any{"valid": true}, nil

	// send_get_providers {peer, key, times}: GET_PROVIDERS for the CID, sent `times` times
	// in a row to the peer over Go's message sender (which reuses one stream per peer).
	case "send_get_providers":
		k, err := cid.Decode(c.Key)
		if err != nil {
			return nil, err
		}
		id, pm, err := nd.messenger(c.Peer)
		if err != nil {
			return nil, err
		}
		times := max(c.Times, 1)
		var answers []map[string]int
		for i := 0; i < times; i++ {
			provs, closer, err := pm.GetProviders(ctx, id, k.Hash())
			if err != nil {
				return nil, fmt.Errorf("request %d: %w", i, err)
			}
			answers = append(answers, map[string]int{"providers": len(provs), "closer": len(closer)})
		}
		return answers, nil

	// send_put_value {peer, key, value}: one PUT_VALUE of the record to the peer, without
	// validating it first; an error when the peer refuses it.
	case "send_put_value":
		key, value, err := keyValue(c)
		if err != nil {
			return nil, err
		}
		id, pm, err := nd.messenger(c.Peer)
		if err != nil {
			return nil, err
		}
		return nil, pm.PutValue(ctx, id, record.MakePutRecord(string(key), value))

	// send_find_node {peer, key, times}: FIND_NODE for the key (hex), `times` times in a row.
	case "send_find_node":
		key, _, err := keyValue(c)
		if err != nil {
			return nil, err
		}
		id, _, err := nd.messenger(c.Peer)
		if err != nil {
			return nil, err
		}
		times := max(c.Times, 1)
		var answers [][]string
		for i := 0; i < times; i++ {
			msg := pb.NewMessage(pb.Message_FIND_NODE, key, 0)
			resp, err := nd.dht.MessageSender().SendRequest(ctx, id, msg)
			if err != nil {
				return nil, fmt.Errorf("request %d: %w", i, err)
			}
			ids := []string{}
			for _, p := range pb.PBPeersToPeerInfos(resp.GetCloserPeers()) {
				ids = append(ids, p.ID.String())
			}
			answers = append(answers, ids)
		}
		return answers, nil

	// start_providing {keys, force} / stop_providing {keys} / sweep_stats: the node's
	// SweepingProvider (Kubo's default settings).
	case "start_providing", "stop_providing":
		cids, err := parseCids(c.Keys)
		if err != nil {
			return nil, err
		}
		if _, err := nd.sweeper(); err != nil {
			return nil, err
		}
		if c.Cmd == "stop_providing" {
			return nil, nd.front.StopProviding(multihashes(cids)...)
		}
		return nil, nd.front.StartProviding(c.Force, multihashes(cids)...)
	case "sweep_stats":
		s, err := nd.sweeper()
		if err != nil {
			return nil, err
		}
		return s.Stats(ctx)

	// inbound {reset}: the requests the nodes of this process received from outside peers,
	// by type, their bytes and the time of the last one and of the last ADD_PROVIDER
	// ({"messages":{"FIND_NODE":n,…},"bytes":n,"last":s,"last_add_provider":s}, seconds
	// since the Unix epoch); with reset, the counters start again from zero.
	case "inbound":
		return inbound.read(c.Reset), nil

	// placement {peer: {id}, keys, reset}: for each node, the indices of the CIDs whose
	// provider record from the peer it holds; with reset, those records are then forgotten.
	case "placement":
		id, err := peer.Decode(c.Peer.ID)
		if err != nil {
			return nil, err
		}
		cids, err := parseCids(c.Keys)
		if err != nil {
			return nil, err
		}
		keys := make([][]byte, len(cids))
		for i, k := range cids {
			keys[i] = k.Hash()
		}
		return inbound.placement(id, keys, c.Reset)

	// http_providers {url, key} / http_peers {url, peer: {id}}: boxo's Delegated Routing V1
	// client against the server at url.
	case "http_providers", "http_peers":
		client, err := drclient.New(c.URL)
		if err != nil {
			return nil, err
		}
		if c.Cmd == "http_providers" {
			k, err := cid.Decode(c.Key)
			if err != nil {
				return nil, err
			}
			it, err := client.FindProviders(ctx, k)
			if err != nil {
				return nil, err
			}
			return peerRecords(it, func(r types.Record) *types.PeerRecord {
				pr, _ := r.(*types.PeerRecord)
				return pr
			})
		}
		id, err := peer.Decode(c.Peer.ID)
		if err != nil {
			return nil, err
		}
		it, err := client.FindPeers(ctx, id)
		if err != nil {
			return nil, err
		}
		return peerRecords(it, func(r *types.PeerRecord) *types.PeerRecord { return r })
	}
	return nil, fmt.Errorf("unknown command %q", c.Cmd)
}
