package host_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
)

// procStatus returns a field of /proc/self/status in bytes.
func procStatus(t *testing.T, field string) uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// TestMemoryBombStaysNearItsCap: two workers whose guests grow their
// memory 1 MiB at a time up to a 32 MiB cap, again and again, raise the
// process's peak RSS by little more than the two caps. Guest memory lives
// outside the Go heap and grows in place: it neither copies on growth nor
// waits for a garbage collection to be given back.
func TestMemoryBombStaysNearItsCap(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	const memCap = 32 << 20
	p := load(t, "hostile/membomb-touch", host.PluginSpec{Name: "membomb-touch", MemoryLimitBytes: memCap, Deadline: 5 * time.Second})
	workers := []*host.Worker{worker(t, p), worker(t, p)}

	runtime.GC()
	debug.FreeOSMemory()
	base := procStatus(t, "VmRSS")
	// Reset the peak (VmHWM) to the current RSS.
	require.NoError(t, os.WriteFile("/proc/self/clear_refs", []byte("5"), 0))

	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 6 {
				res := w.Process(context.Background(), testEvent([]byte(`{"x":"boom"}`)))
				assert.Equal(t, abi.VerdictRetry, res.Verdict)
				// It traps at the cap, unless a very busy machine stops it
				// at its deadline first.
				assert.True(t, errors.Is(res.Err, host.ErrTrap) || errors.Is(res.Err, host.ErrDeadline), "%v", res.Err)
			}
		}()
	}
	wg.Wait()
	peak := procStatus(t, "VmHWM")
	t.Logf("RSS %d MiB before, peak %d MiB (+%d MiB) for 2 workers x %d MiB", base>>20, peak>>20, (peak-base)>>20, memCap>>20)
	assert.Less(t, peak-base, uint64(2*memCap+24<<20), "peak RSS above the two caps plus 24 MiB")
}
