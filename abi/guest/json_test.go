package guest_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi/guest"
)

func TestAppendQuote(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "tab\tnewline\nreturn\r",
		"\x00\x01\x1f control", "naïve ✓ 😀", "bad utf8 \xff\xfe end", "</script>&",
	} {
		t.Run(s, func(t *testing.T) {
			q := guest.AppendQuote([]byte("prefix:"), s)
			require.Equal(t, "prefix:", string(q[:7]))
			var back string
			require.NoError(t, json.Unmarshal(q[7:], &back), "%s", q[7:])
			want, _ := json.Marshal(s) // encoding/json also maps invalid UTF-8 to U+FFFD
			var wantBack string
			require.NoError(t, json.Unmarshal(want, &wantBack))
			assert.Equal(t, wantBack, back)
		})
	}
}

func TestUnquote(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{in: `""`, want: ""},
		{in: `"alice"`, want: "alice"},
		{in: `"a\"b\\c\/d"`, want: `a"b\c/d`},
		{in: `"\b\f\n\r\t"`, want: "\b\f\n\r\t"},
		{in: `"\u0041\u00e9\u2713"`, want: "Aé✓"},
		{in: `"\ud83d\ude00"`, want: "😀"},
		{in: `"\ud83d"`, want: "\uFFFD"},
		{in: `"\ud83dx"`, want: "\uFFFDx"},
		{in: `"\ude00\u0041"`, want: "\uFFFDA"},
		{in: `"\ud83d\u0041"`, want: "\uFFFDA"},
		// Found by FuzzUnquote: raw invalid UTF-8 becomes U+FFFD, as in encoding/json.
		{in: "\"\x9a\"", want: "\uFFFD"},
		{in: "\"a\xffb\\n\"", want: "a\uFFFDb\n"},
		{in: `"\x"`, err: true},
		{in: `"\u12"`, err: true},
		{in: `"\u12g4"`, err: true},
		{in: `"a"b"`, err: true},
		{in: "\"a\nb\"", err: true},
		{in: `"\"`, err: true},
		{in: `alice`, err: true},
		{in: `"`, err: true},
		{in: `42`, err: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := guest.Unquote([]byte(tc.in))
			if tc.err {
				require.ErrorIs(t, err, guest.ErrSyntax)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			var std string
			require.NoError(t, json.Unmarshal([]byte(tc.in), &std))
			assert.Equal(t, std, got, "encoding/json decodes it the same way")
		})
	}
}

func FuzzQuoteRoundTrip(f *testing.F) {
	for _, s := range []string{"", "a", `"\`, "\x00", "\xff", "😀"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := guest.AppendQuote(nil, s)
		got, err := guest.Unquote(q)
		require.NoError(t, err, "%q", q)
		var std string
		require.NoError(t, json.Unmarshal(q, &std), "%q", q)
		assert.Equal(t, std, got)
	})
}

func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`""`, `"\u00e9"`, `"\ud83d\ude00"`, `"\"`, `"\ud800\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := guest.Unquote(b)
		var std string
		stdErr := json.Unmarshal(b, &std)
		if err == nil {
			require.NoError(t, stdErr, "we accepted %q", b)
			assert.Equal(t, std, got)
		}
	})
}

func TestPath(t *testing.T) {
	assert.Equal(t, "", guest.Path())
	assert.Equal(t, "actor", guest.Path("actor"))
	assert.Equal(t, `details.user\.name`, guest.Path("details", "user.name"))
	assert.Equal(t, `a\\b.0`, guest.Path(`a\b`, "0"))
}

func TestVerdicts(t *testing.T) {
	assert.Equal(t, "ok", guest.OK.Code().String())
	assert.Equal(t, "", guest.OK.Message())
	v := guest.Reject("missing field actor")
	assert.Equal(t, "reject", v.Code().String())
	assert.Equal(t, "missing field actor", v.Message())
	assert.Equal(t, "drop", guest.Drop("x").Code().String())
	assert.Equal(t, "retry", guest.Retry("x").Code().String())
}
