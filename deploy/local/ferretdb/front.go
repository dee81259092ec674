package main

// The front: why and how it orders commands.
//
// FerretDB v1 implements update, findAndModify and delete as "query the matching documents, compute
// the new ones, write them back by _id" in separate steps, so two such commands on the same
// collection arriving on different connections interleave: concurrent $inc lose increments and two
// workers can both "win" the same conditional find_one_and_update. Real MongoDB makes every
// single-document write atomic, and our services rely on that (claiming work, counters).
//
// So FerretDB listens on a private loopback port and the front accepts the clients, relaying each
// client connection to its own back-end connection (cursors and other per-connection state stay
// intact), and takes, for each request, the lock its command needs (lockFor):
//
//	command                                                    lock
//	hello, isMaster, ping, buildInfo, getParameter, listDatabases,
//	listCollections, listIndexes, find, getMore, killCursors,
//	count, distinct, aggregate (no $out/$merge), explain,
//	dbStats, collStats, saslStart, endSessions ... (readOnly)  none
//	insert, update, delete, findAndModify (collectionWrites)   the (database, collection) mutex,
//	                                                           plus the all-lock shared
//	create, drop, createIndexes, dropIndexes, collMod,
//	dropDatabase, renameCollection, compact, user commands,
//	aggregate with $out/$merge, any other or unknown command,
//	OP_QUERY other than the isMaster/hello handshake, legacy
//	or compressed opcodes, unparseable frames                  the all-lock, exclusive
//
// Reads need no lock: FerretDB's SQLite backend runs in WAL mode, so a read sees a committed state
// and never blocks a writer (and a MongoDB read is not atomic with a concurrent write either).
// Writes to different collections may run together: each backend write is one SQLite transaction
// that starts by writing (INSERT/UPDATE/DELETE, never read-then-write, so no SQLITE_BUSY_SNAPSHOT),
// and FerretDB opens every database file with busy_timeout(10000) (metadata/pool/uri.go), so two
// writers on one file wait for each other's commit instead of failing (measured: 4 databases x 8
// writers, and 8 collections of one database x 6 writers, no error, no lost update).
// Explicit DDL is the exception: a loop of create collection / createIndexes / drop on one
// collection while other collections of the same database were written failed now and then with
// SQLite's "index ... already exists" (FerretDB's own, without any front, too: 1 to 5 in 150 to
// 600 cycles), and never in 800 cycles with DDL run alone. DDL is rare (index creation at start-up),
// so it takes the exclusive lock.
//
// Before this table the front ran one command at a time across all connections: a slow command
// (a count scanning a large collection) then delayed every service and even the driver's hello/ping
// heartbeats (PyMongo gives up after ~20 s and drops its pool).
//
// FerretDB answers every request with exactly one reply (it has no moreToCome or exhaust support),
// which keeps the relay a plain "frame in, frame out" copy.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/FerretDB/wire"
	"github.com/FerretDB/wire/wirebson"
)

// lockKind is how much of the server a command must hold while it runs.
type lockKind int

const (
	lockNone       lockKind = iota // reads and handshakes
	lockCollection                 // writes confined to one collection
	lockAll                        // database-wide, unknown or unparseable: nothing else runs
)

// readOnly commands read, or change nothing that another command relies on being atomic.
var readOnly = map[string]bool{
	"hello": true, "isMaster": true, "ismaster": true, "ping": true, "buildInfo": true, "buildinfo": true,
	"getParameter": true, "getCmdLineOpts": true, "getLog": true, "hostInfo": true, "serverStatus": true,
	"connectionStatus": true, "whatsmyuri": true, "listCommands": true, "getFreeMonitoringStatus": true,
	"listDatabases": true, "listCollections": true, "listIndexes": true,
	"find": true, "getMore": true, "killCursors": true, "count": true, "distinct": true,
	"aggregate": true, // unless its pipeline writes: see lockFor
	"explain":   true, // FerretDB explains find, count and aggregate without running them
	"dbStats":   true, "dbstats": true, "collStats": true, "dataSize": true, "validate": true,
	"currentOp": true, "usersInfo": true,
	"saslStart": true, "saslContinue": true, "logout": true, "endSessions": true,
}

// collectionWrites write documents of the one collection named by the command's value (an insert or
// upsert may create it: that implicit creation was never seen to fail under concurrent writes).
// Explicit DDL (create, drop, createIndexes, dropIndexes, collMod) is not here: it runs alone.
var collectionWrites = map[string]bool{
	"insert": true, "update": true, "delete": true, "findAndModify": true, "findandmodify": true,
}

// handshakes may come as legacy OP_QUERY before the driver knows the server speaks OP_MSG.
var handshakes = map[string]bool{"hello": true, "isMaster": true, "ismaster": true}

// lockFor returns the lock a request frame needs and, for lockCollection, its "db\x00collection" key.
func lockFor(frame []byte) (lockKind, string) {
	if len(frame) < wire.MsgHeaderLen {
		return lockAll, ""
	}

	switch wire.OpCode(binary.LittleEndian.Uint32(frame[12:16])) {
	case wire.OpCodeMsg:
		return lockForMsg(frame[wire.MsgHeaderLen:])
	case wire.OpCodeQuery:
		if cmd := opQueryCommand(frame[wire.MsgHeaderLen:]); handshakes[cmd] {
			return lockNone, ""
		}
		return lockAll, ""
	default:
		return lockAll, ""
	}
}

func lockForMsg(body []byte) (lockKind, string) {
	var msg wire.OpMsg
	if err := msg.UnmarshalBinaryNocopy(body); err != nil {
		return lockAll, ""
	}

	raw := msg.RawSection0()
	if raw == nil {
		return lockAll, ""
	}

	// Shallow: nested documents (filters, updates, pipelines) stay raw bytes.
	doc, err := raw.Decode()
	if err != nil {
		return lockAll, ""
	}

	cmd := doc.Command()

	switch {
	case cmd == "aggregate":
		if pipelineWrites(doc.Get("pipeline")) {
			return lockAll, ""
		}
		return lockNone, ""

	case readOnly[cmd]:
		return lockNone, ""

	case collectionWrites[cmd]:
		db, _ := doc.Get("$db").(string)
		coll, _ := doc.Get(cmd).(string)
		if db == "" || coll == "" {
			return lockAll, ""
		}
		return lockCollection, db + "\x00" + coll

	default:
		return lockAll, ""
	}
}

// pipelineWrites is true if an aggregate's pipeline has an $out or $merge stage (FerretDB v1.24 does
// not implement them, but an aggregate that writes must not run unlocked if it ever does), or if the
// pipeline cannot be read.
func pipelineWrites(v any) bool {
	raw, ok := v.(wirebson.RawArray)
	if !ok {
		return v != nil
	}

	stages, err := raw.Decode()
	if err != nil {
		return true
	}

	for i := range stages.Len() {
		stage, isDoc := stages.Get(i).(wirebson.RawDocument)
		if !isDoc {
			return true
		}

		d, err := stage.Decode()
		if err != nil {
			return true
		}

		if name := d.Command(); name == "$out" || name == "$merge" {
			return true
		}
	}

	return false
}

// opQueryCommand returns the first key of an OP_QUERY's query document, or "".
// Layout: flags int32, fullCollectionName cstring, numberToSkip int32, numberToReturn int32, query.
func opQueryCommand(body []byte) string {
	if len(body) < 4 {
		return ""
	}

	name, err := wirebson.DecodeCString(body[4:])
	if err != nil {
		return ""
	}

	start := 4 + wirebson.SizeCString(name) + 8
	if len(body) < start {
		return ""
	}

	l, err := wirebson.FindRaw(body[start:])
	if err != nil {
		return ""
	}

	doc, err := wirebson.RawDocument(body[start : start+l]).Decode()
	if err != nil {
		return ""
	}

	return doc.Command()
}

// front accepts client connections on the public address and relays them to FerretDB.
type front struct {
	l       *slog.Logger
	ln      net.Listener
	backend string // FerretDB's private host:port

	// all is held shared by collection writes and exclusively by lockAll commands.
	all sync.RWMutex

	collMu sync.Mutex
	// colls holds one mutex per (database, collection) ever written; it never shrinks: a few
	// bytes per collection name, and a mutex must outlive every waiter.
	colls map[string]*sync.Mutex

	connMu   sync.Mutex // guards conns and closed
	conns    map[net.Conn]struct{}
	closed   bool
	inflight sync.WaitGroup // requests sent to FerretDB whose reply is not read yet
	wg       sync.WaitGroup // relay goroutines
}

// maxFrame bounds a wire message: MongoDB's maxMessageSizeBytes is 48,000,000.
const maxFrame = 48_000_000

// shutdownGrace bounds how long shutdown waits for requests in flight before closing connections.
const shutdownGrace = 10 * time.Second

func newFront(listenAddr, ferretURI string, l *slog.Logger) (*front, error) {
	u, err := url.Parse(ferretURI)
	if err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}

	l.Info("Front listening", slog.String("listen", ln.Addr().String()), slog.String("ferretdb", u.Host))

	return &front{
		l:       l,
		ln:      ln,
		backend: u.Host,
		colls:   map[string]*sync.Mutex{},
		conns:   map[net.Conn]struct{}{},
	}, nil
}

// run accepts connections until ctx is cancelled, then closes everything and waits.
func (f *front) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		_ = f.ln.Close()

		// No new request is sent once closed is set; those in flight get their reply (within
		// shutdownGrace), so every client gets a complete reply or a closed connection before
		// its command was sent on.
		f.connMu.Lock()
		f.closed = true
		f.connMu.Unlock()

		drained := make(chan struct{})
		go func() {
			f.inflight.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(shutdownGrace):
			f.l.Warn("Closing connections with requests still in flight")
		}

		f.connMu.Lock()
		for c := range f.conns {
			_ = c.Close()
		}
		f.connMu.Unlock()
	}()

	for {
		c, err := f.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			f.l.Warn("Accept failed", slog.Any("error", err))
			time.Sleep(100 * time.Millisecond)
			continue
		}

		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.relay(c)
		}()
	}

	f.wg.Wait()
}

// track registers a connection for shutdown; false if shutdown has already begun.
func (f *front) track(conns ...net.Conn) bool {
	f.connMu.Lock()
	defer f.connMu.Unlock()

	if f.closed {
		return false
	}
	for _, c := range conns {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *front) untrack(conns ...net.Conn) {
	f.connMu.Lock()
	defer f.connMu.Unlock()

	for _, c := range conns {
		delete(f.conns, c)
		_ = c.Close()
	}
}

// begin counts a request in flight; false once shutdown has begun.
func (f *front) begin() bool {
	f.connMu.Lock()
	defer f.connMu.Unlock()

	if f.closed {
		return false
	}
	f.inflight.Add(1)
	return true
}

// relay copies requests from the client to its own back-end connection and replies back,
// one exchange at a time, until either side closes.
func (f *front) relay(client net.Conn) {
	backend, err := net.Dial("tcp", f.backend)
	if err != nil {
		f.l.Error("Cannot reach FerretDB", slog.Any("error", err))
		_ = client.Close()
		return
	}

	if !f.track(client, backend) {
		_ = client.Close()
		_ = backend.Close()
		return
	}
	defer f.untrack(client, backend)

	for {
		// Waiting for the client's next request happens outside any lock: idle connections
		// must not block the others.
		req, err := readFrame(client)
		if err != nil {
			f.logEnd(err)
			return
		}

		reply, err := f.exchange(backend, req)
		if err != nil {
			f.logEnd(err)
			return
		}

		if _, err = client.Write(reply); err != nil {
			f.logEnd(err)
			return
		}
	}
}

// exchange sends one request to FerretDB and reads its single reply under the request's lock.
func (f *front) exchange(backend net.Conn, req []byte) ([]byte, error) {
	unlock := f.lock(lockFor(req))
	defer unlock()

	if !f.begin() {
		return nil, net.ErrClosed
	}
	defer f.inflight.Done()

	if _, err := backend.Write(req); err != nil {
		return nil, err
	}

	return readFrame(backend)
}

// lock takes what kind needs and returns its release.
func (f *front) lock(kind lockKind, key string) (unlock func()) {
	switch kind {
	case lockNone:
		return func() {}

	case lockCollection:
		f.collMu.Lock()
		m := f.colls[key]
		if m == nil {
			m = new(sync.Mutex)
			f.colls[key] = m
		}
		f.collMu.Unlock()

		// The collection's mutex first: writers queued on a busy collection do not hold the
		// all-lock shared, so they cannot hold off an exclusive command for their whole queue.
		m.Lock()
		f.all.RLock()
		return func() {
			f.all.RUnlock()
			m.Unlock()
		}

	default:
		f.all.Lock()
		return f.all.Unlock
	}
}

// logEnd logs why a relayed connection ended; a plain disconnect is not worth a line.
func (f *front) logEnd(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return
	}
	f.l.Warn("Relayed connection ended", slog.Any("error", err))
}

// readFrame reads one whole wire-protocol message: its first 4 bytes are the total length (little-endian).
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}

	n := int(int32(binary.LittleEndian.Uint32(hdr[:])))
	if n < wire.MsgHeaderLen || n > maxFrame {
		return nil, fmt.Errorf("invalid message length %d", n)
	}

	b := make([]byte, n)
	copy(b, hdr[:])
	if _, err := io.ReadFull(r, b[4:]); err != nil {
		return nil, err
	}

	return b, nil
}
