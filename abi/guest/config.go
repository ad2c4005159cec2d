package guest

import (
	"strconv"
)

// Value is the text of one JSON value of a plugin's configuration, checked
// to be valid JSON, without surrounding space: ParseConfig returns one, and
// Object and Array hand out its parts. Its methods decode it without
// encoding/json: that package (with reflect and fmt) makes a standard-Go
// plugin about 1.4 MB larger, which costs every process that loads the
// plugin compile time and memory (docs/performance.md).
//
// The decoding methods follow encoding/json: null leaves the destination
// unchanged, and a value of the wrong type is an error naming the field.
type Value []byte

// ParseConfig checks that b (a plugin's configuration, as InitFunc gets it)
// is one JSON value and returns it. Empty or blank text is the empty object.
func ParseConfig(b []byte) (Value, error) {
	s := scanner{b: b}
	s.space()
	if s.i == len(b) {
		return Value("{}"), nil
	}
	start := s.i
	if err := s.value(0); err != nil {
		return nil, err
	}
	end := s.i
	s.space()
	if s.i != len(b) {
		return nil, s.fail("after the top-level value")
	}
	return Value(b[start:end]), nil
}

// Kind names the value's JSON type: "object", "array", "string", "number",
// "boolean" or "null".
func (v Value) Kind() string {
	if len(v) == 0 {
		return "null"
	}
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// IsNull reports whether the value is null.
func (v Value) IsNull() bool { return v.Kind() == "null" }

// Object calls field for each member of the object v, in order. An error
// from field is returned with the member's name as its path (see
// ConfigError). Use UnknownField for a name the plugin does not know.
func (v Value) Object(field func(name string, v Value) error) error {
	if v.IsNull() {
		return nil
	}
	if v.Kind() != "object" {
		return v.typeError("object")
	}
	s := scanner{b: v, i: 1}
	for {
		s.space()
		if s.b[s.i] == '}' {
			return nil
		}
		if s.b[s.i] == ',' {
			s.i++
			s.space()
		}
		kstart := s.i
		_ = s.str()
		name, _ := Unquote(s.b[kstart:s.i])
		s.space()
		s.i++ // ':'
		s.space()
		vstart := s.i
		_ = s.value(0)
		if err := field(name, Value(s.b[vstart:s.i])); err != nil {
			return within(name, err)
		}
	}
}

// Array calls elem for each element of the array v, in order; an error
// from elem is returned with the element's index as its path.
func (v Value) Array(elem func(i int, v Value) error) error {
	if v.IsNull() {
		return nil
	}
	if v.Kind() != "array" {
		return v.typeError("array")
	}
	s := scanner{b: v, i: 1}
	for i := 0; ; i++ {
		s.space()
		if s.b[s.i] == ']' {
			return nil
		}
		if s.b[s.i] == ',' {
			s.i++
			s.space()
		}
		start := s.i
		_ = s.value(0)
		if err := elem(i, Value(s.b[start:s.i])); err != nil {
			return within("["+strconv.Itoa(i)+"]", err)
		}
	}
}

// StringTo stores the string v in dst.
func (v Value) StringTo(dst *string) error {
	if v.IsNull() {
		return nil
	}
	if v.Kind() != "string" {
		return v.typeError("string")
	}
	s, err := Unquote(v)
	if err != nil {
		return err
	}
	*dst = s
	return nil
}

// Int stores the integer v in dst; a fraction or an exponent is an error.
func (v Value) Int(dst *int) error {
	if v.IsNull() {
		return nil
	}
	if v.Kind() != "number" {
		return v.typeError("integer")
	}
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return &ConfigError{Msg: "cannot unmarshal number " + string(v) + " into an integer"}
	}
	*dst = n
	return nil
}

// Bool stores the boolean v in dst.
func (v Value) Bool(dst *bool) error {
	if v.IsNull() {
		return nil
	}
	if v.Kind() != "boolean" {
		return v.typeError("boolean")
	}
	*dst = v[0] == 't'
	return nil
}

// Strings stores the array of strings v in dst, replacing what it held.
func (v Value) Strings(dst *[]string) error {
	if v.IsNull() {
		return nil
	}
	out := []string{}
	err := v.Array(func(_ int, e Value) error {
		var s string // null is "", as encoding/json makes it
		if err := e.StringTo(&s); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return err
	}
	*dst = out
	return nil
}

// ConfigError is an error decoding a configuration: its text is
// "json: " + Path + ": " + Msg, or "json: " + Msg without a path.
type ConfigError struct {
	Path string // where: "rules[0].then"; "" for the whole configuration
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Path == "" {
		return "json: " + e.Msg
	}
	return "json: " + e.Path + ": " + e.Msg
}

// UnknownField is the error for a member name the plugin does not know, with
// encoding/json's text for DisallowUnknownFields: json: unknown field "name".
func UnknownField(name string) error {
	return &unknownField{name}
}

type unknownField struct{ name string }

func (e *unknownField) Error() string { return "json: unknown field " + strconv.Quote(e.name) }

// within puts err, from the member or element name, under that name.
func within(name string, err error) error {
	switch e := err.(type) {
	case *ConfigError:
		path := name
		if e.Path != "" {
			if e.Path[0] == '[' {
				path += e.Path
			} else {
				path += "." + e.Path
			}
		}
		return &ConfigError{Path: path, Msg: e.Msg}
	}
	return err
}

func (v Value) typeError(want string) error {
	return &ConfigError{Msg: "cannot unmarshal " + v.Kind() + " into " + article(want) + want}
}

func article(s string) string {
	switch s[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an "
	}
	return "a "
}

// maxDepth bounds the nesting of a configuration, as encoding/json does.
const maxDepth = 10000

// scanner checks JSON text (RFC 8259) and finds where its values end.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) fail(what string) error {
	if s.i >= len(s.b) {
		return &ConfigError{Msg: "unexpected end of JSON input"}
	}
	return &ConfigError{Msg: "invalid character " + strconv.QuoteRune(rune(s.b[s.i])) + " " + what}
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) value(depth int) error {
	if depth > maxDepth {
		return &ConfigError{Msg: "exceeded max depth"}
	}
	if s.i >= len(s.b) {
		return s.fail("")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		s.i++
		s.space()
		if s.i < len(s.b) && s.b[s.i] == '}' {
			s.i++
			return nil
		}
		for {
			s.space()
			if s.i >= len(s.b) || s.b[s.i] != '"' {
				return s.fail("looking for beginning of object key string")
			}
			if err := s.str(); err != nil {
				return err
			}
			s.space()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				return s.fail("after object key")
			}
			s.i++
			s.space()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.space()
			if s.i >= len(s.b) {
				return s.fail("")
			}
			switch s.b[s.i] {
			case ',':
				s.i++
				continue
			case '}':
				s.i++
				return nil
			}
			return s.fail("after object key:value pair")
		}
	case c == '[':
		s.i++
		s.space()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return nil
		}
		for {
			s.space()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.space()
			if s.i >= len(s.b) {
				return s.fail("")
			}
			switch s.b[s.i] {
			case ',':
				s.i++
				continue
			case ']':
				s.i++
				return nil
			}
			return s.fail("after array element")
		}
	case c == '"':
		return s.str()
	case c == '-' || ('0' <= c && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.fail("looking for beginning of value")
}

func (s *scanner) literal(word string) error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		for j := 0; j < len(word) && s.i < len(s.b) && s.b[s.i] == word[j]; j++ {
			s.i++
		}
		return s.fail("in literal " + word)
	}
	s.i += len(word)
	return nil
}

// str checks a string and its escapes; invalid UTF-8 is accepted, as
// encoding/json accepts it (and Unquote replaces it).
func (s *scanner) str() error {
	s.i++ // the opening quote
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return nil
		case c < 0x20:
			return s.fail("in string literal")
		case c == '\\':
			s.i++
			if s.i >= len(s.b) {
				return s.fail("")
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for range 4 {
					if s.i >= len(s.b) || !isHex(s.b[s.i]) {
						return s.fail("in \\u hexadecimal character escape")
					}
					s.i++
				}
			default:
				return s.fail("in string escape code")
			}
		default:
			s.i++
		}
	}
	return s.fail("")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *scanner) number() error {
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.digits() == 0:
		return s.fail("in numeric literal")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return s.fail("after decimal point in numeric literal")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return s.fail("in exponent of numeric literal")
		}
	}
	return nil
}
