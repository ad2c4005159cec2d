package processor

import (
	"context"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/streambus"
)

// abandon leaves a journal as a process that died leaves it: unlocked,
// with its slots as they were.
func (j *journal) abandon(t *testing.T) {
	require.NoError(t, syscall.Munmap(j.mem))
	require.NoError(t, j.f.Close())
}

// TestCrashJournal: after a crash, only the entry a worker was running is
// charged; one that reached its attempts is dead-lettered as crashed_host;
// a journal a live process holds, or another pipeline's, is left alone.
func TestCrashJournal(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b := newFakeBus("s", 4)
	b.deliver(b.entries, "c")
	b.attempts["3-0"] = 1

	dead, err := openJournal(dir, "s", "g", "c", 2)
	require.NoError(t, err)
	dead.begin(0, "2-0")
	dead.begin(1, "4-0")
	dead.end(1)
	dead.begin(1, "3-0")
	dead.abandon(t)
	other, err := openJournal(dir, "other", "g", "c", 1)
	require.NoError(t, err)
	other.begin(0, "1-0")
	other.abandon(t)
	live, err := openJournal(dir, "s", "g", "live", 1)
	require.NoError(t, err)
	live.begin(0, "1-0")
	defer live.close()

	p := fakeProcessor(t, b, Config{MaxDeliveries: 2, StateDir: dir})
	require.NoError(t, p.recoverCrashed(ctx))
	assert.Equal(t, map[string]int64{"2-0": 1}, b.attempts, "charged once; 3-0 dead-lettered")
	require.Len(t, b.letters, 1)
	assert.Equal(t, "3-0", b.letters[0].ID)
	assert.Equal(t, streambus.ReasonCrashedHost, b.letters[0].Reason.Kind)
	assert.Equal(t, []string{"1-0", "2-0", "4-0"}, b.pendingIDs())
	assert.EqualValues(t, 1, p.Stats().Exhausted.Load())

	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, left, 2, "the other pipeline's journal and the live one stay")
	require.NoError(t, p.recoverCrashed(ctx))
	assert.Equal(t, map[string]int64{"2-0": 1}, b.attempts, "a journal is charged once")

	// Two processes as one consumer: the second gets a journal of its own.
	again, err := openJournal(dir, "s", "g", "live", 1)
	require.NoError(t, err)
	assert.NotEqual(t, live.path, again.path)
	again.close()
}
