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

// BenchmarkCheckEvent: the rules every producer applies to every event,
// with the member scan CheckEvent runs and with gjson's parser.
func BenchmarkCheckEvent(b *testing.B) {
	ev := []byte(`{"actor":"u-0042","email":"user0042@example.com","action":"login","target":"invoice/000042","outcome":"success",` +
		`"severity":"info","source_ip":"10.1.2.3","region":"eu-west-1","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",` +
		`"request_id":"req-00000000deadbeef","n":42}`)
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(ev)))
		for b.Loop() {
			if _, err := CheckEvent(ev, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parsed", func(b *testing.B) {
		b.SetBytes(int64(len(ev)))
		for b.Loop() {
			if _, err := checkMembersParsed(string(ev)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("members", func(b *testing.B) {
		b.SetBytes(int64(len(ev)))
		for b.Loop() {
			if _, err := checkMembers(ev, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
