package shard

import (
	"fmt"
	"testing"
)

func TestKey(t *testing.T) {
	for _, c := range []struct {
		name string
		k    int
		want string
	}{
		{"audit:stream", 0, "audit:stream"},
		{"audit:stream", 1, "audit:stream:1"},
		{"{audit}:stream", 0, "{audit}:stream"},
		{"{audit}:stream", 2, "{audit:2}:stream"},
		{"x{a}y{b}", 3, "x{a:3}y{b}"},
		{"{}:stream", 1, "{}:stream:1"},
		{"{audit:stream", 4, "{audit:stream:4"},
	} {
		if got := Key(c.name, c.k); got != c.want {
			t.Errorf("Key(%q, %d) = %q, want %q", c.name, c.k, got, c.want)
		}
	}
}

// The shard of a keyed event is fixed by these vectors: the Python
// producer example (zlib.crc32(value.encode()) % n) must agree with them.
func TestOfIsStable(t *testing.T) {
	for _, c := range []struct {
		event string
		n     int
		want  int
	}{
		{`{"actor":"alice"}`, 3, 2},
		{`{"actor":"bob","x":1}`, 3, 2},
		{`{"x":{"actor":"no"},"actor":"carol"}`, 4, 3},
		{`{"actor":"al\u0069ce"}`, 3, 2}, // a string counts by its decoded text
		{`{"actor":42}`, 5, 3},
	} {
		if got := Of([]byte(c.event), "actor", c.n, nil); got != c.want {
			t.Errorf("Of(%s, %d) = %d, want %d", c.event, c.n, got, c.want)
		}
	}
}

func TestOfSpreadsUnkeyed(t *testing.T) {
	var s Spread
	counts := make([]int, 3)
	for i := range 300 {
		ev := `{"n":1}`
		if i%2 == 0 {
			ev = `{"actor":null}`
		}
		counts[Of([]byte(ev), "actor", 3, &s)]++
	}
	if fmt.Sprint(counts) != "[100 100 100]" {
		t.Fatalf("unkeyed events per shard %v, want 100 each", counts)
	}
	same := Of([]byte(`{"actor":"alice"}`), "actor", 3, &s)
	for range 10 {
		if got := Of([]byte(`{"actor":"alice"}`), "actor", 3, &s); got != same {
			t.Fatalf("one key went to shards %d and %d", same, got)
		}
	}
}
