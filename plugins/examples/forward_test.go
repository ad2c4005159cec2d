package examples_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
)

func TestForward(t *testing.T) {
	t.Run("sends the event as the plugins before it left it", func(t *testing.T) {
		redact := load(t, "redact", `{}`)
		forward := load(t, "forward", `{"sink":"archive"}`, "archive")
		w := worker(t, redact, forward)
		res := process(t, w, `{"event_id":"e1","actor":"bob","details":{"password":"hunter2"}}`)
		requireVerdict(t, res, abi.VerdictOK, "")
		require.Len(t, res.Emits, 1)
		assert.Equal(t, "archive", res.Emits[0].Sink)
		assert.JSONEq(t, `{"event_id":"e1","actor":"bob","details":{"password":"[REDACTED]"}}`, string(res.Emits[0].Event))
	})
	t.Run("a sink not granted retries with the reason", func(t *testing.T) {
		w := worker(t, load(t, "forward", `{"sink":"archive"}`))
		res := process(t, w, `{"event_id":"e2","actor":"bob"}`)
		require.Equal(t, abi.VerdictRetry, res.Verdict)
		assert.Contains(t, res.Message, "forward to sink archive")
		assert.Contains(t, res.Message, "not granted")
		assert.Empty(t, res.Emits)
	})
	t.Run("refuses a configuration without a sink", func(t *testing.T) {
		_, err := loadErr(t, "forward", `{}`)
		require.Error(t, err)
		assert.Contains(t, err.Error(), `"sink" is required`)
	})
}
