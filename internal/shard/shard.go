// Package shard names the streams of a sharded trail and picks an event's
// shard. Producers (auditproc emit, the audit package, the Python example)
// and the processor agree on both through this package alone.
//
// Shard 0 keeps the configured names, so a trail of one shard is today's
// and growing the shard count never renames a shard that holds entries.
// Shard k > 0 replaces the name's hash tag {T} with {T:k}, or appends :k to
// a name without one: "{audit}:stream" becomes "{audit:1}:stream", and
// "audit:stream" becomes "audit:stream:1". On Redis Cluster every key of one
// shard thus shares one slot (the commit script stays one atomic step),
// while different shards hash to different slots.
package shard

import (
	"hash/crc32"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/tidwall/gjson"
)

// Max is the largest shard count.
const Max = 1024

// Key is the name of configured key name in shard k.
func Key(name string, k int) string {
	if k == 0 {
		return name
	}
	if e, ok := tagEnd(name); ok {
		return name[:e] + ":" + strconv.Itoa(k) + name[e:]
	}
	// No hash tag ("{}" and an unclosed "{" are none either).
	return name + ":" + strconv.Itoa(k)
}

// tagEnd finds name's hash tag as Redis Cluster does (the first "{" and
// the next "}" with at least one byte between) and returns the index of
// its "}".
func tagEnd(name string) (int, bool) {
	s := strings.IndexByte(name, '{')
	if s < 0 {
		return 0, false
	}
	n := strings.IndexByte(name[s+1:], '}')
	if n <= 0 {
		return 0, false
	}
	return s + 1 + n, true
}

// Of picks the shard of event (a JSON object) among n: the CRC-32 (IEEE)
// of the value of its top-level field key, modulo n. A string value counts
// by its text, any other value by its JSON as written. An event without
// the field, or with key empty, gets next's answer (spread evenly). With
// n < 2 it is 0.
func Of(event []byte, key string, n int, next Spreader) int {
	if n < 2 {
		return 0
	}
	if key != "" {
		if v, ok := field(event, key); ok {
			return int(crc32.ChecksumIEEE(v) % uint32(n))
		}
	}
	if next == nil {
		return 0
	}
	return next.Next(n)
}

// Spreader picks the shard of an event without a partition key.
type Spreader interface{ Next(n int) int }

// ByText spreads by the CRC-32 of a text, such as an event id.
type ByText string

// Next returns the shard of the text among n.
func (t ByText) Next(n int) int { return int(crc32.ChecksumIEEE([]byte(t)) % uint32(n)) }

// Spread hands out shards round-robin; the zero value starts at shard 0.
// It is safe for concurrent use.
type Spread struct{ n atomic.Uint64 }

// Next returns the next shard of n.
func (s *Spread) Next(n int) int {
	if n < 2 {
		return 0
	}
	return int((s.n.Add(1) - 1) % uint64(n))
}

// field returns the bytes of event's top-level field key that the shard is
// computed from: a string's text, or any other value's JSON as written.
// ok is false when the event is no object or lacks the field (or holds it
// as null). Of a field named twice, the first counts. The event is not
// validated here: one that is no JSON object is refused when it is signed.
func field(event []byte, key string) ([]byte, bool) {
	r := gjson.GetBytes(event, gjson.Escape(key))
	switch r.Type {
	case gjson.Null:
		return nil, false
	case gjson.String:
		return []byte(r.Str), true
	default:
		return []byte(r.Raw), true
	}
}
