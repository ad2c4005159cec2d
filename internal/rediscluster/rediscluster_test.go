package rediscluster

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestParseNodes(t *testing.T) {
	// CLUSTER NODES of a 2-master cluster with a replica, a slot being
	// migrated and a failed node.
	out := `07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922 [5460->-e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 16383
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 connected
`
	lines := parseNodes(out)
	if !assert.Len(t, lines, 4) {
		return
	}
	assert.Equal(t, nodeLine{id: "07c37dfeb235213a872192d90877d0cd55635b91", masterID: "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca"}, lines[0])
	assert.True(t, lines[1].master)
	assert.Equal(t, [][2]int{{5461, 10922}}, lines[1].slots, "a slot in migration is not counted")
	assert.Equal(t, [][2]int{{0, 5460}, {16383, 16383}}, lines[2].slots)
	assert.True(t, lines[2].serves(16383))
	assert.True(t, lines[2].serves(0))
	assert.False(t, lines[2].serves(5461))
	assert.True(t, lines[3].failed)
	assert.Empty(t, parseNodes(""))
}

// TestFreePortNeverRepeats: a port handed out is not handed out again by
// the same process, even before anything binds it (a node's client and bus
// ports are both taken before it starts). 4,000 ports are a third of the
// range, so a random pick repeats in nearly every run without the record.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 4000 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		assert.False(t, seen[p], "port %d handed out twice", p)
		assert.True(t, p >= freePortLow && p < freePortHigh, "port %d outside [%d, %d)", p, freePortLow, freePortHigh)
		seen[p] = true
	}
}
