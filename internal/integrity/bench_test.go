package integrity

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchEvent returns a stamped event of exactly 300 bytes.
func benchEvent(b *testing.B) []byte {
	b.Helper()
	base := `{"action":"user.login","actor":{"id":"u-1842","ip":"203.0.113.7"},"outcome":"success","note":""}`
	ev, _, err := Stamp([]byte(base), time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC))
	require.NoError(b, err)
	pad := 300 - len(ev)
	require.Positive(b, pad)
	ev, _, err = Stamp([]byte(strings.Replace(base, `"note":""`, `"note":"`+strings.Repeat("n", pad)+`"`, 1)), time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC))
	require.NoError(b, err)
	require.Len(b, ev, 300)
	return ev
}

func BenchmarkSign(b *testing.B) {
	k := testKeyring(b, "bench")
	ev := benchEvent(b)
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Sign("audit:stream", ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	k := testKeyring(b, "bench")
	env, err := k.Sign("audit:stream", benchEvent(b))
	require.NoError(b, err)
	vals := entry(env)
	b.SetBytes(int64(len(env.Event)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Verify("audit:stream", vals); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyParallel runs Verify on every core at once, the way the
// processor's workers do, to show the pooled hashers do not contend.
func BenchmarkVerifyParallel(b *testing.B) {
	k := testKeyring(b, "bench")
	env, err := k.Sign("audit:stream", benchEvent(b))
	require.NoError(b, err)
	vals := entry(env)
	b.SetBytes(int64(len(env.Event)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := k.Verify("audit:stream", vals); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
