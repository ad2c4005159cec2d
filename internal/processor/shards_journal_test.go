package processor

// Crash recovery of a replica's shards, which share one state directory.

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A replica of N shards restarts after a crash: its N processors recover
// at once over one consumer.state_dir. Each must find its own journal,
// though its siblings are reading theirs at the same moment (a shard that
// took a sibling's lock for "its process runs" would skip its crash, and
// the entry that was running would never be charged).
func TestShardsRecoverTheirCrashJournalsSideBySide(t *testing.T) {
	const shards, trials = 8, 200
	missed := 0
	for trial := range trials {
		dir := t.TempDir()
		for k := range shards {
			j, err := openJournal(dir, fmt.Sprintf("s:%d", k), "g", "replica-a", 1)
			require.NoError(t, err)
			j.begin(0, fmt.Sprintf("%d-%d", trial+1, k))
			j.abandon(t)
		}
		var start, wg sync.WaitGroup
		start.Add(1)
		got := make([][]string, shards)
		for k := range shards {
			wg.Go(func() {
				start.Wait()
				ids, done, err := crashedJournals(dir, fmt.Sprintf("s:%d", k), "g")
				if err == nil {
					got[k] = ids
					done()
				}
			})
		}
		start.Done()
		wg.Wait()
		for k := range shards {
			if len(got[k]) == 0 {
				missed++
			}
		}
	}
	assert.Zero(t, missed, "of %d crashed journals, %d were skipped by their own shard", shards*trials, missed)
}
