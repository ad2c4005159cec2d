package host

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
)

// validJSONTests are documents with the answer validJSON must give; each
// fuzz crash is kept here as a case.
var validJSONTests = []struct {
	doc  string
	want bool
}{
	{`{}`, true}, {`[]`, true}, {` { "a" : [ 1 , -2.5e+3 , true , false , null , "s" ] } `, true},
	{`"\u00e9\n\"\\\/\b\f\r\t"`, true}, {`0`, true}, {`-0.0E-0`, true}, {"\"é€😀\"", true},
	{``, false}, {` `, false}, {`{`, false}, {`}`, false}, {`[1,]`, false}, {`{"a":1,}`, false},
	{`{"a"}`, false}, {`{"a":}`, false}, {`{1:2}`, false}, {`[1 2]`, false}, {`{} {}`, false},
	{`01`, false}, {`1.`, false}, {`.5`, false}, {`1e`, false}, {`-`, false}, {`+1`, false},
	{`tru`, false}, {`nul`, false}, {`"\x"`, false}, {`"\u12g4"`, false}, {`"\u12"`, false},
	{"\"\x01\"", false}, {"\"\xff\"", false}, {"\"\xed\xa0\x80\"", false}, {"\"\xc3\"", false},
	{`"abc`, false}, {`[}`, false}, {`{]`, false}, {`[[]]]`, false},
}

func TestValidJSON(t *testing.T) {
	for _, tt := range validJSONTests {
		assert.Equal(t, tt.want, validJSON([]byte(tt.doc), maxJSONDepth), "%q", tt.doc)
		assert.Equal(t, tt.want, json.Valid([]byte(tt.doc)) && utf8.ValidString(tt.doc), "encoding/json disagrees on %q", tt.doc)
	}
	deep := func(n int) []byte { return []byte(strings.Repeat("[", n) + strings.Repeat("]", n)) }
	assert.True(t, validJSON(deep(maxJSONDepth), maxJSONDepth))
	assert.False(t, validJSON(deep(maxJSONDepth+1), maxJSONDepth))
	assert.True(t, validJSON(deep(3), 3))
	assert.False(t, validJSON(deep(3), 2))
	// A million levels cost a scan, not a recursion.
	assert.False(t, validJSON(deep(1<<20), maxJSONDepth))
}

func TestValidObject(t *testing.T) {
	assert.True(t, validObject([]byte(" \n{\"a\":1}")))
	assert.False(t, validObject([]byte(`[1]`)))
	assert.False(t, validObject([]byte(`"{}"`)))
	assert.False(t, validObject(nil))
}

// FuzzValidJSON: validJSON agrees with encoding/json (whose depth limit is
// also 10,000) plus a UTF-8 check, on any input.
func FuzzValidJSON(f *testing.F) {
	for _, tt := range validJSONTests {
		f.Add([]byte(tt.doc))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := json.Valid(b) && utf8.Valid(b)
		if got := validJSON(b, maxJSONDepth); got != want {
			t.Fatalf("validJSON(%q) = %v, encoding/json and utf8 say %v", b, got, want)
		}
	})
}

func TestTruncateUTF8(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"}, {"abc", 2, "ab"}, {"aé", 2, "a"}, {"aé", 3, "aé"},
		{"a€", 2, "a"}, {"a€", 3, "a"}, {"a😀", 4, "a"}, {"a😀b", 5, "a😀"},
		{"\x80\x80\x80\x80\x80", 2, "\x80\x80"}, // no character to keep whole
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, string(truncateUTF8([]byte(tt.in), tt.n)), "%q %d", tt.in, tt.n)
	}
}
