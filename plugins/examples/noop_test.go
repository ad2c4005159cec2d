package examples_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/auditproc/auditproc/abi"
)

func TestNoOp(t *testing.T) {
	const ev = `{"event_id":"e1","timestamp":"2024-05-01T12:00:00Z","actor":"alice","action":"user.login","target":"console","outcome":"success","severity":"info","source_ip":"192.0.2.10","details":{"mfa":true}}`
	for _, name := range []string{"noop-go", "noop-c"} {
		t.Run(name, func(t *testing.T) {
			w := worker(t, load(t, name, `{"anything":"goes"}`))
			for range 3 {
				res := process(t, w, ev)
				requireVerdict(t, res, abi.VerdictOK, "")
				assert.Equal(t, ev, string(res.Event))
				assert.Empty(t, res.Emits)
				assert.Empty(t, res.Message)
			}
		})
	}
}
