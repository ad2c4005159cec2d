// Command normalize is an auditproc plugin that brings events from older or
// foreign producers to the audit event shape of docs/plugins.md before the
// plugins after it look at them: it renames fields, lowercases enumerated
// values, fills in defaults and removes fields. See README.md.
//
// Every change is one host call on one field (event_get, event_set,
// event_delete); the event is never parsed inside the plugin.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/auditproc/auditproc/abi/guest"
)

type config struct {
	Rename    map[string]string          `json:"rename"`
	Lowercase []string                   `json:"lowercase"`
	Defaults  map[string]json.RawMessage `json:"defaults"`
	Remove    []string                   `json:"remove"`
}

// defaultConfig maps the common legacy names onto the audit event shape.
var defaultConfig = config{
	Rename:    map[string]string{"user": "actor", "ip": "source_ip", "event_type": "action"},
	Lowercase: []string{"outcome", "severity", "action"},
}

type rename struct{ from, to string }

type def struct {
	path  string
	value []byte
}

type normalizer struct {
	renames   []rename
	lowercase []string
	defaults  []def
	remove    []string
}

var n normalizer

func parseConfig(b []byte) (normalizer, error) {
	c := defaultConfig
	if t := bytes.TrimSpace(b); len(t) > 0 && !bytes.Equal(t, []byte("{}")) {
		c = config{}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return normalizer{}, fmt.Errorf("normalize: config: %w", err)
		}
	}
	var out normalizer
	for _, from := range slices.Sorted(maps.Keys(c.Rename)) {
		to := c.Rename[from]
		if from == "" || to == "" || from == to {
			return normalizer{}, fmt.Errorf("normalize: config: rename %q to %q: want two different, non-empty paths", from, to)
		}
		out.renames = append(out.renames, rename{from, to})
	}
	out.lowercase = c.Lowercase
	for _, p := range slices.Sorted(maps.Keys(c.Defaults)) {
		if !json.Valid(c.Defaults[p]) {
			return normalizer{}, fmt.Errorf("normalize: config: defaults.%s is not a JSON value", p)
		}
		out.defaults = append(out.defaults, def{p, []byte(c.Defaults[p])})
	}
	out.remove = c.Remove
	if slices.Contains(out.lowercase, "") || slices.Contains(out.remove, "") {
		return normalizer{}, errors.New("normalize: config: a path in lowercase or remove is empty")
	}
	return out, nil
}

func (n *normalizer) handle(ev *guest.Event) guest.Verdict {
	for _, r := range n.renames {
		v, err := ev.Get(r.from)
		if errors.Is(err, guest.ErrNotFound) {
			continue
		}
		if err != nil {
			return guest.Reject("normalize: read " + r.from + ": " + err.Error())
		}
		// A producer that already sends the new name wins.
		if !ev.Has(r.to) {
			if err := ev.Set(r.to, v); err != nil {
				return guest.Reject("normalize: rename " + r.from + " to " + r.to + ": " + err.Error())
			}
		}
		if err := ev.Delete(r.from); err != nil {
			return guest.Reject("normalize: remove " + r.from + ": " + err.Error())
		}
	}
	for _, p := range n.lowercase {
		s, ok := ev.GetString(p)
		if !ok {
			continue
		}
		if lower := strings.ToLower(s); lower != s {
			if err := ev.SetString(p, lower); err != nil {
				return guest.Reject("normalize: lowercase " + p + ": " + err.Error())
			}
		}
	}
	for _, d := range n.defaults {
		if !ev.Has(d.path) {
			if err := ev.Set(d.path, d.value); err != nil {
				return guest.Reject("normalize: default " + d.path + ": " + err.Error())
			}
		}
	}
	for _, p := range n.remove {
		if err := ev.Delete(p); err != nil && !errors.Is(err, guest.ErrNotFound) {
			return guest.Reject("normalize: remove " + p + ": " + err.Error())
		}
	}
	return guest.OK
}

func init() {
	guest.Init(func(config []byte) error {
		var err error
		n, err = parseConfig(config)
		return err
	})
	guest.Handle(func(ev *guest.Event) guest.Verdict { return n.handle(ev) })
}

func main() {}
