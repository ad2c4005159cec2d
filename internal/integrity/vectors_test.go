package integrity

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var updateVectors = flag.Bool("update", false, "rewrite testdata/vectors.json")

const vectorsPath = "testdata/vectors.json"

// vectorFile is the layout of testdata/vectors.json (docs/envelope.md).
type vectorFile struct {
	Description string            `json:"description"`
	KeyNote     string            `json:"key_note"`
	Keys        map[string]string `json:"keys"`
	MACLabel    string            `json:"mac_label"`
	Vectors     []vector          `json:"vectors"`
}

type vector struct {
	Name   string            `json:"name"`
	Stream string            `json:"stream"`
	Fields map[string]string `json:"fields,omitempty"`
	// FieldList, where given instead of Fields, is the entry's field list
	// as stored (name, value, …): for entries a map cannot hold, such as a
	// field named twice.
	FieldList []string `json:"field_list,omitempty"`
	// Expect is Reason of Verify's error: "ok" when the entry verifies.
	Expect string `json:"expect"`
	// For entries whose MAC is computed: the MAC input in hex.
	MACInputHex string `json:"mac_input_hex,omitempty"`
	// For "ok" entries: the event id Verify returns.
	EventID string `json:"event_id,omitempty"`
}

// referenceMACInput is a second, deliberately plain implementation of the
// MAC input of docs/envelope.md, independent of keyEntry.mac.
func referenceMACInput(kid, stream, event string) []byte {
	var b bytes.Buffer
	for _, part := range []string{"auditproc-envelope", "1", kid, stream, event} {
		_ = binary.Write(&b, binary.BigEndian, uint32(len(part)))
		b.WriteString(part)
	}
	return b.Bytes()
}

// referenceMACInput2 is version 2's MAC input, as plainly.
func referenceMACInput2(f map[string]string, stream string) []byte {
	var b bytes.Buffer
	for _, part := range []string{"auditproc-envelope", "2", f["kid"], stream, f["src"], f["seq"], f["prev"], f["kind"], f["event"]} {
		_ = binary.Write(&b, binary.BigEndian, uint32(len(part)))
		b.WriteString(part)
	}
	return b.Bytes()
}

// vectorMACInput is the MAC input of a vector's fields for its version.
func vectorMACInput(f map[string]string, stream string) []byte {
	if f[FieldVersion] == Version2 {
		return referenceMACInput2(f, stream)
	}
	return referenceMACInput(f[FieldKeyID], stream, f[FieldEvent])
}

func referenceSig(key []byte, input []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(input)
	return hex.EncodeToString(m.Sum(nil))
}

func loadVectors(t testing.TB) (vectorFile, *Keyring) {
	t.Helper()
	data, err := os.ReadFile(vectorsPath)
	require.NoError(t, err)
	var vf vectorFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&vf))
	keys := map[string][]byte{}
	var active string
	for id, h := range vf.Keys {
		key, err := hex.DecodeString(h)
		require.NoError(t, err)
		keys[id], active = key, id
	}
	require.Len(t, keys, 1, "the vectors use one published test key")
	k, err := NewKeyring(active, keys)
	require.NoError(t, err)
	return vf, k
}

func TestVectors(t *testing.T) {
	if *updateVectors {
		writeVectors(t)
	}
	vf, k := loadVectors(t)
	require.Equal(t, macLabel, vf.MACLabel)
	reasons := map[string]int{}
	for _, v := range vf.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			if v.FieldList != nil {
				require.Nil(t, v.Fields, "fields or field_list, not both")
				_, err := k.VerifyFields(v.Stream, v.FieldList)
				assert.Equal(t, v.Expect, map[bool]string{true: "ok", false: Reason(err)}[err == nil], "error: %v", err)
				return
			}
			values := make(map[string]any, len(v.Fields))
			for f, s := range v.Fields {
				values[f] = s
			}
			env, err := k.Verify(v.Stream, values)
			requireFieldsAgree(t, k, v.Stream, values, env, err)
			assert.Equal(t, v.Expect, map[bool]string{true: "ok", false: Reason(err)}[err == nil], "error: %v", err)
			if v.Expect == "ok" {
				require.NoError(t, err)
				assert.Equal(t, v.EventID, env.EventID)
				assert.Equal(t, v.Fields[FieldEvent], string(env.Event))
			}
			if v.MACInputHex != "" {
				input := vectorMACInput(v.Fields, v.Stream)
				assert.Equal(t, v.MACInputHex, hex.EncodeToString(input))
				want := referenceSig(k.keys[k.ActiveKeyID()].secret, input)
				assert.Equal(t, v.Expect == "ok" || v.Expect == "malformed_envelope", want == v.Fields[FieldSig],
					"the sig is the MAC exactly when the vector is valid or signed-but-malformed")
			}
		})
		reasons[v.Expect]++
	}
	for _, r := range []string{"ok", "signature_mismatch", "unknown_key_id", "malformed_envelope", "unsigned"} {
		assert.Positive(t, reasons[r], "the vectors cover %q", r)
	}
}

// writeVectors regenerates testdata/vectors.json (go test -run TestVectors
// -update). Review the diff: a change to an existing valid vector means the
// envelope format changed.
func writeVectors(t *testing.T) {
	key := []byte("auditproc-public-test-vector-key") // 32 bytes, published
	const kid = "test-vector-1"
	const stream = "audit:stream"
	k, err := NewKeyring(kid, map[string][]byte{kid: key})
	require.NoError(t, err)

	var vs []vector
	valid := func(name, stream, event string) map[string]string {
		env, err := k.Sign(stream, []byte(event))
		require.NoError(t, err)
		f := map[string]string{FieldVersion: Version, FieldKeyID: kid, FieldEvent: event, FieldSig: env.Sig}
		vs = append(vs, vector{Name: name, Stream: stream, Fields: f, Expect: "ok", EventID: env.EventID,
			MACInputHex: hex.EncodeToString(referenceMACInput(kid, stream, event))})
		return f
	}
	changed := func(f map[string]string, change func(map[string]string)) map[string]string {
		c := make(map[string]string, len(f))
		for k, v := range f {
			c[k] = v
		}
		change(c)
		return c
	}
	add := func(name, stream, expect string, f map[string]string, withInput bool) {
		v := vector{Name: name, Stream: stream, Fields: f, Expect: expect}
		if withInput {
			v.MACInputHex = hex.EncodeToString(vectorMACInput(f, stream))
		}
		vs = append(vs, v)
	}

	const ev1 = `{"event_id":"01970f2a-6c00-7d3e-8a41-5f0c2b9e1d77","timestamp":"2026-07-01T10:30:45.123456789Z","action":"user.login","actor":"alice"}`
	base := valid("valid: minimal event", stream, ev1)
	valid("valid: non-ASCII text and escapes", stream, `{"event_id":"evt-2","timestamp":"2026-07-01T10:30:46Z","note":"café ☕ \"quoted\" \u00e9","path":"C:\\tmp"}`)
	valid("valid: whitespace is part of the signed bytes", "tenant-7:audit", "{\n  \"event_id\": \"evt-3\",\n  \"timestamp\": \"2026-07-01T12:30:47+02:00\",\n  \"amount\": 1.50\n}")
	valid("valid: empty stream name", "", `{"event_id":"evt-4","timestamp":"2026-07-01T10:30:48.5Z"}`)

	add("tampered: one event byte changed", stream, "signature_mismatch", changed(base, func(f map[string]string) {
		f[FieldEvent] = `{"event_id":"01970f2a-6c00-7d3e-8a41-5f0c2b9e1d77","timestamp":"2026-07-01T10:30:45.123456789Z","action":"user.login","actor":"alicf"}`
	}), true)
	add("tampered: event re-serialised (same JSON, other bytes)", stream, "signature_mismatch", changed(base, func(f map[string]string) {
		f[FieldEvent] = `{"event_id": "01970f2a-6c00-7d3e-8a41-5f0c2b9e1d77", "timestamp": "2026-07-01T10:30:45.123456789Z", "action": "user.login", "actor": "alice"}`
	}), true)
	add("tampered: entry replayed into another stream", "audit:other", "signature_mismatch", base, true)
	add("tampered: sig last digit changed", stream, "signature_mismatch", changed(base, func(f map[string]string) {
		s := f[FieldSig]
		f[FieldSig] = s[:63] + map[bool]string{true: "1", false: "0"}[s[63] == '0']
	}), true)
	add("tampered: sig made with another key", stream, "signature_mismatch", changed(base, func(f map[string]string) {
		f[FieldSig] = referenceSig([]byte("some-other-32-byte-key-not-ours!"), referenceMACInput(kid, stream, f[FieldEvent]))
	}), true)
	add("rejected: unknown key id", stream, "unknown_key_id", changed(base, func(f map[string]string) { f[FieldKeyID] = "test-vector-0" }), false)
	add("malformed: version 3", stream, "malformed_envelope", changed(base, func(f map[string]string) { f[FieldVersion] = "3" }), false)
	add("malformed: version 2 without its chain fields", stream, "malformed_envelope", changed(base, func(f map[string]string) { f[FieldVersion] = "2" }), false)
	add("malformed: uppercase sig", stream, "malformed_envelope", changed(base, func(f map[string]string) {
		f[FieldSig] = string(bytes.ToUpper([]byte(f[FieldSig])))
	}), false)
	add("malformed: sig missing", stream, "malformed_envelope", changed(base, func(f map[string]string) { delete(f, FieldSig) }), false)
	add("malformed: extra field", stream, "malformed_envelope", changed(base, func(f map[string]string) { f["priority"] = "high" }), false)
	add("malformed: key id with a space", stream, "malformed_envelope", changed(base, func(f map[string]string) { f[FieldKeyID] = "test vector" }), false)
	noID := `{"timestamp":"2026-07-01T10:30:45Z","action":"user.login"}`
	add("malformed: correctly signed event without event_id", stream, "malformed_envelope", changed(base, func(f map[string]string) {
		f[FieldEvent] = noID
		f[FieldSig] = referenceSig(key, referenceMACInput(kid, stream, noID))
	}), true)
	// A field named twice, whichever value is signed.
	list := func(f map[string]string) []string {
		return []string{FieldVersion, f[FieldVersion], FieldKeyID, f[FieldKeyID], FieldEvent, f[FieldEvent], FieldSig, f[FieldSig]}
	}
	forged := `{"event_id":"01970f2a-6c00-7d3e-8a41-5f0c2b9e1d77","timestamp":"2026-07-01T10:30:45.123456789Z","action":"user.delete","actor":"mallory"}`
	vs = append(vs,
		vector{Name: "malformed: repeated field, event named twice, the signed event last", Stream: stream, Expect: "malformed_envelope",
			FieldList: slices.Insert(list(base), 4, FieldEvent, forged)},
		vector{Name: "malformed: repeated field, event named twice, the signed event first", Stream: stream, Expect: "malformed_envelope",
			FieldList: append(list(base), FieldEvent, forged)},
		vector{Name: "malformed: repeated field, sig named twice with the same value", Stream: stream, Expect: "malformed_envelope",
			FieldList: append(list(base), FieldSig, base[FieldSig])},
	)

	// Version 2: a chain of one source on the stream, two events and a
	// checkpoint.
	const src = "billing-api/5f0c2b9e1d77a041"
	chained := func(name string, seq uint64, prev, kind, event string) map[string]string {
		env, err := k.SignLink(stream, Link{Source: src, Seq: seq, Prev: prev, Kind: kind}, []byte(event))
		require.NoError(t, err)
		f := map[string]string{FieldVersion: Version2, FieldKeyID: kid, FieldSource: src, FieldSeq: strconv.FormatUint(seq, 10),
			FieldPrev: prev, FieldKind: kind, FieldEvent: event, FieldSig: env.Sig}
		vs = append(vs, vector{Name: name, Stream: stream, Fields: f, Expect: "ok", EventID: env.EventID,
			MACInputHex: hex.EncodeToString(vectorMACInput(f, stream))})
		return f
	}
	c1 := chained("valid v2: chain entry 1", 1, "", KindEvent, ev1)
	c2 := chained("valid v2: chain entry 2", 2, c1[FieldSig], KindEvent,
		`{"event_id":"01970f2a-6c01-7a00-9b52-6a1d3c0f2e88","timestamp":"2026-07-01T10:30:46.000000001Z","action":"invoice.paid","actor":"bob"}`)
	cpEvent := string(AppendCheckpointEvent(nil, src, 3, time.Date(2026, 7, 1, 10, 31, 45, 0, time.UTC),
		Checkpoint{LastSeq: 2, Head: c2[FieldSig], Every: 1000, IntervalMS: 60000}))
	c3 := chained("valid v2: checkpoint after entry 2", 3, c2[FieldSig], KindCheckpoint, cpEvent)
	closing := string(AppendCheckpointEvent(nil, src, 4, time.Date(2026, 7, 1, 10, 31, 50, 0, time.UTC),
		Checkpoint{LastSeq: 3, Head: c3[FieldSig], Every: 1000, IntervalMS: 60000, Closing: true}))
	chained("valid v2: closing checkpoint", 4, c3[FieldSig], KindCheckpoint, closing)
	add("tampered v2: seq changed", stream, "signature_mismatch", changed(c2, func(f map[string]string) { f[FieldSeq] = "3" }), true)
	add("tampered v2: prev changed", stream, "signature_mismatch", changed(c2, func(f map[string]string) { f[FieldPrev] = c3[FieldSig] }), true)
	add("tampered v2: source changed", stream, "signature_mismatch", changed(c2, func(f map[string]string) { f[FieldSource] = "billing-api/0000000000000000" }), true)
	add("tampered v2: an event relabelled checkpoint", stream, "signature_mismatch", changed(c2, func(f map[string]string) { f[FieldKind] = KindCheckpoint }), true)
	add("malformed v2: seq with a leading zero", stream, "malformed_envelope", changed(c2, func(f map[string]string) { f[FieldSeq] = "02" }), false)
	add("malformed v2: seq 0", stream, "malformed_envelope", changed(c1, func(f map[string]string) { f[FieldSeq] = "0" }), false)
	add("malformed v2: prev given for seq 1", stream, "malformed_envelope", changed(c1, func(f map[string]string) { f[FieldPrev] = c2[FieldSig] }), false)
	add("malformed v2: source without a session", stream, "malformed_envelope", changed(c1, func(f map[string]string) { f[FieldSource] = "billing-api" }), false)
	add("malformed v2: unknown kind", stream, "malformed_envelope", changed(c1, func(f map[string]string) { f[FieldKind] = "note" }), false)
	add("malformed v2: kind missing", stream, "malformed_envelope", changed(c1, func(f map[string]string) { delete(f, FieldKind) }), false)
	badCP := string(AppendCheckpointEvent(nil, src, 3, time.Date(2026, 7, 1, 10, 31, 45, 0, time.UTC),
		Checkpoint{LastSeq: 1, Head: c1[FieldSig], Every: 1000, IntervalMS: 60000}))
	add("malformed v2: correctly signed checkpoint whose head is not its prev", stream, "malformed_envelope", changed(c3, func(f map[string]string) {
		f[FieldEvent] = badCP
		f[FieldSig] = referenceSig(key, referenceMACInput2(f, stream))
	}), true)
	vs = append(vs, vector{Name: "malformed: repeated field, seq named twice in a v2 entry", Stream: stream, Expect: "malformed_envelope",
		FieldList: []string{FieldVersion, Version2, FieldKeyID, kid, FieldSource, src, FieldSeq, "2", FieldSeq, "1", FieldPrev, "",
			FieldKind, KindEvent, FieldEvent, c1[FieldEvent], FieldSig, c1[FieldSig]}})

	add("unsigned: raw event", stream, "unsigned", map[string]string{FieldEvent: ev1}, false)
	add("unsigned: arbitrary fields", stream, "unsigned", map[string]string{"user": "alice", "action": "login"}, false)

	vf := vectorFile{
		Description: "auditproc envelope v1 and v2 test vectors (docs/envelope.md). Each vector is a stream entry (fields, or field_list as stored when a map cannot hold it) read from stream; expect is the verification outcome: ok, signature_mismatch, unknown_key_id, malformed_envelope or unsigned. The v2 vectors named chain entry 1, 2 and the checkpoints form one source's chain, in order.",
		KeyNote:     "PUBLIC TEST KEY, published with the spec so that any implementation can check itself. It is not a secret and must never sign real events.",
		Keys:        map[string]string{kid: hex.EncodeToString(key)},
		MACLabel:    macLabel,
		Vectors:     vs,
	}
	out, err := json.MarshalIndent(vf, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(vectorsPath, append(out, '\n'), 0o644))
}
