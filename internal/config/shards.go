package config

import (
	"fmt"
	"sort"

	"github.com/auditproc/auditproc/internal/shard"
)

// DefaultShards is stream.shards' default: one stream, named as configured.
const DefaultShards = 1

// MaxShards is the largest stream.shards.
const MaxShards = shard.Max

// ShardConfig is the configuration of shard k (0 <= k < Stream.Shards): the
// stream, the dead-letter stream and every stream sink carry the shard's
// names (shard.Key); everything else is c's. Shard 0 is c's names.
func (c *Config) ShardConfig(k int) Config {
	s := *c
	s.Stream.Name = shard.Key(c.Stream.Name, k)
	s.DeadLetter.Stream = shard.Key(c.DeadLetter.Stream, k)
	if len(c.Sinks) > 0 {
		s.Sinks = make(map[string]Sink, len(c.Sinks))
		for name, sk := range c.Sinks {
			if sk.Type == SinkStream {
				sk.Stream = shard.Key(sk.Stream, k)
			}
			s.Sinks[name] = sk
		}
	}
	return s
}

// ShardCount is Stream.Shards, at least 1.
func (c *Config) ShardCount() int { return max(1, c.Stream.Shards) }

// StreamShards lists the audit stream of every shard, shard 0 first.
func (c *Config) StreamShards() []string { return c.shardsOf(c.Stream.Name) }

// DeadLetterShards lists the dead-letter stream of every shard.
func (c *Config) DeadLetterShards() []string { return c.shardsOf(c.DeadLetter.Stream) }

func (c *Config) shardsOf(name string) []string {
	names := make([]string, c.ShardCount())
	for k := range names {
		names[k] = shard.Key(name, k)
	}
	return names
}

// shardClashes reports streams of different roles or shards that come out
// as one key (a dead-letter stream of shard 1 that is shard 0's sink, ...):
// each would take the other's entries. Only for more than one shard; one
// shard's clashes are the single-name rules'.
func (c *Config) shardClashes() []*FieldError {
	if c.Stream.Shards < 2 || c.Stream.Shards > MaxShards {
		return nil
	}
	type owner struct {
		key   string
		shard int
	}
	roles := map[string]string{"stream.name": c.Stream.Name, "dead_letter.stream": c.DeadLetter.Stream}
	for name, s := range c.Sinks {
		if s.Type == SinkStream && s.Stream != "" {
			roles["sinks."+name+".stream"] = s.Stream
		}
	}
	keys := make([]string, 0, len(roles))
	for k := range roles {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	seen := map[string]owner{}
	var errs []*FieldError
	for k := 0; k < c.Stream.Shards; k++ {
		for _, role := range keys {
			if roles[role] == "" {
				continue
			}
			name := shard.Key(roles[role], k)
			if o, ok := seen[name]; ok && (o.key != role || o.shard != k) {
				errs = append(errs, &FieldError{Key: role, Msg: fmt.Sprintf(
					"shard %d's stream %q is also shard %d's %s: give the streams names that do not end in :<number>", k, name, o.shard, o.key)})
				continue
			}
			seen[name] = owner{role, k}
		}
	}
	return errs
}

// validFieldName accepts a partition key: 1-128 bytes of printable
// characters other than space.
func validFieldName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}
