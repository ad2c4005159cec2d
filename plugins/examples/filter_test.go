package examples_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
)

const filterConfig = `{
	"min_severity": "info",
	"rules": [
		{"match": {"action": ["healthcheck.*", "*.ping"]}, "then": "drop"},
		{"match": {"actor": ["svc-backup"], "action": ["backup.*"]}, "then": "drop"},
		{"match": {"actor": ["root", "admin*"]}, "then": "keep"}
	]
}`

func TestFilter(t *testing.T) {
	w := worker(t, load(t, "filter", filterConfig))
	ev := func(actor, action, severity string) string {
		return `{"event_id":"e1","timestamp":"2024-05-01T12:00:00Z","actor":"` + actor + `","action":"` + action +
			`","target":"db/main","outcome":"success","severity":"` + severity + `","source_ip":"192.0.2.10","details":{}}`
	}
	for _, tt := range []struct {
		name, in string
		want     abi.Verdict
		msg      string
	}{
		{"plain event kept", ev("alice", "user.login", "info"), abi.VerdictOK, ""},
		{"health check dropped", ev("monitor", "healthcheck.http", "info"), abi.VerdictDrop, "filter: rules[0] (action=healthcheck.*|*.ping)"},
		{"suffix pattern", ev("lb", "gateway.ping", "warning"), abi.VerdictDrop, "filter: rules[0] (action=healthcheck.*|*.ping)"},
		{"every field of a rule must match", ev("svc-backup", "backup.run", "info"), abi.VerdictDrop, "filter: rules[1] (action=backup.* actor=svc-backup)"},
		{"one field alone is not enough", ev("svc-backup", "user.login", "info"), abi.VerdictOK, ""},
		{"below min_severity", ev("alice", "user.login", "debug"), abi.VerdictDrop, "filter: severity debug below min_severity info"},
		{"severity case does not matter", ev("alice", "user.login", "DEBUG"), abi.VerdictDrop, "filter: severity DEBUG below min_severity info"},
		{"a keep rule wins over min_severity", ev("admin-7", "user.login", "debug"), abi.VerdictOK, ""},
		{"unknown severity kept", ev("alice", "user.login", "chatty"), abi.VerdictOK, ""},
		{"missing fields kept", `{"event_id":"e2"}`, abi.VerdictOK, ""},
		{"non-string field does not match", `{"actor":"svc-backup","action":7,"severity":"info"}`, abi.VerdictOK, ""},
		{"escaped value is unescaped", `{"actor":"x","action":"healthcheck\u002edb","severity":"info"}`, abi.VerdictDrop, "filter: rules[0] (action=healthcheck.*|*.ping)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := process(t, w, tt.in)
			requireVerdict(t, res, tt.want, tt.msg)
			assert.Equal(t, tt.in, string(res.Event), "the event is never changed")
			assert.Empty(t, res.Emits)
		})
	}
}

func TestFilterDefaultDrop(t *testing.T) {
	w := worker(t, load(t, "filter", `{"default":"drop","rules":[{"match":{"severity":["error","critical"]},"then":"keep"}]}`))
	requireVerdict(t, process(t, w, `{"severity":"critical"}`), abi.VerdictOK, "")
	requireVerdict(t, process(t, w, `{"severity":"info"}`), abi.VerdictDrop, "filter: no rule kept it (default drop)")
}

func TestFilterRefusesBadConfig(t *testing.T) {
	for _, tt := range []struct{ config, msg string }{
		{`{"min_severity":"loud"}`, `filter: config: min_severity "loud" is not one of debug, info, notice, warning, error, critical, alert, emergency`},
		{`{"rules":[{"match":{"actor":["x"]},"then":"maybe"}]}`, `filter: config: rules[0].then "maybe": want keep or drop`},
		{`{"rules":[{"then":"drop"}]}`, `filter: config: rules[0].match is empty`},
		{`{"rules":[{"match":{"actor":[]},"then":"drop"}]}`, `filter: config: rules[0].match: field "actor" needs a non-empty list of patterns`},
		{`{"default":"reject"}`, `filter: config: default "reject": want keep or drop`},
		{`{"min_severty":"info"}`, `filter: config: json: unknown field "min_severty"`},
	} {
		t.Run(tt.config, func(t *testing.T) {
			_, err := loadErr(t, "filter", tt.config)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}
