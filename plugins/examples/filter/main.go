// Command filter is an auditproc plugin that drops or keeps events by rules
// on their fields (severity, actor, action or any other), so that noise
// such as health checks never reaches later plugins and sinks. See
// README.md for the configuration.
//
// It reads only the fields its rules name, through the host's native field
// access, and never parses the event itself.
package main

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/auditproc/auditproc/abi/guest"
)

// severities in increasing order; an event's severity is compared by its
// position here.
var severities = []string{"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}

type config struct {
	// MinSeverity drops events whose severity is below it (after the rules).
	MinSeverity string // min_severity
	// SeverityField is where the severity is; default "severity".
	SeverityField string // severity_field
	Rules         []rule // rules
	// Default is the verdict when no rule matched: "keep" (default) or "drop".
	Default string // default
}

type rule struct {
	// Match maps a field path to the patterns one of which its string value
	// must match; every field must match. A pattern's "*" matches any run
	// of characters.
	Match map[string][]string // match
	// Then is "keep" or "drop".
	Then string // then
}

// decodeConfig reads the configuration's JSON text; unknown keys are an
// error.
func decodeConfig(b []byte) (config, error) {
	var c config
	v, err := guest.ParseConfig(b)
	if err != nil {
		return c, err
	}
	err = v.Object(func(name string, v guest.Value) error {
		switch name {
		case "min_severity":
			return v.StringTo(&c.MinSeverity)
		case "severity_field":
			return v.StringTo(&c.SeverityField)
		case "default":
			return v.StringTo(&c.Default)
		case "rules":
			c.Rules = nil
			return v.Array(func(_ int, v guest.Value) error {
				var r rule
				err := v.Object(func(name string, v guest.Value) error {
					switch name {
					case "then":
						return v.StringTo(&r.Then)
					case "match":
						return v.Object(func(field string, v guest.Value) error {
							if r.Match == nil {
								r.Match = map[string][]string{}
							}
							pats := r.Match[field]
							err := v.Strings(&pats)
							r.Match[field] = pats
							return err
						})
					}
					return guest.UnknownField(name)
				})
				c.Rules = append(c.Rules, r)
				return err
			})
		}
		return guest.UnknownField(name)
	})
	return c, err
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
	c, err := decodeConfig(b)
	if err != nil {
		return filter{}, errors.New("filter: config: " + err.Error())
	}
	out := filter{minSeverity: -1, severityField: "severity"}
	if c.SeverityField != "" {
		out.severityField = c.SeverityField
	}
	if c.MinSeverity != "" {
		out.minSeverity = slices.Index(severities, strings.ToLower(c.MinSeverity))
		if out.minSeverity < 0 {
			return filter{}, errors.New("filter: config: min_severity " + strconv.Quote(c.MinSeverity) + " is not one of " + strings.Join(severities, ", "))
		}
	}
	switch c.Default {
	case "", "keep":
	case "drop":
		out.dropByDefault = true
	default:
		return filter{}, errors.New("filter: config: default " + strconv.Quote(c.Default) + ": want keep or drop")
	}
	for i, r := range c.Rules {
		at := "filter: config: rules[" + strconv.Itoa(i) + "]"
		cr := compiledRule{}
		switch r.Then {
		case "keep":
		case "drop":
			cr.drop = true
		default:
			return filter{}, errors.New(at + ".then " + strconv.Quote(r.Then) + ": want keep or drop")
		}
		if len(r.Match) == 0 {
			return filter{}, errors.New(at + ".match is empty: name at least one field")
		}
		var desc []string
		fields := make([]string, 0, len(r.Match))
		for field := range r.Match {
			fields = append(fields, field)
		}
		slices.Sort(fields)
		for _, field := range fields {
			pats := r.Match[field]
			if field == "" || len(pats) == 0 {
				return filter{}, errors.New(at + ".match: field " + strconv.Quote(field) + " needs a non-empty list of patterns")
			}
			cr.fields = append(cr.fields, field)
			cr.patterns = append(cr.patterns, pats)
			desc = append(desc, field+"="+strings.Join(pats, "|"))
		}
		cr.reason = "filter: rules[" + strconv.Itoa(i) + "] (" + strings.Join(desc, " ") + ")"
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
