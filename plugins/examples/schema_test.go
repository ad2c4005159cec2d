package examples_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
)

func TestSchemaDefault(t *testing.T) {
	w := worker(t, load(t, "schema", `{}`))
	for _, tt := range []struct {
		name, in string
		want     abi.Verdict
		msg      string
	}{
		{"complete event", `{"event_id":"e1","timestamp":"2024-05-01T12:00:00.123+02:00","actor":"alice","action":"user.login","target":"console","outcome":"success","severity":"info","source_ip":"192.0.2.10","details":{"mfa":true}}`, abi.VerdictOK, ""},
		{"optional fields may be absent", `{"event_id":"e1","timestamp":"2024-05-01T12:00:00Z","actor":"alice","action":"user.login","outcome":"success"}`, abi.VerdictOK, ""},
		{"missing actor", `{"event_id":"e1","timestamp":"2024-05-01T12:00:00Z","action":"user.login","outcome":"success"}`, abi.VerdictReject, "schema: missing required field actor"},
		{"empty and null count as missing", `{"event_id":"","timestamp":"2024-05-01T12:00:00Z","actor":null,"action":"user.login","outcome":"success"}`, abi.VerdictReject, "schema: missing required field actor; missing required field event_id"},
		{"every problem is named", `{"event_id":7,"timestamp":1714564800,"actor":"a","action":"x","outcome":"success","details":[]}`, abi.VerdictReject, "schema: field details is array, want object; field event_id is number, want string; field timestamp is number, want an RFC 3339 timestamp string"},
		{"bad timestamp", `{"event_id":"e1","timestamp":"yesterday","actor":"a","action":"x","outcome":"success"}`, abi.VerdictReject, "schema: field timestamp is not an RFC 3339 timestamp: yesterday"},
		{"empty event", `{}`, abi.VerdictReject, "schema: missing required field action; missing required field actor; missing required field event_id; missing required field outcome; missing required field timestamp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := process(t, w, tt.in)
			requireVerdict(t, res, tt.want, tt.msg)
			assert.Equal(t, tt.in, string(res.Event))
		})
	}
}

func TestSchemaConfigured(t *testing.T) {
	w := worker(t, load(t, "schema", `{
		"required": ["actor", "details.request_id"],
		"types": {"details.attempt": "integer", "details.mfa": "boolean", "details.ratio": "number"},
		"enums": {"outcome": ["success", "failure"]}
	}`))
	requireVerdict(t, process(t, w, `{"actor":"a","outcome":"failure","details":{"request_id":"r1","attempt":3,"mfa":false,"ratio":0.5}}`), abi.VerdictOK, "")
	requireVerdict(t, process(t, w, `{"actor":"a","details":{"request_id":"r1"}}`), abi.VerdictOK, "")
	requireVerdict(t, process(t, w, `{"actor":"a","outcome":"maybe","details":{"request_id":"r1","attempt":1.5,"mfa":"yes"}}`),
		abi.VerdictReject, `schema: field details.attempt is a fraction, want integer; field details.mfa is string, want boolean; field outcome is "maybe", want one of success, failure`)
	requireVerdict(t, process(t, w, `{"actor":"a","details":{}}`), abi.VerdictReject, "schema: missing required field details.request_id")
}

func TestSchemaRefusesBadConfig(t *testing.T) {
	for _, tt := range []struct{ config, msg string }{
		{`{"types":{"actor":"text"}}`, `schema: config: types.actor: "text" is not one of string, number, integer, boolean, object, array, timestamp`},
		{`{"required":[""]}`, `schema: config: required: a field path is empty`},
		{`{"enums":{"outcome":[]}}`, `schema: config: enums.outcome: the list of allowed values is empty`},
		{`{"required":[]}`, `schema: config: nothing to check`},
		{`{"require":["actor"]}`, `schema: config: json: unknown field "require"`},
	} {
		t.Run(tt.config, func(t *testing.T) {
			_, err := loadErr(t, "schema", tt.config)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}
