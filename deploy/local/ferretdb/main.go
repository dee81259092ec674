// Command ferretdb runs an embedded FerretDB v1 (SQLite backend) for the local Proxymage stack,
// and doubles as its readiness probe (-ping).
//
// We build our own main around the embeddable package because `go install .../cmd/ferretdb`
// panics at start-up: its build/version package requires a generated version.txt that only
// FerretDB's own build produces (the check is skipped when the main module is not FerretDB).
//
// Server:  ferretdb -listen-addr 127.0.0.1:27117 -sqlite-dir var/ferretdb/data [-log-level info]
// Probe:   ferretdb -ping -listen-addr 127.0.0.1:27117 [-timeout 2s]
//
// # Why a serializing front (-serialize, on by default)
//
// FerretDB v1 implements update, findAndModify and friends as "read the document, compute the
// new one, write it back by _id" in separate steps, so commands arriving on different
// connections interleave: concurrent $inc lose increments and two workers can both "win" the
// same conditional find_one_and_update. Real MongoDB makes every single-document write atomic,
// and our services rely on that (claiming work, counters). So FerretDB listens on a private
// loopback port and we accept the clients ourselves, forwarding one command at a time across all
// connections. FerretDB answers every request with exactly one reply (it has no moreToCome or
// exhaust support), which keeps the forwarding a plain "frame in, frame out" copy.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/FerretDB/wire"
	"github.com/FerretDB/wire/wirebson"
	"github.com/FerretDB/wire/wireclient"
)

func main() {
	listenAddr := flag.String("listen-addr", "127.0.0.1:27117", "TCP `host:port` to listen on (or to ping)")
	sqliteDir := flag.String("sqlite-dir", "", "`directory` holding the SQLite files (one per database); created if missing")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn or error")
	serialize := flag.Bool("serialize", true, "run one command at a time across all connections (MongoDB-like single-document atomicity)")
	ping := flag.Bool("ping", false, "do not serve: send one MongoDB ping to -listen-addr, exit 0 if it answers ok:1")
	timeout := flag.Duration("timeout", 2*time.Second, "-ping: connect+ping deadline")
	flag.Parse()

	if flag.NArg() > 0 {
		fatalf("unexpected arguments: %q", flag.Args())
	}

	if *ping {
		if err := pingOnce(*listenAddr, *timeout); err != nil {
			fatalf("%s", err)
		}
		return
	}

	if err := serve(*listenAddr, *sqliteDir, *logLevel, *serialize); err != nil {
		fatalf("%s", err)
	}
}

// serve runs FerretDB until SIGTERM/SIGINT. FerretDB's Run then closes its listener, gives open
// connections a few seconds, and closes the SQLite databases (checkpointing the WAL).
func serve(listenAddr, sqliteDir, logLevel string, serialize bool) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}

	if sqliteDir == "" {
		return errors.New("-sqlite-dir is required")
	}

	// The SQLite backend insists on an existing directory given as a "file:" URI ending with "/".
	dir, err := filepath.Abs(sqliteDir)
	if err != nil {
		return err
	}
	if err = os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// url.URL escapes any odd characters in the path (a raw "file:"+dir would not).
	sqliteURL := (&url.URL{Scheme: "file", Path: dir + "/"}).String()

	// FerretDB logs through slog; the text handler keeps its structured fields readable in the log file.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// With the front, FerretDB takes a free loopback port that only the front talks to.
	// New binds the listener itself, so a busy port fails here, before anything runs.
	ferretAddr := listenAddr
	if serialize {
		ferretAddr = "127.0.0.1:0"
	}

	logger.Info("FerretDB starting", slog.String("listen", listenAddr), slog.String("sqlite", sqliteURL),
		slog.Bool("serialize", serialize))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: ferretAddr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return err
	}

	if !serialize {
		// Run returns only once the context is cancelled and everything is closed.
		err = f.Run(sigCtx)
		logger.Info("FerretDB stopped")
		return err
	}

	front, err := newSerializer(listenAddr, f.MongoDBURI(), logger)
	if err != nil {
		// Run was never called, so nothing else to release but FerretDB's listener and backend:
		// running it on an already cancelled context does exactly that.
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		_ = f.Run(cancelled)
		return err
	}

	// FerretDB keeps running until the front has closed its client connections, so that no
	// command is cut off half-way by the back end going away first.
	ferretCtx, stopFerret := context.WithCancel(context.Background())
	ferretDone := make(chan error, 1)
	go func() { ferretDone <- f.Run(ferretCtx) }()

	front.run(sigCtx)
	stopFerret()
	err = <-ferretDone

	logger.Info("FerretDB stopped")

	return err
}

// serializer accepts client connections on the public address and relays them, one per back-end
// connection (cursors and other per-connection state stay intact), to FerretDB, holding a single
// lock from sending a request until its reply is read.
type serializer struct {
	l       *slog.Logger
	ln      net.Listener
	backend string // FerretDB's private host:port

	mu sync.Mutex // one command at a time; also guards conns and closed

	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// maxFrame bounds a wire message: MongoDB's maxMessageSizeBytes is 48,000,000.
const maxFrame = 48_000_000

func newSerializer(listenAddr, ferretURI string, l *slog.Logger) (*serializer, error) {
	u, err := url.Parse(ferretURI)
	if err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}

	l.Info("Serializing front listening", slog.String("listen", ln.Addr().String()), slog.String("ferretdb", u.Host))

	return &serializer{l: l, ln: ln, backend: u.Host, conns: map[net.Conn]struct{}{}}, nil
}

// run accepts connections until ctx is cancelled, then closes everything and waits.
func (s *serializer) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		_ = s.ln.Close()

		// Taking the command lock first means no request is in flight: every client gets either
		// a complete reply or a closed connection before its command was sent on.
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
	}()

	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.l.Warn("Accept failed", slog.Any("error", err))
			time.Sleep(100 * time.Millisecond)
			continue
		}

		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.relay(c)
		}()
	}

	s.wg.Wait()
}

// track registers a connection for shutdown; false if shutdown has already begun.
func (s *serializer) track(conns ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return false
	}
	for _, c := range conns {
		s.conns[c] = struct{}{}
	}
	return true
}

func (s *serializer) untrack(conns ...net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()

	for _, c := range conns {
		delete(s.conns, c)
		_ = c.Close()
	}
}

// relay copies requests from the client to its own back-end connection and replies back,
// one exchange at a time under the global lock, until either side closes.
func (s *serializer) relay(client net.Conn) {
	backend, err := net.Dial("tcp", s.backend)
	if err != nil {
		s.l.Error("Cannot reach FerretDB", slog.Any("error", err))
		_ = client.Close()
		return
	}

	if !s.track(client, backend) {
		_ = client.Close()
		_ = backend.Close()
		return
	}
	defer s.untrack(client, backend)

	for {
		// Waiting for the client's next request happens outside the lock: idle connections
		// must not block the others.
		req, err := readFrame(client)
		if err != nil {
			s.logEnd(err)
			return
		}

		reply, err := s.exchange(backend, req)
		if err != nil {
			s.logEnd(err)
			return
		}

		if _, err = client.Write(reply); err != nil {
			s.logEnd(err)
			return
		}
	}
}

// exchange sends one request to FerretDB and reads its single reply while holding the lock.
func (s *serializer) exchange(backend net.Conn, req []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return nil, net.ErrClosed
	}

	if _, err := backend.Write(req); err != nil {
		return nil, err
	}

	return readFrame(backend)
}

// logEnd logs why a relayed connection ended; a plain disconnect is not worth a line.
func (s *serializer) logEnd(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return
	}
	s.l.Warn("Relayed connection ended", slog.Any("error", err))
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

// pingOnce opens one wire-protocol connection and sends {ping: 1, $db: "admin"}.
// It is a single attempt: the caller (ferretdb.sh wait) owns the retry loop and the overall deadline.
// A real command round-trip (not just an open port) proves the front, FerretDB's handler and the
// SQLite backend are all up.
func pingOnce(listenAddr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// wireclient logs only at debug level; discard it so probes stay quiet.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	conn, err := wireclient.Connect(ctx, "mongodb://"+listenAddr+"/", quiet)
	if err != nil {
		return err
	}
	defer conn.Close()

	_, body, err := conn.Request(ctx, wire.MustOpMsg("ping", int32(1), "$db", "admin"))
	if err != nil {
		return err
	}

	msg, isMsg := body.(*wire.OpMsg)
	if !isMsg {
		return fmt.Errorf("ping: unexpected reply type %T", body)
	}

	raw, err := msg.RawDocument()
	if err != nil {
		return err
	}

	res, err := raw.Decode()
	if err != nil {
		return err
	}

	if !isOne(res.Get("ok")) {
		return fmt.Errorf("ping: not ok: %s", describe(res))
	}

	return nil
}

// isOne accepts ok:1 in any numeric BSON type (FerretDB sends a double, MongoDB may send an int).
func isOne(v any) bool {
	switch v := v.(type) {
	case float64:
		return v == 1
	case int32:
		return v == 1
	case int64:
		return v == 1
	default:
		return false
	}
}

// describe renders a reply's errmsg/code for error messages.
func describe(doc *wirebson.Document) string {
	return fmt.Sprintf("ok=%v code=%v errmsg=%v", doc.Get("ok"), doc.Get("code"), doc.Get("errmsg"))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ferretdb: "+format+"\n", args...)
	os.Exit(1)
}
