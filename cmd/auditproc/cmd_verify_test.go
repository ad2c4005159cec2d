package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestVerifySegmentedWalk walks a stream cut into many segments, fetched
// at once (small pages and segments), with several entries per
// millisecond and empty milliseconds between: every entry is checked once,
// in order, and a deleted entry in the middle is the one gap reported.
func TestVerifySegmentedWalk(t *testing.T) {
	oldPage, oldSeg := verifyPage, verifySegmentPages
	verifyPage, verifySegmentPages = 7, 2
	t.Cleanup(func() { verifyPage, verifySegmentPages = oldPage, oldSeg })

	srv := redistest.Start(t)
	rdb := srv.Client(t)
	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	keys, err := integrity.NewKeyring("test-1", map[string][]byte{"test-1": key})
	require.NoError(t, err)
	t.Setenv("AUDITPROC_CONFIG", "")
	t.Setenv("AUDITPROC_REDIS_URL", srv.URL())
	t.Setenv("AUDITPROC_HMAC_KEYS", "key test-1 base64:"+base64.StdEncoding.EncodeToString(key))
	t.Setenv("AUDITPROC_HMAC_KEYS_FILE", "")
	ctx := context.Background()
	const stream, n = "st:trail", 300
	chain, err := integrity.NewChain(keys, "test", integrity.ChainConfig{CheckpointEvery: 100000, CheckpointInterval: time.Hour})
	require.NoError(t, err)
	now := time.Now()
	var ids []string
	xadd := func(id string, env integrity.Envelope) {
		got, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: id, Values: env.Values()}).Result()
		require.NoError(t, err)
		ids = append(ids, got)
	}
	for i := range n {
		ev, _, err := integrity.Stamp([]byte(fmt.Sprintf(`{"action":"test","n":%d}`, i)), now)
		require.NoError(t, err)
		env, err := chain.Sign(stream, ev, now)
		require.NoError(t, err)
		// Three entries per millisecond, every fifth millisecond.
		xadd(fmt.Sprintf("%d-%d", 1000+5*(i/3), i%3), env)
	}
	closing, err := chain.Close(now)
	require.NoError(t, err)
	require.Len(t, closing, 1)
	xadd("1600-0", closing[0].Envelope)

	verify := func(args ...string) verifyReport {
		t.Helper()
		var out strings.Builder
		args = append([]string{"verify", "--stream", stream, "--json", "--quiet"}, args...)
		err := run(ctx, args, stdio{in: strings.NewReader(""), out: &out, err: io.Discard})
		var rep verifyReport
		require.NoError(t, json.Unmarshal([]byte(out.String()), &rep), "%v: %s", err, out.String())
		return rep
	}
	rep := verify()
	require.True(t, rep.OK, "%+v", rep.Findings)
	require.Equal(t, n+1, rep.Entries)
	require.Len(t, rep.Sources, 1)
	require.Equal(t, uint64(n+1), rep.Sources[0].Last)
	require.True(t, rep.Sources[0].Closed)

	require.NoError(t, rdb.XDel(ctx, stream, ids[150]).Err())
	rep = verify()
	require.False(t, rep.OK)
	require.Equal(t, n, rep.Entries)
	require.Len(t, rep.Findings, 1, "%+v", rep.Findings)
	require.Equal(t, "gap", rep.Findings[0].Kind)
	require.Equal(t, ids[151], rep.Findings[0].EntryID)

	// A range of it, from and to inside segments.
	rep = verify("--from", ids[100], "--to", ids[200])
	require.Equal(t, 100, rep.Entries)
	require.Len(t, rep.Findings, 1, "%+v", rep.Findings)
	require.Equal(t, "gap", rep.Findings[0].Kind)
	require.Equal(t, ids[151], rep.Findings[0].EntryID)
	require.Equal(t, uint64(101), rep.Sources[0].First)
	require.Equal(t, uint64(201), rep.Sources[0].Last)
}
