package processor

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/streambus"
)

// A Redis operation that Redis answers with an error (a commit whose
// replicas do not confirm it) shows the client is alive: the read loop,
// held back meanwhile, is not reported stalled (/healthz would restart the
// replica for nothing). One that times out shows nothing.
func TestAnsweredRetriesAreNoStall(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		stalled bool
	}{
		{"not replicated", &streambus.NotReplicatedError{Key: "s", Replicas: 0, Want: 1, Timeout: time.Second}, false},
		{"timeout", context.DeadlineExceeded, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Processor{cfg: Config{Block: time.Second}, log: slog.New(slog.DiscardHandler), metrics: NewMetrics()}
			p.lastRead.Store(time.Now().Add(-time.Hour).UnixNano())
			failed := false
			err := p.retryRedis(context.Background(), "commit", func() error {
				if !failed {
					failed = true
					return tc.err
				}
				return nil
			})
			require.NoError(t, err)
			p.checkStall()
			assert.Equal(t, tc.stalled, p.stalled.Load())
		})
	}
}
