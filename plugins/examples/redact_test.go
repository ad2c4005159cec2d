package examples_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi"
)

func TestRedact(t *testing.T) {
	w := worker(t, load(t, "redact", `{}`))
	tests := []struct {
		name, in, want string
	}{
		{
			name: "secret-looking names, any value type, any depth",
			in:   `{"event_id":"e1","actor":"alice","action":"user.password.change","details":{"old_password":"hunter2","NewPassword":"x","api_key":123,"auth":{"token":{"v":"t0k3n"}},"pin":"1234","shipping":"standard"}}`,
			want: `{"event_id":"e1","actor":"alice","action":"user.password.change","details":{"old_password":"[REDACTED]","NewPassword":"[REDACTED]","api_key":"[REDACTED]","auth":{"token":"[REDACTED]"},"pin":"[REDACTED]","shipping":"standard"}}`,
		},
		{
			name: "a key spelt with escapes is unescaped before matching",
			in:   `{"pass\u0077ord":"hunter2","api\u005Fkey":"x","se\"cret":"kept"}`,
			want: `{"pass\u0077ord":"[REDACTED]","api\u005Fkey":"[REDACTED]","se\"cret":"kept"}`,
		},
		{
			name: "card numbers inside text, grouped or not, and as numbers",
			in:   `{"details":{"note":"paid with 4111 1111 1111 1111, ok","card":"5500-0055-5555-5559","amex":378282246310005,"list":["6011111111111117"]}}`,
			want: `{"details":{"note":"paid with [REDACTED], ok","card":"[REDACTED]","amex":"[REDACTED]","list":["[REDACTED]"]}}`,
		},
		{
			name: "numbers that are no cards stay",
			in:   `{"ts_ms":1714564800000,"order":"order 4111111111111112","id":"x4111111111111111","ref":"12345678901234","neg":-4111111111111111,"f":4111111111111111.5}`,
			want: `{"ts_ms":1714564800000,"order":"order 4111111111111112","id":"x4111111111111111","ref":"12345678901234","neg":-4111111111111111,"f":4111111111111111.5}`,
		},
		{
			name: "bearer tokens and JWTs",
			in:   `{"details":{"header":"Bearer abcdefgh12345678","log":"sent bearer   xyz.ABC-123_456~+/= then","jwt":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"}}`,
			want: `{"details":{"header":"Bearer [REDACTED]","log":"sent bearer   [REDACTED] then","jwt":"[REDACTED]"}}`,
		},
		{
			name: "escapes around a masked value are kept",
			in:   "{\"msg\":\"card:\\t4111111111111111\\n\\\"\\u00e9\\u2028\\ud83d\\ude00\\/\"}",
			want: "{\"msg\":\"card:\\t[REDACTED]\\n\\\"é\u2028😀/\"}",
		},
		{
			name: "whitespace outside masked values is kept",
			in:   "{ \"password\" : [1, {\"a\": \"]\"}] ,\n \"b\" : true }",
			want: "{ \"password\" : \"[REDACTED]\" ,\n \"b\" : true }",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := process(t, w, tt.in)
			requireVerdict(t, res, abi.VerdictOK, "")
			assert.Equal(t, tt.want, string(res.Event))
		})
	}

	t.Run("an event without secrets is passed on byte for byte", func(t *testing.T) {
		in := `{"event_id":"e2","timestamp":"2024-05-01T12:00:00Z","actor":"alice","action":"user.login","target":"console","outcome":"success","severity":"info","source_ip":"192.0.2.10","details":{"mfa":true,"attempt":1}}`
		res := process(t, w, in)
		requireVerdict(t, res, abi.VerdictOK, "")
		assert.Equal(t, in, string(res.Event))
	})
}

func TestRedactConfig(t *testing.T) {
	w := worker(t, load(t, "redact", `{"fields":["email","SSN"],"mask":"***","secret_names":false,"card_numbers":false,"bearer_tokens":true}`))
	res := process(t, w, `{"Email":"a@example.com","details":{"ssn":"123-45-6789","password":"kept","card":"4111111111111111","h":"Bearer abcdefgh12345678"}}`)
	requireVerdict(t, res, abi.VerdictOK, "")
	assert.Equal(t, `{"Email":"***","details":{"ssn":"***","password":"kept","card":"4111111111111111","h":"Bearer ***"}}`, string(res.Event))
}

func TestRedactRefusesBadConfig(t *testing.T) {
	for _, tt := range []struct{ config, msg string }{
		{`[]`, "redact: config: the configuration must be a JSON object"},
		{`{"fields":"email"}`, "redact: config: fields: want an array of field names"},
		{`{"fields":[1]}`, "redact: config: fields: want an array of field names (strings)"},
		{`{"fields":[""]}`, "redact: config: fields: a field name is empty"},
		{`{"mask":1}`, "redact: config: mask: want a string"},
		{`{"card_numbers":"yes"}`, "redact: config: card_numbers: want true or false"},
		{`{"mask_all":true}`, "redact: config: mask_all: unknown key"},
		{`{"mask":"x"} x`, "redact: config: trailing text after the object"},
	} {
		t.Run(tt.config, func(t *testing.T) {
			_, err := loadErr(t, "redact", tt.config)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestRedactRejectsWhatItCannotScan(t *testing.T) {
	w := worker(t, load(t, "redact", `{}`))
	for _, tt := range []struct{ name, in, msg string }{
		{"truncated", `{"password":"x`, "redact: the event is not valid JSON, so it cannot be redacted"},
		{"bad escape", `{"a":"\q"}`, "redact: the event is not valid JSON, so it cannot be redacted"},
		{"trailing text", `{"a":1} {"password":"x"}`, "redact: the event is not valid JSON, so it cannot be redacted"},
		{"not an object", `["password"]`, "redact: the event is not a JSON object"},
		{"too deep", strings.Repeat(`{"a":`, 600) + "1" + strings.Repeat("}", 600), "redact: the event nests deeper than 512 levels, so it cannot be redacted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := process(t, w, tt.in)
			requireVerdict(t, res, abi.VerdictReject, tt.msg)
		})
	}
	// The instance is still healthy afterwards.
	res := process(t, w, `{"password":"x"}`)
	requireVerdict(t, res, abi.VerdictOK, "")
	assert.Equal(t, `{"password":"[REDACTED]"}`, string(res.Event))
}
