package processor

import (
	"fmt"
	"testing"

	"github.com/auditproc/auditproc/internal/streambus"
)

// BenchmarkKeyWatch is the keyring-mismatch bookkeeping of one batch of 256
// new verified entries of one key id (keyWatch.observe), the cost added to
// every read of new entries.
func BenchmarkKeyWatch(b *testing.B) {
	batch := streambus.Batch{Entries: make([]streambus.Entry, 256)}
	for i := range batch.Entries {
		batch.Entries[i] = streambus.Entry{ID: fmt.Sprintf("1-%d", i), KeyID: "k"}
	}
	var k keyWatch
	b.ReportAllocs()
	for b.Loop() {
		k.observe(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/256, "ns/entry")
}
