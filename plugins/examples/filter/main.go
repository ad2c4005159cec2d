// Command filter is an auditproc plugin that drops or keeps events by rules
// on their fields (severity, actor, action or any other), so that noise
// such as health checks never reaches later plugins and sinks. See
// README.md for the configuration.
//
// It reads only the fields its rules name, through the host's native field
// access, and never parses the event itself.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/auditproc/auditproc/abi/guest"
)

// severities in increasing order; an event's severity is compared by its
// position here.
var severities = []string{"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}

type config struct {
	// MinSeverity drops events whose severity is below it (after the rules).
	MinSeverity string `json:"min_severity"`
	// SeverityField is where the severity is; default "severity".
	SeverityField string `json:"severity_field"`
	Rules         []rule `json:"rules"`
	// Default is the verdict when no rule matched: "keep" (default) or "drop".
	Default string `json:"default"`
}

type rule struct {
	// Match maps a field path to the patterns one of which its string value
	// must match; every field must match. A pattern's "*" matches any run
	// of characters.
	Match map[string][]string `json:"match"`
	// Then is "keep" or "drop".
	Then string `json:"then"`
}

// compiled form, built once per instance.
type filter struct {
	minSeverity   int // -1: none
	severityField string
	rules         []compiledRule
	dropByDefault bool
}

type compiledRule struct {
	fields   []string
	patterns [][]string
	drop     bool
	reason   string
}

var f filter

func parseConfig(b []byte) (filter, error) {
	var c config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return filter{}, fmt.Errorf("filter: config: %w", err)
	}
	out := filter{minSeverity: -1, severityField: "severity"}
	if c.SeverityField != "" {
		out.severityField = c.SeverityField
	}
	if c.MinSeverity != "" {
		out.minSeverity = slices.Index(severities, strings.ToLower(c.MinSeverity))
		if out.minSeverity < 0 {
			return filter{}, fmt.Errorf("filter: config: min_severity %q is not one of %s", c.MinSeverity, strings.Join(severities, ", "))
		}
	}
	switch c.Default {
	case "", "keep":
	case "drop":
		out.dropByDefault = true
	default:
		return filter{}, fmt.Errorf("filter: config: default %q: want keep or drop", c.Default)
	}
	for i, r := range c.Rules {
		cr := compiledRule{}
		switch r.Then {
		case "keep":
		case "drop":
			cr.drop = true
		default:
			return filter{}, fmt.Errorf("filter: config: rules[%d].then %q: want keep or drop", i, r.Then)
		}
		if len(r.Match) == 0 {
			return filter{}, fmt.Errorf("filter: config: rules[%d].match is empty: name at least one field", i)
		}
		var desc []string
		for _, field := range slices.Sorted(maps.Keys(r.Match)) {
			pats := r.Match[field]
			if field == "" || len(pats) == 0 {
				return filter{}, fmt.Errorf("filter: config: rules[%d].match: field %q needs a non-empty list of patterns", i, field)
			}
			cr.fields = append(cr.fields, field)
			cr.patterns = append(cr.patterns, pats)
			desc = append(desc, field+"="+strings.Join(pats, "|"))
		}
		cr.reason = fmt.Sprintf("filter: rules[%d] (%s)", i, strings.Join(desc, " "))
		out.rules = append(out.rules, cr)
	}
	return out, nil
}

// match reports whether s matches pattern, in which "*" matches any run of
// characters (including none) and everything else matches itself.
func match(pattern, s string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == s
	}
	if !strings.HasPrefix(s, pattern[:star]) {
		return false
	}
	s = s[star:]
	rest := pattern[star+1:]
	for {
		next := strings.IndexByte(rest, '*')
		if next < 0 {
			return len(s) >= len(rest) && strings.HasSuffix(s, rest)
		}
		i := strings.Index(s, rest[:next])
		if i < 0 {
			return false
		}
		s = s[i+next:]
		rest = rest[next+1:]
	}
}

func (f *filter) handle(ev *guest.Event) guest.Verdict {
	for _, r := range f.rules {
		if r.matches(ev) {
			if r.drop {
				return guest.Drop(r.reason)
			}
			return guest.OK
		}
	}
	if f.minSeverity >= 0 {
		// An event without a known severity is kept: a filter must not
		// silently drop what it does not understand.
		if s, ok := ev.GetString(f.severityField); ok {
			if level := slices.Index(severities, strings.ToLower(s)); level >= 0 && level < f.minSeverity {
				return guest.Drop("filter: severity " + s + " below min_severity " + severities[f.minSeverity])
			}
		}
	}
	if f.dropByDefault {
		return guest.Drop("filter: no rule kept it (default drop)")
	}
	return guest.OK
}

func (r *compiledRule) matches(ev *guest.Event) bool {
	for i, field := range r.fields {
		v, ok := ev.GetString(field)
		if !ok || !slices.ContainsFunc(r.patterns[i], func(p string) bool { return match(p, v) }) {
			return false
		}
	}
	return true
}

func init() {
	guest.Init(func(config []byte) error {
		var err error
		f, err = parseConfig(config)
		return err
	})
	guest.Handle(func(ev *guest.Event) guest.Verdict { return f.handle(ev) })
}

func main() {}
