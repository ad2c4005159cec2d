package processor

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tidwall/gjson"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/streambus"
)

// An emit without event_id or timestamp gets the same ones on every
// delivery of its entry, so an external sink recognises a retried entry.
func TestEmitWithoutEventIDIsDeterministic(t *testing.T) {
	p := &Processor{}
	run := func(entryID string) []host.Emit {
		r := host.Result{Verdict: abi.VerdictOK, Emits: []host.Emit{
			{Plugin: "detect", Sink: "alerts", Event: []byte(`{"alert":"burst"}`)},
			{Plugin: "detect", Sink: "alerts", Event: []byte(`{"alert":"grant"}`)},
			{Plugin: "forward", Sink: "archive", Event: []byte(`{"event_id":"given","timestamp":"2026-01-01T00:00:00Z"}`)},
		}}
		p.checkEmits(&streambus.Entry{ID: entryID, Stream: "audit:stream"}, &r)
		require.Equal(t, abi.VerdictOK, r.Verdict, r.Message)
		return r.Emits
	}
	first, again, other := run("1700000000000-0"), run("1700000000000-0"), run("1700000000000-1")
	for i := range first {
		assert.JSONEq(t, string(first[i].Event), string(again[i].Event), "a redelivery emits the same event")
	}
	id0 := gjson.GetBytes(first[0].Event, "event_id").Str
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, id0)
	assert.NotEqual(t, id0, gjson.GetBytes(first[1].Event, "event_id").Str, "each emit its own id")
	assert.NotEqual(t, id0, gjson.GetBytes(other[0].Event, "event_id").Str, "each entry its own ids")
	assert.Equal(t, "given", gjson.GetBytes(first[2].Event, "event_id").Str, "an id the plugin gave is kept")
	assert.Equal(t, "2023-11-14T22:13:20.000000000Z", gjson.GetBytes(first[0].Event, "timestamp").Str, "the entry's time")
}
