package host

import (
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// The ABI's field paths (abi/README.md): segments separated by '.', "\." a
// literal dot and "\\" a backslash; a segment of decimal digits indexes an
// array when the value there is an array. They are translated into gjson and
// sjson paths, escaping every character those treat specially.

// splitPath parses an ABI path. The empty path is the whole event (no
// segments); an empty segment, a trailing backslash or another escape is
// invalid.
func splitPath(p []byte) ([]string, bool) {
	if len(p) == 0 {
		return nil, true
	}
	var segs []string
	var cur []byte
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '\\':
			if i+1 == len(p) || (p[i+1] != '.' && p[i+1] != '\\') {
				return nil, false
			}
			i++
			cur = append(cur, p[i])
		case '.':
			if len(cur) == 0 {
				return nil, false
			}
			segs = append(segs, string(cur))
			cur = cur[:0]
		default:
			cur = append(cur, c)
		}
	}
	if len(cur) == 0 {
		return nil, false
	}
	return append(segs, string(cur)), true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// escapeSeg escapes every byte of a key that is not a letter, digit or '_'
// (gjson and sjson both read "\x" as the literal x).
func escapeSeg(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
}

// simplePath reports whether p is segments of letters, digits and '_'
// joined by single dots: the common path, which is its own gjson path
// (getPath of its segments gives it back unchanged), so event_get skips
// splitting and rebuilding it.
func simplePath(p []byte) bool {
	if len(p) == 0 || p[0] == '.' || p[len(p)-1] == '.' {
		return false
	}
	for i, c := range p {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case c == '.' && p[i-1] != '.':
		default:
			return false
		}
	}
	return true
}

// getPath is the gjson path of segs. gjson reads a digits segment as an
// index on an array and as a key on an object, as the ABI does.
func getPath(segs []string) string {
	var b strings.Builder
	for i, s := range segs {
		if i > 0 {
			b.WriteByte('.')
		}
		if allDigits(s) {
			b.WriteString(s)
		} else {
			escapeSeg(&b, s)
		}
	}
	return b.String()
}

// setPath is the sjson path of segs in doc. sjson would make an array for a
// missing digits segment and pad arrays with nulls; the ABI creates objects
// and allows an index up to the array's length (append), so digits are
// forced to keys (":N") except on an existing array. Descending into a
// scalar, or a key on an array, is invalid.
func setPath(doc []byte, segs []string, set bool) (string, bool) {
	var b strings.Builder
	parent := gjson.ParseBytes(doc)
	exists := true
	for i, s := range segs {
		if i > 0 {
			b.WriteByte('.')
		}
		digits := allDigits(s)
		switch {
		case exists && parent.IsArray():
			if !digits {
				return "", false
			}
			idx, err := strconv.Atoi(s)
			n := 0
			parent.ForEach(func(_, _ gjson.Result) bool { n++; return true })
			if err != nil || idx > n || (idx == n && !set) {
				return "", false
			}
			b.WriteString(strconv.Itoa(idx))
		case exists && !parent.IsObject():
			return "", false
		case digits:
			b.WriteByte(':')
			b.WriteString(s)
		default:
			escapeSeg(&b, s)
		}
		if exists {
			var g strings.Builder
			if digits {
				g.WriteString(s)
			} else {
				escapeSeg(&g, s)
			}
			parent = parent.Get(g.String())
			exists = parent.Exists()
		}
	}
	return b.String(), true
}
