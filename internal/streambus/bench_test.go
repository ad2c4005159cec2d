package streambus_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

const (
	benchEntries = 200_000
	benchCount   = 1000
)

// benchDrain pre-fills a stream once, then, b.N times, drains it through a
// fresh group with drain and reports entries/s.
func benchDrain(b *testing.B, drain func(ctx context.Context, bus *streambus.Bus, rdb *redis.Client, stream, group string) int) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	keys := newKeyring(b, "k1")
	bus, err := streambus.New(streambus.Config{}, nil, rdb, keys)
	require.NoError(b, err)
	stream := uniqueName(b, "bench")
	prefill(b, rdb, keys, stream, benchEntries)
	ctx := context.Background()
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		group := uniqueName(b, "group")
		require.NoError(b, rdb.XGroupCreate(ctx, stream, group, "0").Err())
		b.StartTimer()
		start := time.Now()
		n := drain(ctx, bus, rdb, stream, group)
		elapsed += time.Since(start)
		require.Equal(b, benchEntries, n)
	}
	b.ReportMetric(float64(b.N*benchEntries)/elapsed.Seconds(), "entries/s")
}

// BenchmarkReadGroupAck: verified XREADGROUP COUNT 1000, the XACK of the
// previous batch pipelined with the next read.
func BenchmarkReadGroupAck(b *testing.B) {
	benchDrain(b, func(ctx context.Context, bus *streambus.Bus, _ *redis.Client, stream, group string) int {
		n := 0
		var ack []string
		for {
			batch, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{
				Stream: stream, Group: group, Consumer: "c", Count: benchCount, Block: -1, Ack: ack,
			})
			require.NoError(b, err)
			if len(batch.Entries) == 0 {
				return n
			}
			n += len(batch.Entries)
			ack = ack[:0]
			for _, e := range batch.Entries {
				ack = append(ack, e.ID)
			}
		}
	})
}

// BenchmarkReadGroupAckPlain is the same loop in plain go-redis, without
// verification: the baseline.
func BenchmarkReadGroupAckPlain(b *testing.B) {
	benchDrain(b, func(ctx context.Context, _ *streambus.Bus, rdb *redis.Client, stream, group string) int {
		n := 0
		var ack []string
		for {
			pipe := rdb.Pipeline()
			if len(ack) > 0 {
				pipe.XAck(ctx, stream, group, ack...)
			}
			read := pipe.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: group, Consumer: "c", Streams: []string{stream, ">"}, Count: benchCount, Block: -1,
			})
			_, _ = pipe.Exec(ctx)
			res, err := read.Result()
			if err == redis.Nil || len(res) == 0 || len(res[0].Messages) == 0 {
				return n
			}
			require.NoError(b, err)
			msgs := res[0].Messages
			n += len(msgs)
			ack = ack[:0]
			for _, m := range msgs {
				ack = append(ack, m.ID)
			}
		}
	})
}
