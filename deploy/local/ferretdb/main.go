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
// # The front (-serialize, on by default)
//
// FerretDB v1 alone loses concurrent single-document updates that MongoDB applies atomically, so
// the clients talk to a front that relays them to FerretDB, running conflicting commands one at a
// time (writes to one collection) and everything else concurrently: see front.go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
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
	serialize := flag.Bool("serialize", true, "relay clients through the front that runs writes to one collection one at a time (MongoDB-like single-document atomicity)")
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

	front, err := newFront(listenAddr, f.MongoDBURI(), logger)
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
