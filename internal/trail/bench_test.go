package trail

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkChecker is the checker's own cost per entry of a clean chain
// (verification included), without Redis.
func BenchmarkChecker(b *testing.B) {
	k := testKeys(b)
	entries := chain(b, k, 10000, true)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		c := New(k, Config{FromStart: true, Now: time.UnixMilli(1000)})
		for _, e := range entries {
			c.Add("s", e.id, e.fields)
			i++
		}
		if f, _ := c.Finish(); len(f) > 0 {
			b.Fatal(fmt.Sprint(f[0]))
		}
	}
}
