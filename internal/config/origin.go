package config

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	goccy "github.com/goccy/go-yaml"
	goccyparser "github.com/goccy/go-yaml/parser"
	yamlv3 "go.yaml.in/yaml/v3"
)

// Origin says where a configuration value came from: a line of the file, an
// AUDITPROC_… variable, a command-line flag, or the default.
type Origin struct {
	File string // the YAML file, with Line
	Line int
	Env  string // the environment variable
	Flag string // the flag, without dashes
}

// String is "plugins.yaml:23", "AUDITPROC_CONSUMER_BLOCK", "--workers" or
// "default".
func (o Origin) String() string {
	switch {
	case o.Flag != "":
		return "--" + o.Flag
	case o.Env != "":
		return o.Env
	case o.File != "" && o.Line > 0:
		return o.File + ":" + strconv.Itoa(o.Line)
	case o.File != "":
		return o.File
	default:
		return "default"
	}
}

// Origins maps dotted keys ("consumer.block", "plugins[1].deadline") to where
// their value came from. Keys that nothing set are absent.
type Origins map[string]Origin

// Of is where key's value came from: the key itself, else the nearest
// enclosing key that was set ("plugins[1]" for an unset
// "plugins[1].deadline"), else the default.
func (o Origins) Of(key string) Origin {
	for k := key; k != ""; k = parentKey(k) {
		if org, ok := o[k]; ok {
			return org
		}
	}
	return Origin{}
}

// Keys returns the keys with an origin, sorted.
func (o Origins) Keys() []string {
	out := make([]string, 0, len(o))
	for k := range o {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func parentKey(k string) string {
	i := strings.LastIndexAny(k, ".[")
	if i <= 0 {
		return ""
	}
	return k[:i]
}

// fileLines records the line of every key of a YAML document, by dotted path
// with [i] for list items.
func fileLines(file string, data []byte, into Origins) {
	var doc yamlv3.Node
	if yamlv3.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return
	}
	var walk func(prefix string, n *yamlv3.Node)
	walk = func(prefix string, n *yamlv3.Node) {
		switch n.Kind {
		case yamlv3.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				key := k.Value
				if prefix != "" {
					key = prefix + "." + key
				}
				into[key] = Origin{File: file, Line: k.Line}
				walk(key, v)
			}
		case yamlv3.SequenceNode:
			for i, item := range n.Content {
				key := fmt.Sprintf("%s[%d]", prefix, i)
				into[key] = Origin{File: file, Line: item.Line}
				walk(key, item)
			}
		case yamlv3.AliasNode:
			if n.Alias != nil {
				walk(prefix, n.Alias)
			}
		}
	}
	walk("", doc.Content[0])
}

// syntaxError reports a YAML file that does not parse at the line and
// column of the problem. go.yaml.in/yaml/v3 numbers some parser errors from
// the start of the enclosing block, or from zero, so the position comes from
// goccy/go-yaml's parser, which keeps each token's position; its message is
// used as well when it sees the problem too.
func syntaxError(file string, data []byte, err error) error {
	_, perr := goccyparser.ParseBytes(data, 0)
	var se *goccy.SyntaxError
	if errors.As(perr, &se) && se.Token != nil && se.Token.Position != nil {
		return &FieldError{
			Origin: fmt.Sprintf("%s:%d:%d", file, se.Token.Position.Line, se.Token.Position.Column),
			Msg:    "not valid YAML: " + se.Message,
		}
	}
	return &FieldError{Origin: file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
}
