package audit

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
)

// replyError is a Redis error reply, as go-redis returns one.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// Replies that ran nothing because the server cannot serve now are
// ErrUnavailable (retry); a command Redis refused is not. A redirect that
// reached the caller (go-redis out of redirects while a slot moves) ran
// nothing.
func TestUnavailableReplies(t *testing.T) {
	for reply, want := range map[string]bool{
		"MOVED 1463 127.0.0.1:7001":                                         true,
		"ASK 1463 127.0.0.1:7002":                                           true,
		"TRYAGAIN Multiple keys request during rehashing of slot":           true,
		"CLUSTERDOWN The cluster is down":                                   true,
		"LOADING Redis is loading the dataset in memory":                    true,
		"WRONGTYPE Operation against a key holding the wrong kind of value": false,
		"ERR wrong number of arguments":                                     false,
	} {
		assert.Equal(t, want, isUnavailable(replyError(reply)), reply)
	}
	assert.True(t, isUnavailable(errors.New("dial tcp 127.0.0.1:1: connect: connection refused")))
}
