package streambus

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// resp3Reply is an XREADGROUP reply as Redis 7 sends it over RESP3: one
// stream, an entry with two fields and an entry deleted while pending.
const resp3Reply = "%1\r\n$1\r\ns\r\n*2\r\n" +
	"*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\nv\r\n$1\r\n1\r\n$3\r\nkid\r\n$2\r\nk1\r\n" +
	"*2\r\n$3\r\n2-0\r\n_\r\n"

// resp2Reply is the same over RESP2: an array of [name, entries] pairs and
// "*-1" for the deleted entry.
const resp2Reply = "*1\r\n*2\r\n$1\r\ns\r\n*2\r\n" +
	"*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\nv\r\n$1\r\n1\r\n$3\r\nkid\r\n$2\r\nk1\r\n" +
	"*2\r\n$3\r\n2-0\r\n*-1\r\n"

func TestParseStreamsReply(t *testing.T) {
	for name, reply := range map[string]string{"resp3": resp3Reply, "resp2": resp2Reply} {
		t.Run(name, func(t *testing.T) {
			raw := []byte(reply)
			entries, err := parseStreamsReply(raw, &scratch{})
			require.NoError(t, err)
			require.Equal(t, []rawEntry{
				{id: "1-0", fields: []string{"v", "1", "kid", "k1"}},
				{id: "2-0", deleted: true},
			}, entries)
			// Ids are copies, kept apart from the reply; fields are views.
			for i := range raw {
				raw[i] = 'x'
			}
			assert.Equal(t, "1-0", entries[0].id)
			assert.Equal(t, "2-0", entries[1].id)
			assert.Equal(t, "x", entries[0].fields[0])
		})
	}
	for name, reply := range map[string]string{"resp3": "_\r\n", "resp2": "*-1\r\n", "no streams": "*0\r\n"} {
		t.Run("nothing to read, "+name, func(t *testing.T) {
			entries, err := parseStreamsReply([]byte(reply), &scratch{})
			require.NoError(t, err)
			assert.Empty(t, entries)
		})
	}
}

func TestParseStreamsReplyErrorReply(t *testing.T) {
	_, err := parseStreamsReply([]byte("-NOGROUP No such key 's' or consumer group 'g'\r\n"), &scratch{})
	require.Error(t, err)
	assert.True(t, redis.HasErrorPrefix(err, "NOGROUP"), "an error reply is a redis.Error: %v", err)
	assert.EqualError(t, err, "NOGROUP No such key 's' or consumer group 'g'")
}

// TestParseStreamsReplyMalformed: anything but the RESP shape of a stream
// read is an error, never a panic nor a partial batch.
func TestParseStreamsReplyMalformed(t *testing.T) {
	entry := "*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nv\r\n$1\r\n1\r\n"
	for name, reply := range map[string]string{
		"empty":                   "",
		"no line end":             "*1",
		"empty line":              "\r\n",
		"bad count":               "*x\r\n",
		"count below -1":          "*-2\r\n",
		"status instead":          "+OK\r\n",
		"integer instead":         ":5\r\n",
		"stream name missing":     "%1\r\n",
		"null with trailing data": "_\r\n+OK\r\n",
		"resp2 pair not an array": "*1\r\n$1\r\ns\r\n",
		"resp2 pair of three":     "*1\r\n*3\r\n",
		"resp2 pair truncated":    "*1\r\n",
		"stream name not bulk":    "%1\r\n:1\r\n",
		"stream name null":        "%1\r\n$-1\r\n",
		"stream name truncated":   "%1\r\n$5\r\ns\r\n",
		"stream name no crlf":     "%1\r\n$1\r\nsXX",
		"entries not an array":    "%1\r\n$1\r\ns\r\n$1\r\nx\r\n",
		"entries null":            "%1\r\n$1\r\ns\r\n*-1\r\n",
		"entries truncated":       "%1\r\n$1\r\ns\r\n",
		"entry not a pair":        "%1\r\n$1\r\ns\r\n*1\r\n*3\r\n",
		"entry id not bulk":       "%1\r\n$1\r\ns\r\n*1\r\n*2\r\n:1\r\n",
		"entry fields missing":    "%1\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n",
		"entry fields not array":  "%1\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n:4\r\n",
		"field not bulk":          "%1\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n:1\r\n:2\r\n",
		"fewer entries than said": "%1\r\n$1\r\ns\r\n*2\r\n" + entry,
		"trailing bytes":          "%1\r\n$1\r\ns\r\n*1\r\n" + entry + "+OK\r\n",
		"error inside":            "%1\r\n$1\r\ns\r\n*1\r\n-ERR inside\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			entries, err := parseStreamsReply([]byte(reply), &scratch{})
			require.Error(t, err)
			assert.Nil(t, entries)
			var re replyError
			if strings.HasPrefix(name, "error") {
				require.True(t, errors.As(err, &re))
				return
			}
			require.ErrorIs(t, err, errReply)
		})
	}
}

func TestParseAutoClaimAndEntriesReplies(t *testing.T) {
	reply := "*3\r\n$3\r\n0-0\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\nv\r\n$1\r\n1\r\n$1\r\nv\r\n$1\r\n2\r\n*2\r\n$3\r\n2-0\r\n*-1\r\n*1\r\n$3\r\n3-0\r\n"
	cursor, entries, deleted, err := parseAutoClaimReply([]byte(reply), &scratch{})
	require.NoError(t, err)
	assert.Equal(t, "0-0", cursor)
	assert.Equal(t, []rawEntry{
		{id: "1-0", fields: []string{"v", "1", "v", "2"}},
		{id: "2-0", deleted: true},
	}, entries, "fields as stored, a repeated name kept; a null is a deleted entry")
	assert.Equal(t, []string{"3-0"}, deleted)

	entries, err = parseEntriesReply([]byte("*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nv\r\n$1\r\n1\r\n"), &scratch{})
	require.NoError(t, err)
	assert.Equal(t, []rawEntry{{id: "1-0", fields: []string{"v", "1"}}}, entries)

	for _, bad := range []string{"*1\r\n$3\r\n0-0\r\n", "*3\r\n$3\r\n0-0\r\n*0\r\n*99\r\n", ":1\r\n"} {
		_, _, _, err := parseAutoClaimReply([]byte(bad), &scratch{})
		assert.ErrorIs(t, err, errReply, "%q", bad)
	}
}

func TestReplyBuffer(t *testing.T) {
	var w replyBuffer
	_, _ = w.Write([]byte("$2000\r\n"))
	n, err := io.CopyN(&w, strings.NewReader(strings.Repeat("x", 3000)), 2000) // go-redis's way: ReadFrom
	require.NoError(t, err)
	assert.EqualValues(t, 2000, n)
	assert.Equal(t, "$2000\r\n"+strings.Repeat("x", 2000), string(w.b), "grown as needed from no capacity")

	_, err = w.ReadFrom(iotest.ErrReader(errors.New("connection reset")))
	require.EqualError(t, err, "connection reset")
}
