// Command schema is an auditproc plugin that rejects events missing
// required fields or holding a field of the wrong type, so that they are
// dead-lettered with the reason at once instead of failing later plugins
// and being retried forever. See README.md for the configuration.
//
// It reads only the fields it checks, through the host's native field
// access, and never parses the event itself.
package main

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/auditproc/auditproc/abi/guest"
)

type config struct {
	Required []string            // required
	Types    map[string]string   // types
	Enums    map[string][]string // enums
}

// decodeConfig reads the configuration's JSON text into c; unknown keys are
// an error.
func decodeConfig(b []byte, c *config) error {
	v, err := guest.ParseConfig(b)
	if err != nil {
		return err
	}
	return v.Object(func(name string, v guest.Value) error {
		switch name {
		case "required":
			return v.Strings(&c.Required)
		case "types":
			return v.Object(func(path string, v guest.Value) error {
				if c.Types == nil {
					c.Types = map[string]string{}
				}
				k := c.Types[path]
				err := v.StringTo(&k)
				c.Types[path] = k
				return err
			})
		case "enums":
			return v.Object(func(path string, v guest.Value) error {
				if c.Enums == nil {
					c.Enums = map[string][]string{}
				}
				vals := c.Enums[path]
				err := v.Strings(&vals)
				c.Enums[path] = vals
				return err
			})
		}
		return guest.UnknownField(name)
	})
}

// defaultConfig is the audit event shape of docs/plugins.md.
var defaultConfig = config{
	Required: []string{"event_id", "timestamp", "actor", "action", "outcome"},
	Types: map[string]string{
		"event_id": "string", "timestamp": "timestamp", "actor": "string", "action": "string",
		"target": "string", "outcome": "string", "severity": "string", "source_ip": "string",
		"details": "object",
	},
}

var kinds = []string{"string", "number", "integer", "boolean", "object", "array", "timestamp"}

type check struct {
	path     string
	required bool
	kind     string   // "" for any
	enum     []string // nil for any
}

var checks []check

func parseConfig(b []byte) ([]check, error) {
	c := defaultConfig
	if len(bytes.TrimSpace(b)) > 0 && !bytes.Equal(bytes.TrimSpace(b), []byte("{}")) {
		c = config{}
		if err := decodeConfig(b, &c); err != nil {
			return nil, errors.New("schema: config: " + err.Error())
		}
	}
	byPath := map[string]*check{}
	get := func(path string) *check {
		if byPath[path] == nil {
			byPath[path] = &check{path: path}
		}
		return byPath[path]
	}
	for _, p := range c.Required {
		if p == "" {
			return nil, errors.New("schema: config: required: a field path is empty")
		}
		get(p).required = true
	}
	for p, k := range c.Types {
		if !slices.Contains(kinds, k) {
			return nil, errors.New("schema: config: types." + p + ": " + strconv.Quote(k) + " is not one of " + strings.Join(kinds, ", "))
		}
		get(p).kind = k
	}
	for p, vals := range c.Enums {
		if len(vals) == 0 {
			return nil, errors.New("schema: config: enums." + p + ": the list of allowed values is empty")
		}
		get(p).enum = vals
	}
	if len(byPath) == 0 {
		return nil, errors.New("schema: config: nothing to check: set required, types or enums")
	}
	var out []check
	for _, c := range byPath {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b check) int { return strings.Compare(a.path, b.path) })
	return out, nil
}

// kindOf names the JSON type of a value's text.
func kindOf(v []byte) string {
	switch v[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// problem returns what is wrong with the field c checks, or "".
func (c *check) problem(ev *guest.Event) string {
	v, err := ev.Get(c.path)
	if err != nil || kindOf(v) == "null" || bytes.Equal(v, []byte(`""`)) {
		if c.required {
			return "missing required field " + c.path
		}
		return ""
	}
	got := kindOf(v)
	switch c.kind {
	case "":
	case "integer":
		if got != "number" || bytes.ContainsAny(v, ".eE") {
			return "field " + c.path + " is " + describe(got, v) + ", want integer"
		}
	case "timestamp":
		if got != "string" {
			return "field " + c.path + " is " + got + ", want an RFC 3339 timestamp string"
		}
		s, _ := guest.Unquote(v)
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return "field " + c.path + " is not an RFC 3339 timestamp: " + s
		}
	default:
		if got != c.kind {
			return "field " + c.path + " is " + got + ", want " + c.kind
		}
	}
	if c.enum != nil {
		s, err := guest.Unquote(v)
		if err != nil || !slices.Contains(c.enum, s) {
			return "field " + c.path + " is " + string(v) + ", want one of " + strings.Join(c.enum, ", ")
		}
	}
	return ""
}

func describe(kind string, v []byte) string {
	if kind == "number" {
		return "a fraction"
	}
	return kind
}

func handle(ev *guest.Event) guest.Verdict {
	var problems []string
	for i := range checks {
		if p := checks[i].problem(ev); p != "" {
			problems = append(problems, p)
		}
	}
	if problems != nil {
		return guest.Reject("schema: " + strings.Join(problems, "; "))
	}
	return guest.OK
}

func init() {
	guest.Init(func(config []byte) error {
		var err error
		checks, err = parseConfig(config)
		return err
	})
	guest.Handle(handle)
}

func main() {}
