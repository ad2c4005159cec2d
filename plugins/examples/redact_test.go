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

// TestRedactScanning covers what a scanner of the JSON text can get wrong:
// escapes, nesting, case, digit runs around card numbers, matches at the
// end of a string and events left as they are.
func TestRedactScanning(t *testing.T) {
	w := worker(t, load(t, "redact", `{"fields":["ssn","Email"]}`))
	cards70 := strings.Repeat("4111111111111111, ", 70)
	masked70 := strings.Repeat("[REDACTED], ", 64) + strings.Repeat("4111111111111111, ", 6)
	tests := []struct {
		name, in, want string
	}{
		{
			name: "escaped quotes and backslashes do not end a string",
			in:   `{"msg":"{\"password\":\"hunter2\"}","a":"x\\","password":"y","b":"\\\"ssn\\\":1"}`,
			want: `{"msg":"{\"password\":\"hunter2\"}","a":"x\\","password":"[REDACTED]","b":"\\\"ssn\\\":1"}`,
		},
		{
			name: "a key with an escaped quote is unescaped before matching",
			in:   `{"q\"password":"x","em\u0061il":"a@example.com","e\"mail":"kept"}`,
			want: `{"q\"password":"[REDACTED]","em\u0061il":"[REDACTED]","e\"mail":"kept"}`,
		},
		{
			name: "nested objects and arrays",
			in:   `{"a":[{"b":[{"Token":"x"},["4111111111111111",{"c":{"SSN":{"d":[1,2]}}}]]}],"e":[[],{}],"f":{"g":{"h":{"email":[]}}},"i":[[["Bearer abcdefgh12345678"]]]}`,
			want: `{"a":[{"b":[{"Token":"[REDACTED]"},["[REDACTED]",{"c":{"SSN":"[REDACTED]"}}]]}],"e":[[],{}],"f":{"g":{"h":{"email":"[REDACTED]"}}},"i":[[["Bearer [REDACTED]"]]]}`,
		},
		{
			name: "names match case-insensitively, secret words after removing separators",
			in:   `{"EMAIL":1,"eMail":"x","Ssn":null,"PassWord":true,"X-API-KEY":"k","Session.Id":"s","PIN":1234,"Cvv":"123","cvc":"1","my private_key":"p","AccessKey":"a","CREDENTIALS":"c","set-cookie":"c","auth":"plain","shipping":"x","pinned":"x","spin":"x","emails":"x","ssn2":"x","pässword":"x","":"x"}`,
			want: `{"EMAIL":"[REDACTED]","eMail":"[REDACTED]","Ssn":"[REDACTED]","PassWord":"[REDACTED]","X-API-KEY":"[REDACTED]","Session.Id":"[REDACTED]","PIN":"[REDACTED]","Cvv":"[REDACTED]","cvc":"[REDACTED]","my private_key":"[REDACTED]","AccessKey":"[REDACTED]","CREDENTIALS":"[REDACTED]","set-cookie":"[REDACTED]","auth":"plain","shipping":"x","pinned":"x","spin":"x","emails":"x","ssn2":"x","pässword":"x","":"x"}`,
		},
		{
			name: "a long name containing a secret word",
			in:   `{"` + strings.Repeat("x", 300) + `_client_secret_` + strings.Repeat("y", 300) + `":"s","` + strings.Repeat("z", 300) + `":"kept"}`,
			want: `{"` + strings.Repeat("x", 300) + `_client_secret_` + strings.Repeat("y", 300) + `":"[REDACTED]","` + strings.Repeat("z", 300) + `":"kept"}`,
		},
		{
			name: "card-like digits inside longer numbers and words stay",
			in:   `{"n":41111111111111110000,"m":41111111111111111,"s":"411111111111111100","g":"12 4111111111111111 34","d":"ref 4111111111111111-12","w":"x4111111111111111y","t":"4111111111111111x"}`,
			want: `{"n":41111111111111110000,"m":41111111111111111,"s":"411111111111111100","g":"12 4111111111111111 34","d":"ref 4111111111111111-12","w":"x4111111111111111y","t":"4111111111111111x"}`,
		},
		{
			name: "card numbers after punctuation, in arrays and as the whole number",
			in:   `{"a":"1.4111111111111111","b":[4111111111111111,4012888888881881,"x"],"c":"(4111-1111-1111-1111)","d":"4111 1111 1111 1111","u":"_4111111111111111","v":"9 4111111111111111"}`,
			want: `{"a":"1.[REDACTED]","b":["[REDACTED]","[REDACTED]","x"],"c":"([REDACTED])","d":"[REDACTED]","u":"_[REDACTED]","v":"9 [REDACTED]"}`,
		},
		{
			name: "matches at the end of a string",
			in:   `{"h":"Bearer abcdefgh12345678","j":"x eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl","c":"card 4111111111111111","s":"Bearer abcdefg","e":"Bearer abcdefgh12345678\n"}`,
			want: `{"h":"Bearer [REDACTED]","j":"x [REDACTED]","c":"card [REDACTED]","s":"Bearer abcdefg","e":"Bearer [REDACTED]\n"}`,
		},
		{
			name: "a value spelt with escapes is unescaped, masked and re-encoded",
			in:   `{"a":"card \u0034111111111111111 caf\u00e9 \/","b":"Bearer\tabcdefgh12345678","c":"caf\u00e9 \/ kept"}`,
			want: `{"a":"card [REDACTED] café /","b":"Bearer\t[REDACTED]","c":"caf\u00e9 \/ kept"}`,
		},
		{
			name: "at most 64 matches are masked in one string",
			in:   `{"a":"` + cards70 + `"}`,
			want: `{"a":"` + masked70 + `"}`,
		},
		{
			name: "a short string is never a match",
			in:   `{"a":"4111111111111","b":"4222222222222","c":"eyJ.a.b"}`,
			want: `{"a":"4111111111111","b":"[REDACTED]","c":"eyJ.a.b"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := process(t, w, tt.in)
			requireVerdict(t, res, abi.VerdictOK, "")
			assert.Equal(t, tt.want, string(res.Event))
		})
	}

	// Left untouched byte for byte: whitespace, escapes and number spellings
	// are not normalised when nothing is masked.
	for _, in := range []string{
		"{ \"a\" : \"caf\\u00e9 \\/ x\" ,\n\t\"n\" : [ 1 , -2.5e3 , 1E+2, true , null, false ] , \"o\":{ } , \"l\":[ ] }",
		`{"event_id":"0190a5b2-7c1d-7e3f-9a4b-5c6d7e8f9a0b","timestamp":"2026-11-27T09:00:04.000000000Z","ts":1714564800000,"ip":"10.1.4.4","request_id":"req-5c6d7e8f9a0b1c2d"}`,
		`{"quote":"\"Bearer\" is a word","bearer":"x","eyJ":"eyJhbGciOiJIUzI1NiJ9"}`,
	} {
		res := process(t, w, in)
		requireVerdict(t, res, abi.VerdictOK, "")
		assert.Equal(t, in, string(res.Event))
	}
}

// TestRedactMaskNeedsEscapes: a mask with characters JSON escapes is
// encoded wherever it is written.
func TestRedactMaskNeedsEscapes(t *testing.T) {
	w := worker(t, load(t, "redact", `{"fields":["ssn"],"mask":"<\"x\\y\">\u0001"}`))
	res := process(t, w, `{"ssn":1,"a":"card 4111111111111111 and Bearer abcdefgh12345678","b":"caf\u00e9 4111111111111111"}`)
	requireVerdict(t, res, abi.VerdictOK, "")
	assert.Equal(t, `{"ssn":"<\"x\\y\">\u0001","a":"card <\"x\\y\">\u0001 and Bearer <\"x\\y\">\u0001","b":"café <\"x\\y\">\u0001"}`, string(res.Event))
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
		{"bad escape in a long string", `{"a":"abcdefghijklmnopqrstuvwxyz\q"}`, "redact: the event is not valid JSON, so it cannot be redacted"},
		{"short unicode escape", `{"a":"abc\u12"}`, "redact: the event is not valid JSON, so it cannot be redacted"},
		{"control character in a long string", "{\"a\":\"abcdefghijklmnop\nqrstuvwxyz\"}", "redact: the event is not valid JSON, so it cannot be redacted"},
		{"control character in a key", "{\"pass\tword\":\"x\"}", "redact: the event is not valid JSON, so it cannot be redacted"},
		{"unterminated long string", `{"a":"abcdefghijklmnopqrstuvwxyz`, "redact: the event is not valid JSON, so it cannot be redacted"},
		{"unterminated masked value", `{"password":["abcdefghijklmnopqrstuvwxyz`, "redact: the event is not valid JSON, so it cannot be redacted"},
		{"missing colon", `{"password" "x"}`, "redact: the event is not valid JSON, so it cannot be redacted"},
		{"bad number", `{"a":-}`, "redact: the event is not valid JSON, so it cannot be redacted"},
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
