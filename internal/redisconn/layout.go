package redisconn

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/streambus"
)

// ErrLayout is wrapped by CheckLayout's errors.
var ErrLayout = errors.New("redisconn: stream layout cannot work in this Redis mode")

// Key is a Redis key of the layout and the configuration key that names it.
type Key struct {
	Config string // e.g. "dead_letter.stream"
	Name   string // e.g. "audit:dead"
}

// CommitKeys are the keys one commit of the processor touches in a single
// atomic script: the stream (XACK), the dead-letter stream, every stream
// sink, and the sequence state of chained sources (streambus.SeqLowKey; the
// per-source sets begin with the stream's name too).
func CommitKeys(cfg *config.Config) []Key {
	keys := []Key{{"stream.name", cfg.Stream.Name}, {"dead_letter.stream", cfg.DeadLetter.Stream},
		{"stream.name (sequence state)", streambus.SeqLowKey(cfg.Stream.Name, cfg.Stream.Group)}}
	names := make([]string, 0, len(cfg.Sinks))
	for name, s := range cfg.Sinks {
		if s.Type == "stream" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		keys = append(keys, Key{"sinks." + name + ".stream", cfg.Sinks[name].Stream})
	}
	return keys
}

// CheckLayout refuses a configuration whose commit keys (CommitKeys) cannot
// be written atomically in the Redis mode it selects: on a cluster every
// one of them must hash to the same slot, which takes one hash tag shared
// by all ({audit}:stream, {audit}:dead, ...). Standalone and Sentinel take
// any layout. The error wraps ErrLayout and names every key and its slot.
// A configuration whose Redis settings do not resolve is left to Resolve's
// error. Every shard (stream.shards) is checked; the first that cannot work
// is named.
func CheckLayout(cfg *config.Config) error {
	t, err := Resolve(cfg.Redis, cfg.RedisPassword)
	if err != nil {
		return err
	}
	for k := range cfg.ShardCount() {
		sc := cfg.ShardConfig(k)
		if err := CheckKeys(t.Mode, CommitKeys(&sc)); err != nil {
			if k > 0 {
				return fmt.Errorf("shard %d of stream.shards %d: %w", k, cfg.ShardCount(), err)
			}
			return err
		}
	}
	return nil
}

// CheckKeys is CheckLayout for a given mode and set of keys that must be
// written in one atomic step (callers with keys of their own, such as
// integrity state, add them).
func CheckKeys(mode Mode, keys []Key) error {
	if mode != Cluster || len(keys) < 2 {
		return nil
	}
	first := Slot(keys[0].Name)
	same := true
	for _, k := range keys[1:] {
		if Slot(k.Name) != first {
			same = false
		}
	}
	if same {
		return nil
	}
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %q (slot %d)", k.Config, k.Name, Slot(k.Name))
	}
	fe := &config.FieldError{Key: keys[0].Config, Msg: fmt.Sprintf(
		"on Redis Cluster the keys of one commit must share a slot, but %s do not; put one hash tag in all of them, e.g. stream.name: \"{audit}:stream\", dead_letter.stream: \"{audit}:dead\"",
		b.String())}
	return fmt.Errorf("%w (%w)", fe, ErrLayout)
}

// Slot is the Redis Cluster hash slot of key: CRC16 (XMODEM) of the key,
// or of its hash tag (the part between the first "{" and the next "}",
// when not empty), modulo 16384.
func Slot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	return int(crc16(key) % 16384)
}

func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
