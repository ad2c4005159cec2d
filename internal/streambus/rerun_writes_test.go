package streambus

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
)

// replOffset is the master's replication offset: it grows with every
// write propagated to replicas, and only then.
func replOffset(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "replication").Result()
	require.NoError(t, err)
	m := regexp.MustCompile(`master_repl_offset:(\d+)`).FindStringSubmatch(info)
	require.NotNil(t, m)
	n, err := strconv.ParseInt(m[1], 10, 64)
	require.NoError(t, err)
	return n
}

// TestRerunsWrite: WAIT counts the replicas that hold what its own
// connection wrote, and since Redis 7.2 a command that writes nothing
// (an XACK of an entry no longer pending, a script that finds its work
// done) does not move that mark: a WAIT after a rerun on another
// connection would answer for that connection's old writes, not for the
// first run's. So every script a Bus runs before a WAIT writes on every
// run, a rerun included; a plain no-op XACK, the control, does not.
func TestRerunsWrite(t *testing.T) {
	master := redistest.Start(t, redistest.WithBackend(redistest.Process))
	redistest.StartReplica(t, master)
	rdb := master.Client(t)
	ctx := context.Background()
	propagates := func(name string, run func() error) {
		t.Helper()
		before := replOffset(t, rdb)
		require.NoError(t, run(), name)
		assert.Greater(t, replOffset(t, rdb), before, "%s writes", name)
	}

	stream, ids := delivered(t, rdb, "rw", 1)
	items := plainAcks(ids)
	keys, argv := commitArgs(stream, "g", items, "wtoken1")
	propagates("a commit", func() error { return commitScript.Run(ctx, rdb, keys, argv...).Err() })
	propagates("the same commit run again (a client's retry)", func() error { return commitScript.Run(ctx, rdb, keys, argv...).Err() })
	keys, argv = commitArgs(stream, "g", items, "wtoken2")
	propagates("a commit of acknowledged entries (a caller's retry)", func() error { return commitScript.Run(ctx, rdb, keys, argv...).Err() })

	before := replOffset(t, rdb)
	n, err := rdb.XAck(ctx, stream, "g", ids...).Result()
	require.NoError(t, err)
	require.Zero(t, n)
	assert.Equal(t, before, replOffset(t, rdb), "the control: an XACK of an acknowledged entry writes nothing")

	lkeys, largv := linkArgs(stream, fmt.Sprintf("%064x", time.Now().UnixNano()), []any{"a", "1"})
	propagates("a link", func() error { return linkScript.Run(ctx, rdb, lkeys, largv...).Err() })
	propagates("the same link again", func() error {
		if err := linkScript.Run(ctx, rdb, lkeys, largv...).Err(); err != redis.Nil {
			return fmt.Errorf("want redis.Nil (written before), got %v", err)
		}
		return nil
	})

	env := integrity.Envelope{Version: integrity.Version, KeyID: "k", EventID: "ev-1", Event: []byte(`{"a":1}`), Sig: "00"}
	okeys := []string{stream, EventKey(stream, env.EventID)}
	oargv := append([]any{time.Minute.Milliseconds(), 0}, env.Values()...)
	propagates("an append once", func() error { return onceScript.Run(ctx, rdb, okeys, oargv...).Err() })
	propagates("the same append again", func() error { return onceScript.Run(ctx, rdb, okeys, oargv...).Err() })

	bkeys := []string{stream, ProducerKey(stream, "p")}
	bargv := []any{1, time.Minute.Milliseconds(), 0, "k", "", 0, "", 1, "", `{"a":2}`, "00"}
	propagates("a batch", func() error { return batchScript.Run(ctx, rdb, bkeys, bargv...).Err() })
	propagates("the same batch again", func() error { return batchScript.Run(ctx, rdb, bkeys, bargv...).Err() })
}
