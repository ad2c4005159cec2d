package host

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestSimplePath: a path simplePath accepts is its own gjson path, exactly
// what splitting and rebuilding it gives; the others take that way.
func TestSimplePath(t *testing.T) {
	for _, p := range []string{"action", "actor.id", "a_b.C9.0", "items.3.name", "x"} {
		assert.True(t, simplePath([]byte(p)), p)
		segs, ok := splitPath([]byte(p))
		assert.True(t, ok, p)
		assert.Equal(t, p, getPath(segs), p)
	}
	for _, p := range []string{"", ".a", "a.", "a..b", `a\.b`, "a-b", "a b", "a*", "a?b", "a|b", "#", "@this", "é"} {
		assert.False(t, simplePath([]byte(p)), p)
	}
}
