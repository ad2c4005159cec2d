package streambus

import (
	"testing"
)

// TestParseStreamsReplyBigCounts: a count or length too large for the reply
// is an error, never a panic.
func TestParseStreamsReplyBigCounts(t *testing.T) {
	for name, reply := range map[string]string{
		"huge bulk length":   "%1\r\n$9223372036854775807\r\ns\r\n",
		"huge entries count": "%1\r\n$1\r\ns\r\n*9223372036854775807\r\n",
		"big entries count":  "%1\r\n$1\r\ns\r\n*2305843009213693952\r\n",
		"huge field count":   "%1\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*9223372036854775807\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			_, err := parseStreamsReply([]byte(reply), &scratch{})
			if err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// FuzzParseStreamsReply: no reply, however malformed, makes the parser
// panic; it returns entries or an error.
func FuzzParseStreamsReply(f *testing.F) {
	f.Add([]byte(resp3Reply))
	f.Add([]byte(resp2Reply))
	f.Add([]byte("%1\r\n$1\r\ns\r\n*2305843009213693952\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseStreamsReply(b, &scratch{})
	})
}
