package redistest

import (
	"context"
	"testing"
	"time"

	tcnetwork "github.com/testcontainers/testcontainers-go/network"
)

// Network creates a throwaway Docker network for t and returns its name, for
// WithNetwork and for other containers of the test (auditproc replicas next
// to Redis). It is removed in t's cleanup, after the containers started later
// in the test (cleanups run last-registered first). It skips (or fails, see
// SkipOrFail) without Docker.
func Network(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{LabelTest: t.Name()}))
	if err != nil {
		t.Fatalf("redistest: create docker network: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := nw.Remove(ctx); err != nil {
			t.Errorf("redistest: remove docker network %s: %v", nw.Name, err)
		}
	})
	return nw.Name
}
