package guest_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/abi/guest"
)

func TestParseConfigValidity(t *testing.T) {
	for _, in := range []string{
		`{}`, ` { } `, `[]`, `"s"`, `0`, `-0`, `12`, `-1.5e+3`, `1E9`, `0.25`, `true`, `false`, `null`,
		`{"a":[1,2,{"b":null}],"c":"\u00e9\n\"","d":{}}`, "{\"bad utf8\":\"\xff\"}", `[[[[]]]]`,
		`{"a":1,}`, `{"a" 1}`, `{a:1}`, `[1,]`, `[1 2]`, `01`, `1.`, `.5`, `-`, `1e`, `+1`, `tru`, `nul`, `"\x"`,
		`"\u12"`, "\"tab\there\"", `{"a":1}}`, `{"a":1} x`, `{`, `[`, `"open`, `{"a":`, `{"a"}`, `NaN`,
	} {
		t.Run(in, func(t *testing.T) {
			v, err := guest.ParseConfig([]byte(in))
			if json.Valid([]byte(in)) {
				require.NoError(t, err)
				assert.Equal(t, strings.TrimSpace(in), string(v))
			} else {
				require.Error(t, err)
				assert.True(t, strings.HasPrefix(err.Error(), "json: "), err.Error())
			}
		})
	}
	for _, blank := range []string{"", " \n\t"} {
		v, err := guest.ParseConfig([]byte(blank))
		require.NoError(t, err)
		assert.Equal(t, "{}", string(v))
	}
	_, err := guest.ParseConfig([]byte(strings.Repeat("[", 20000) + strings.Repeat("]", 20000)))
	assert.ErrorContains(t, err, "exceeded max depth")
}

type testRule struct {
	match map[string][]string
	then  string
}

type testConfig struct {
	name   string
	count  int
	on     bool
	tags   []string
	rules  []testRule
	nested struct{ level string }
}

func decodeTestConfig(b []byte) (testConfig, error) {
	c := testConfig{name: "default", count: 7, tags: []string{"x"}}
	v, err := guest.ParseConfig(b)
	if err != nil {
		return c, err
	}
	err = v.Object(func(name string, v guest.Value) error {
		switch name {
		case "name":
			return v.StringTo(&c.name)
		case "count":
			return v.Int(&c.count)
		case "on":
			return v.Bool(&c.on)
		case "tags":
			return v.Strings(&c.tags)
		case "nested":
			return v.Object(func(name string, v guest.Value) error {
				if name == "level" {
					return v.StringTo(&c.nested.level)
				}
				return guest.UnknownField(name)
			})
		case "rules":
			c.rules = nil
			return v.Array(func(_ int, v guest.Value) error {
				r := testRule{match: map[string][]string{}}
				err := v.Object(func(name string, v guest.Value) error {
					switch name {
					case "then":
						return v.StringTo(&r.then)
					case "match":
						return v.Object(func(field string, v guest.Value) error {
							var pats []string
							err := v.Strings(&pats)
							r.match[field] = pats
							return err
						})
					}
					return guest.UnknownField(name)
				})
				c.rules = append(c.rules, r)
				return err
			})
		}
		return guest.UnknownField(name)
	})
	return c, err
}

func TestValueDecode(t *testing.T) {
	c, err := decodeTestConfig([]byte(`{
		"name": "caf\u00e9 \"x\"", "count": -3, "on": true, "tags": ["a", null, "c"],
		"nested": {"level": "deep"},
		"rules": [{"match": {"action": ["health.*", "heartbeat"]}, "then": "drop"}, {"then": "keep"}]
	}`))
	require.NoError(t, err)
	assert.Equal(t, `café "x"`, c.name)
	assert.Equal(t, -3, c.count)
	assert.True(t, c.on)
	assert.Equal(t, []string{"a", "", "c"}, c.tags)
	assert.Equal(t, "deep", c.nested.level)
	require.Len(t, c.rules, 2)
	assert.Equal(t, map[string][]string{"action": {"health.*", "heartbeat"}}, c.rules[0].match)
	assert.Equal(t, "drop", c.rules[0].then)
	assert.Equal(t, "keep", c.rules[1].then)

	// null leaves a field as it was, as encoding/json does.
	c, err = decodeTestConfig([]byte(`{"name":null,"count":null,"tags":null,"rules":null}`))
	require.NoError(t, err)
	assert.Equal(t, "default", c.name)
	assert.Equal(t, 7, c.count)
	assert.Equal(t, []string{"x"}, c.tags)
	c, err = decodeTestConfig([]byte(`{"tags":[]}`))
	require.NoError(t, err)
	assert.Equal(t, []string{}, c.tags)

	for _, tt := range []struct{ in, msg string }{
		{`{"nmae":"x"}`, `json: unknown field "nmae"`},
		{`{"nested":{"levl":"x"}}`, `json: unknown field "levl"`},
		{`{"name":3}`, `json: name: cannot unmarshal number into a string`},
		{`{"count":"3"}`, `json: count: cannot unmarshal string into an integer`},
		{`{"count":1.5}`, `json: count: cannot unmarshal number 1.5 into an integer`},
		{`{"count":1e3}`, `json: count: cannot unmarshal number 1e3 into an integer`},
		{`{"on":"yes"}`, `json: on: cannot unmarshal string into a boolean`},
		{`{"tags":"a"}`, `json: tags: cannot unmarshal string into an array`},
		{`{"tags":["a",2]}`, `json: tags[1]: cannot unmarshal number into a string`},
		{`{"rules":[{"match":{"actor":[1]}}]}`, `json: rules[0].match.actor[0]: cannot unmarshal number into a string`},
		{`{"rules":{}}`, `json: rules: cannot unmarshal object into an array`},
		{`[]`, `json: cannot unmarshal array into an object`},
		{`{"name":"x"`, `json: unexpected end of JSON input`},
	} {
		t.Run(tt.in, func(t *testing.T) {
			_, err := decodeTestConfig([]byte(tt.in))
			require.Error(t, err)
			assert.Equal(t, tt.msg, err.Error())
		})
	}
}
