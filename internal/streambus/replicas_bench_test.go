package streambus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

// BenchmarkWaitForReplica: what MinReplicasAcked 1 costs a write, on a
// master with one replica on loopback: an append (XAdd, one round trip)
// and a commit of a batch of entries with one emit each, waiting or not.
func BenchmarkWaitForReplica(b *testing.B) {
	master := redistest.Start(b, redistest.WithBackend(redistest.Process))
	redistest.StartReplica(b, master)
	rdb := master.Client(b)
	keys := newKeyring(b, "k1")
	ctx := context.Background()
	for _, r := range []int{0, 1} {
		bus, err := streambus.New(streambus.Config{MinReplicasAcked: r}, nil, rdb, keys)
		require.NoError(b, err)
		b.Run(fmt.Sprintf("append/min_replicas_acked=%d", r), func(b *testing.B) {
			stream := uniqueName(b, "append")
			ev := event(1)
			for b.Loop() {
				if _, err := bus.XAdd(ctx, stream, ev, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("batches4x256/min_replicas_acked=%d", r), func(b *testing.B) {
			// Four batches of 256 signed events: a Producer's round trip
			// when this was measured (DefaultPipeline is 8 now).
			stream := uniqueName(b, "batches")
			env, err := keys.Sign(stream, mustStampB(b, event(1)))
			require.NoError(b, err)
			seq := uint64(1)
			for b.Loop() {
				batches := make([]*streambus.AppendBatch, 4)
				for i := range batches {
					bt := &streambus.AppendBatch{Stream: stream, Producer: "p", FirstSeq: seq, KeyID: env.KeyID}
					for range 256 {
						bt.Events = append(bt.Events, env.Event)
						bt.Sigs = append(bt.Sigs, []byte(env.Sig))
						bt.EventIDs = append(bt.EventIDs, env.EventID)
					}
					seq += 256
					batches[i] = bt
				}
				// Trimmed, so that a long run does not fill the memory.
				if _, err := bus.AppendBatches(ctx, batches, 20_000, time.Minute); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1024), "ns/event")
		})
		for _, n := range []int{1, 100} {
			b.Run(fmt.Sprintf("commit%d/min_replicas_acked=%d", n, r), func(b *testing.B) {
				stream := "{bw}:" + uniqueName(b, "commit")
				_, err := bus.XGroupCreate(ctx, stream, "g", "0")
				require.NoError(b, err)
				env, err := keys.Sign(stream, mustStampB(b, event(1)))
				require.NoError(b, err)
				for b.Loop() {
					b.StopTimer()
					pipe := rdb.Pipeline()
					for range n {
						pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: env.Values()})
					}
					_, err := pipe.Exec(ctx)
					require.NoError(b, err)
					read, err := bus.XReadGroup(ctx, streambus.GroupReadArgs{Stream: stream, Group: "g", Consumer: "c", Count: int64(n), Block: -1})
					require.NoError(b, err)
					items := make([]streambus.Item, len(read.Entries))
					for i, e := range read.Entries {
						items[i] = streambus.Item{ID: e.ID, Adds: []streambus.Add{{Stream: stream + ":out", Event: e.Event, Stamped: true}}}
					}
					b.StartTimer()
					if _, err := bus.Commit(ctx, stream, "g", items...); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func mustStampB(b *testing.B, ev []byte) []byte {
	s, _, err := integrity.Stamp(ev, time.Now())
	require.NoError(b, err)
	return s
}
