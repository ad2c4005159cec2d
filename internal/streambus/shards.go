package streambus

import (
	"context"
	"errors"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// ShardsKey is the key that records how many shards a trail's processors
// read (stream.shards): "<stream>:shards" of shard 0's stream, in its slot.
// Processors raise it when they start with more shards, and lower it only
// once the shards they drop are drained; producers refuse to write more
// shards than it records, which no processor would read.
func ShardsKey(stream string) string { return stream + ":shards" }

// RecordedShards returns the shard count recorded for the trail whose
// shard 0 is stream: 0 when none is (no processor of a sharded trail ran
// yet, or one of a version that did not record it).
func RecordedShards(ctx context.Context, rdb redis.UniversalClient, stream string) (int, error) {
	n, err := rdb.Get(ctx, ShardsKey(stream)).Int()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// raiseShardsScript records ARGV[1] unless a larger count is recorded, and
// returns the count recorded then.
var raiseShardsScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local n = tonumber(ARGV[1])
if n > cur then
  redis.call('SET', KEYS[1], ARGV[1])
  return n
end
return cur
`)

// lowerShardsScript records ARGV[2] if ARGV[1] is recorded (or nothing).
var lowerShardsScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1]) or '0'
if cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// RaiseShards records n for the trail of stream unless more are recorded,
// and returns the count recorded after.
func RaiseShards(ctx context.Context, rdb redis.UniversalClient, stream string, n int) (int, error) {
	return raiseShardsScript.Run(ctx, rdb, []string{ShardsKey(stream)}, n).Int()
}

// LowerShards records n in place of from; false when another count than
// from was recorded meanwhile (nothing is changed then).
func LowerShards(ctx context.Context, rdb redis.UniversalClient, stream string, from, n int) (bool, error) {
	ok, err := lowerShardsScript.Run(ctx, rdb, []string{ShardsKey(stream)}, strconv.Itoa(from), n).Int()
	return ok == 1, err
}
