package examples_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
)

func TestNormalizeDefault(t *testing.T) {
	w := worker(t, load(t, "normalize", `{}`))
	for _, tt := range []struct{ name, in, want string }{
		{
			name: "legacy names and case",
			in:   `{"event_id":"e1","timestamp":"2024-05-01T12:00:00Z","user":"bob","event_type":"User.Login","outcome":"FAILURE","severity":"Warning","ip":"198.51.100.7"}`,
			want: `{"event_id":"e1","timestamp":"2024-05-01T12:00:00Z","outcome":"failure","severity":"warning","actor":"bob","source_ip":"198.51.100.7","action":"user.login"}`,
		},
		{
			name: "the new name wins over the old",
			in:   `{"actor":"alice","user":"bob"}`,
			want: `{"actor":"alice"}`,
		},
		{
			name: "values of any type move",
			in:   `{"user":{"name":"judy","id":7}}`,
			want: `{"actor":{"name":"judy","id":7}}`,
		},
		{
			name: "already normal: unchanged",
			in:   `{"event_id":"e2","actor":"alice","action":"user.login","outcome":"success","severity":"info","source_ip":"192.0.2.10"}`,
			want: `{"event_id":"e2","actor":"alice","action":"user.login","outcome":"success","severity":"info","source_ip":"192.0.2.10"}`,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := process(t, w, tt.in)
			requireVerdict(t, res, abi.VerdictOK, "")
			assert.JSONEq(t, tt.want, string(res.Event))
		})
	}
}

func TestNormalizeConfigured(t *testing.T) {
	w := worker(t, load(t, "normalize", `{
		"rename": {"who": "actor", "meta.ip": "source_ip"},
		"lowercase": ["details.method"],
		"defaults": {"severity": "info", "details.tags": ["audit"]},
		"remove": ["debug", "details.trace"]
	}`))
	res := process(t, w, `{"who":"carol","meta":{"ip":"192.0.2.1","region":"eu"},"details":{"method":"SSO","trace":"x"},"debug":{"a":1}}`)
	requireVerdict(t, res, abi.VerdictOK, "")
	assert.JSONEq(t, `{"actor":"carol","source_ip":"192.0.2.1","meta":{"region":"eu"},"details":{"method":"sso","tags":["audit"]},"severity":"info"}`, string(res.Event))

	res = process(t, w, `{"actor":"dan","severity":"error"}`)
	assert.JSONEq(t, `{"actor":"dan","severity":"error","details":{"tags":["audit"]}}`, string(res.Event), "defaults fill only what is missing")
}

func TestNormalizeRefusesBadConfig(t *testing.T) {
	for _, tt := range []struct{ config, msg string }{
		{`{"rename":{"user":"user"}}`, `normalize: config: rename "user" to "user": want two different, non-empty paths`},
		{`{"remove":[""]}`, `normalize: config: a path in lowercase or remove is empty`},
		{`{"rename":["user"]}`, `normalize: config: json: cannot unmarshal array`},
	} {
		t.Run(tt.config, func(t *testing.T) {
			_, err := loadErr(t, "normalize", tt.config)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

// TestPipeline runs the examples in the order docs/plugins.md suggests, Go
// and C mixed, on events from a legacy producer.
func TestPipeline(t *testing.T) {
	w := worker(t,
		load(t, "normalize", `{}`),
		load(t, "schema", `{}`),
		load(t, "redact", `{"fields":["email"]}`),
		load(t, "filter", `{"min_severity":"info"}`),
		load(t, "detect", `{"threshold":2}`, "alerts"),
	)
	res := process(t, w, `{"event_id":"e1","timestamp":"2024-05-01T12:00:00Z","user":"bob","event_type":"USER.LOGIN","outcome":"Failure","severity":"warning","ip":"198.51.100.7","details":{"password":"hunter2","email":"bob@example.org"}}`)
	requireVerdict(t, res, abi.VerdictOK, "")
	assert.JSONEq(t, `{"event_id":"e1","timestamp":"2024-05-01T12:00:00Z","outcome":"failure","severity":"warning","actor":"bob","source_ip":"198.51.100.7","action":"user.login","details":{"password":"[REDACTED]","email":"[REDACTED]"}}`, string(res.Event))
	assert.Empty(t, res.Emits)

	res = process(t, w, `{"event_id":"e2","timestamp":"2024-05-01T12:00:05Z","user":"bob","event_type":"user.login","outcome":"failure","severity":"warning","ip":"198.51.100.7"}`)
	requireVerdict(t, res, abi.VerdictOK, "")
	require.Len(t, res.Emits, 1)
	assert.Contains(t, string(res.Emits[0].Event), `"alert":"failed_logins","severity":"high","actor":"bob","count":2`)

	res = process(t, w, `{"event_id":"e3","timestamp":"2024-05-01T12:00:06Z","user":"monitor","action":"ping","outcome":"success","severity":"DEBUG"}`)
	requireVerdict(t, res, abi.VerdictDrop, "filter: severity debug below min_severity info")
	assert.Equal(t, "filter", res.Plugin)

	res = process(t, w, `{"event_id":"e4","timestamp":"2024-05-01T12:00:07Z","action":"user.login","outcome":"success"}`)
	requireVerdict(t, res, abi.VerdictReject, "schema: missing required field actor")
	assert.Equal(t, "schema", res.Plugin)
}
