package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkVerify is `auditproc verify` (in process) on a stream of one
// chained source of 100,000 entries in a real Redis; b.N walks of it. It
// reports entries/s, to set against a plain XRANGE scan (make bench, trail).
func BenchmarkVerify(b *testing.B) {
	const n = 100000
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	key, err := integrity.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	keys, err := integrity.NewKeyring("bench-1", map[string][]byte{"bench-1": key})
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv("AUDITPROC_CONFIG", "")
	b.Setenv("AUDITPROC_REDIS_URL", srv.URL())
	b.Setenv("AUDITPROC_HMAC_KEYS", "key bench-1 base64:"+base64.StdEncoding.EncodeToString(key))
	b.Setenv("AUDITPROC_HMAC_KEYS_FILE", "")
	ctx := context.Background()
	chain, err := integrity.NewChain(keys, "bench", integrity.ChainConfig{})
	if err != nil {
		b.Fatal(err)
	}
	const stream = "bench:trail"
	for done := 0; done < n; {
		pipe := rdb.Pipeline()
		for i := 0; i < 1000 && done < n; i, done = i+1, done+1 {
			ev := fmt.Appendf(nil, `{"actor":"u-%04d","action":"invoice.approve","target":"invoice/%06d","outcome":"success","region":"eu-west-1","user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}`, done%5000, done)
			now := time.Now()
			stamped, _, err := integrity.Stamp(ev, now)
			if err != nil {
				b.Fatal(err)
			}
			env, err := chain.Sign(stream, stamped, now)
			if err != nil {
				b.Fatal(err)
			}
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: env.Values()})
			due, err := chain.Due(now)
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range due {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: e.Stream, Values: e.Values()})
			}
		}
		if done == n {
			closing, err := chain.Close(time.Now())
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range closing {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: e.Stream, Values: e.Values()})
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		var out strings.Builder
		if err := run(ctx, []string{"verify", "--stream", stream, "--quiet"}, stdio{in: strings.NewReader(""), out: &out, err: io.Discard}); err != nil {
			b.Fatalf("verify: %v\n%s", err, out.String())
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
