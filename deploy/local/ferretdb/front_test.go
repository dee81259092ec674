package main

import (
	"encoding/binary"
	"testing"

	"github.com/FerretDB/wire"
	"github.com/FerretDB/wire/wirebson"
)

// frame prepends a wire header to a message body.
func frame(t *testing.T, op wire.OpCode, body []byte) []byte {
	t.Helper()
	b := make([]byte, wire.MsgHeaderLen, wire.MsgHeaderLen+len(body))
	binary.LittleEndian.PutUint32(b[0:4], uint32(wire.MsgHeaderLen+len(body)))
	binary.LittleEndian.PutUint32(b[12:16], uint32(op))
	return append(b, body...)
}

func opMsg(t *testing.T, pairs ...any) []byte {
	t.Helper()
	body, err := wire.MustOpMsg(pairs...).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return frame(t, wire.OpCodeMsg, body)
}

func opQuery(t *testing.T, pairs ...any) []byte {
	t.Helper()
	q, err := wire.NewOpQuery(wirebson.MustDocument(pairs...))
	if err != nil {
		t.Fatal(err)
	}
	q.FullCollectionName = "admin.$cmd"
	body, err := q.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return frame(t, wire.OpCodeQuery, body)
}

func TestLockFor(t *testing.T) {
	pipeline := func(stage string) *wirebson.Array {
		return wirebson.MustArray(wirebson.MustDocument("$match", wirebson.MustDocument()), wirebson.MustDocument(stage, "x"))
	}

	for name, tc := range map[string]struct {
		frame []byte
		kind  lockKind
		key   string
	}{
		"hello":            {opMsg(t, "hello", int32(1), "$db", "admin"), lockNone, ""},
		"ping":             {opMsg(t, "ping", int32(1), "$db", "admin"), lockNone, ""},
		"find":             {opMsg(t, "find", "jobs", "filter", wirebson.MustDocument("_id", "a"), "$db", "d"), lockNone, ""},
		"count":            {opMsg(t, "count", "jobs", "$db", "d"), lockNone, ""},
		"aggregate":        {opMsg(t, "aggregate", "jobs", "pipeline", pipeline("$sort"), "$db", "d"), lockNone, ""},
		"aggregate $out":   {opMsg(t, "aggregate", "jobs", "pipeline", pipeline("$out"), "$db", "d"), lockAll, ""},
		"aggregate $merge": {opMsg(t, "aggregate", "jobs", "pipeline", pipeline("$merge"), "$db", "d"), lockAll, ""},
		"insert":           {opMsg(t, "insert", "jobs", "$db", "d"), lockCollection, "d\x00jobs"},
		"update":           {opMsg(t, "update", "jobs", "$db", "d"), lockCollection, "d\x00jobs"},
		"findAndModify":    {opMsg(t, "findAndModify", "jobs", "$db", "d"), lockCollection, "d\x00jobs"},
		"delete":           {opMsg(t, "delete", "other", "$db", "e"), lockCollection, "e\x00other"},
		"insert no $db":    {opMsg(t, "insert", "jobs"), lockAll, ""},
		"insert not named": {opMsg(t, "insert", int32(1), "$db", "d"), lockAll, ""},
		"createIndexes":    {opMsg(t, "createIndexes", "jobs", "$db", "d"), lockAll, ""},
		"drop":             {opMsg(t, "drop", "jobs", "$db", "d"), lockAll, ""},
		"dropDatabase":     {opMsg(t, "dropDatabase", int32(1), "$db", "d"), lockAll, ""},
		"renameCollection": {opMsg(t, "renameCollection", "d.a", "to", "d.b", "$db", "admin"), lockAll, ""},
		"unknown":          {opMsg(t, "somethingNew", "jobs", "$db", "d"), lockAll, ""},
		"legacy isMaster":  {opQuery(t, "isMaster", int32(1)), lockNone, ""},
		"legacy other":     {opQuery(t, "insert", "jobs"), lockAll, ""},
		"legacy opcode":    {frame(t, wire.OpCodeInsert, []byte{0, 0, 0, 0}), lockAll, ""},
		"garbage OP_MSG":   {frame(t, wire.OpCodeMsg, []byte{0, 0, 0, 0, 0, 9, 9}), lockAll, ""},
		"short":            {[]byte{1, 2, 3}, lockAll, ""},
	} {
		t.Run(name, func(t *testing.T) {
			kind, key := lockFor(tc.frame)
			if kind != tc.kind || key != tc.key {
				t.Errorf("lockFor = %d %q, want %d %q", kind, key, tc.kind, tc.key)
			}
		})
	}
}
