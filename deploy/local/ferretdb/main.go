// Command ferretdb runs an embedded FerretDB v1 (SQLite backend) for the local Proxymage stack,
// and doubles as its readiness probe (-ping).
//
// We build our own main around the embeddable package because `go install .../cmd/ferretdb`
// panics at start-up: its build/version package requires a generated version.txt that only
// FerretDB's own build produces (the check is skipped when the main module is not FerretDB).
//
// Server:  ferretdb -listen-addr 127.0.0.1:27117 -sqlite-dir var/ferretdb/data [-log-level info]
// Probe:   ferretdb -ping -listen-addr 127.0.0.1:27117 [-timeout 2s]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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

	if err := serve(*listenAddr, *sqliteDir, *logLevel); err != nil {
		fatalf("%s", err)
	}
}

// serve runs FerretDB until SIGTERM/SIGINT; Run then closes the listener, gives open client
// connections a few seconds to go, and closes the SQLite databases (so the WAL is checkpointed).
func serve(listenAddr, sqliteDir, logLevel string) error {
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

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listenAddr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return err
	}

	logger.Info("FerretDB starting", slog.String("listen", listenAddr), slog.String("sqlite", sqliteURL))

	// Run returns only once ctx is cancelled and everything is closed.
	if err = f.Run(ctx); err != nil {
		return err
	}

	logger.Info("FerretDB stopped")

	return nil
}

// pingOnce opens one wire-protocol connection and sends {ping: 1, $db: "admin"}.
// It is a single attempt: the caller (ferretdb.sh wait) owns the retry loop and the overall deadline.
// A real command round-trip (not just an open port) proves the handler and the SQLite backend are up.
func pingOnce(listenAddr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// wireclient logs only at debug level; discard it so probes stay quiet.
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))

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
