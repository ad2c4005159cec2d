package examples_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
)

// login is an audit event of a login attempt at minute:second past noon.
func login(id, actor, outcome, ip string, minute, second int) string {
	return fmt.Sprintf(`{"event_id":%q,"timestamp":"2024-05-01T12:%02d:%02dZ","actor":%q,"action":"user.login","target":"console","outcome":%q,"severity":"warning","source_ip":%q,"details":{"method":"password"}}`,
		id, minute, second, actor, outcome, ip)
}

func TestDetectFailedLogins(t *testing.T) {
	w := worker(t, load(t, "detect", `{"sink":"alerts","threshold":3,"window":"5m"}`, "alerts"))
	noAlert := func(ev string) {
		t.Helper()
		res := process(t, w, ev)
		requireVerdict(t, res, abi.VerdictOK, "")
		assert.Equal(t, ev, string(res.Event), "the event goes on unchanged")
		assert.Empty(t, res.Emits)
	}
	noAlert(login("e1", "mallory", "failure", "203.0.113.9", 0, 0))
	noAlert(login("e2", "bob", "failure", "198.51.100.7", 0, 10)) // another actor counts apart
	noAlert(login("e3", "mallory", "success", "203.0.113.9", 0, 20))
	noAlert(login("e4", "mallory", "denied", "203.0.113.10", 1, 0))
	noAlert(login("e4", "mallory", "denied", "203.0.113.10", 1, 0)) // a redelivery does not count twice

	res := process(t, w, login("e5", "mallory", "failure", "203.0.113.9", 2, 30))
	requireVerdict(t, res, abi.VerdictOK, "")
	require.Len(t, res.Emits, 1)
	alert := `{"alert":"failed_logins","severity":"high","actor":"mallory","count":3,"window_seconds":300,
		"first_timestamp":"2024-05-01T12:00:00Z","last_timestamp":"2024-05-01T12:02:30Z",
		"source_ips":["203.0.113.9","203.0.113.10"],"event_ids":["e1","e4","e5"],"entry_id":"1714564800000-0"}`
	assert.Equal(t, host.Emit{Plugin: "detect", Sink: "alerts", Event: res.Emits[0].Event}, res.Emits[0])
	assert.JSONEq(t, alert, string(res.Emits[0].Event))

	// The event that raised the alert, delivered again (its first emit is
	// lost when a later plugin fails), raises it again.
	res = process(t, w, login("e5", "mallory", "failure", "203.0.113.9", 2, 30))
	require.Len(t, res.Emits, 1)
	assert.JSONEq(t, alert, string(res.Emits[0].Event))

	// After an alert the window starts empty.
	noAlert(login("e6", "mallory", "failure", "203.0.113.9", 2, 40))
	noAlert(login("e7", "mallory", "failure", "203.0.113.9", 2, 50))

	// Failures spread wider than the window never add up.
	noAlert(login("b2", "bob", "failure", "198.51.100.7", 4, 10))
	noAlert(login("b3", "bob", "failure", "198.51.100.7", 8, 30)) // e2 at 0:10 has expired
	res = process(t, w, login("b4", "bob", "failure", "198.51.100.7", 9, 0))
	require.Len(t, res.Emits, 1, "b2, b3, b4 are within 5 minutes")
	assert.Contains(t, string(res.Emits[0].Event), `"event_ids":["b2","b3","b4"]`)
}

func TestDetectMaxActorsEvictsTheLeastRecent(t *testing.T) {
	w := worker(t, load(t, "detect", `{"threshold":2,"max_actors":2}`, "alerts"))
	for _, ev := range []string{
		login("a1", "ann", "failure", "", 0, 1),
		login("b1", "ben", "failure", "", 0, 2),
		login("c1", "cid", "failure", "", 0, 3), // ann is forgotten
	} {
		assert.Empty(t, process(t, w, ev).Emits)
	}
	assert.Len(t, process(t, w, login("c2", "cid", "failure", "", 0, 4)).Emits, 1, "cid is tracked")
	assert.Empty(t, process(t, w, login("a2", "ann", "failure", "", 0, 5)).Emits, "ann's first failure was evicted")
}

func TestDetectPrivilegeChange(t *testing.T) {
	w := worker(t, load(t, "detect", `{}`, "alerts"))
	grant := `{"event_id":"p1","timestamp":"2024-05-01T12:00:04Z","actor":"dave","action":"role.grant","target":{"user":"erin","role":"admin"},"outcome":"success","severity":"notice","source_ip":"192.0.2.4","details":{}}`
	res := process(t, w, grant)
	requireVerdict(t, res, abi.VerdictOK, "")
	require.Len(t, res.Emits, 1)
	assert.JSONEq(t, `{"alert":"privilege_change","severity":"high","actor":"dave","action":"role.grant","target":{"user":"erin","role":"admin"},
		"timestamp":"2024-05-01T12:00:04Z","event_id":"p1","entry_id":"1714564800000-0"}`, string(res.Emits[0].Event))

	res = process(t, w, `{"event_id":"p2","actor":"dave","action":"sudo.exec","outcome":"success"}`)
	require.Len(t, res.Emits, 1, "a prefix pattern")
	assert.Empty(t, process(t, w, `{"event_id":"p3","actor":"dave","action":"role.grant","outcome":"denied"}`).Emits, "a denied grant changed nothing")
	assert.Empty(t, process(t, w, `{"event_id":"p4","actor":"dave","action":"role.list","outcome":"success"}`).Emits)
}

func TestDetectRetriesWhenTheSinkIsNotGranted(t *testing.T) {
	w := worker(t, load(t, "detect", `{"sink":"alerts"}`)) // no sinks granted
	res := w.Process(context.Background(), host.Event{EntryID: "1-0", Deliveries: 1,
		Data: []byte(`{"event_id":"p1","actor":"dave","action":"role.grant","outcome":"success"}`)})
	requireVerdict(t, res, abi.VerdictRetry, "detect: emit to sink alerts: guest: sink not granted")
	assert.Empty(t, res.Emits)
}

func TestDetectRefusesBadConfig(t *testing.T) {
	for _, tt := range []struct{ config, msg string }{
		{`{"sink":""}`, "detect: config: sink is empty"},
		{`{"threshold":0}`, "detect: config: threshold 0: want 1 to 1000"},
		{`{"window":"soon"}`, `detect: config: window "soon": want a positive duration such as 5m`},
		{`{"window":"-1m"}`, `detect: config: window "-1m": want a positive duration such as 5m`},
		{`{"max_actors":0}`, "detect: config: max_actors 0: want 1 to 1000000"},
		{`{"treshold":3}`, `detect: config: json: unknown field "treshold"`},
	} {
		t.Run(tt.config, func(t *testing.T) {
			_, err := loadErr(t, "detect", tt.config)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}
