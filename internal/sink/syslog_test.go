package sink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/sink"
	"github.com/auditproc/auditproc/internal/syslogtest"
)

// TestSyslogSinkRFC5424 sends over plain TCP (octet counting, RFC 6587) and
// TLS (RFC 5425) to a real rsyslog and checks what rsyslog's own parsers
// made of every message: a wrong frame length would cut or join messages, a
// malformed header or structured data would not parse into these fields.
func TestSyslogSinkRFC5424(t *testing.T) {
	srv := syslogtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	tcp, err := sink.NewSyslog("siem", sink.SyslogConfig{Address: srv.TCPAddr(), Hostname: "replica-1"}, nil)
	require.NoError(t, err)
	defer tcp.Close()
	tlsSink, err := sink.NewSyslog("siem-tls", sink.SyslogConfig{Address: srv.TLSAddr(), TLS: true, CAFile: srv.CAFile(),
		Hostname: "replica-1", Facility: "local4"}, nil)
	require.NoError(t, err)
	defer tlsSink.Close()

	mk := func(prefix string, n int) []sink.Item {
		out := make([]sink.Item, n)
		for i := range out {
			id := fmt.Sprintf("%s-%03d", prefix, i)
			out[i] = sink.Item{EventID: id, EntryID: fmt.Sprintf("1700000000000-%d", i), Stream: `au"dit]\s`, KeyID: "k1",
				// A newline, multi-byte text and a severity: octet counting
				// carries all of it in one message.
				Event: []byte(fmt.Sprintf("{\"event_id\":%q,\"timestamp\":\"2026-12-04T03:00:00.123456789Z\",\"severity\":\"warning\",\n\"actor\":\"zoë\",\"n\":%d}", id, i)),
			}
		}
		return out
	}
	want := map[string]sink.Item{}
	for _, w := range []struct {
		s     *sink.Syslog
		items []sink.Item
	}{{tcp, mk("tcp", 50)}, {tlsSink, mk("tls", 50)}} {
		require.NoError(t, w.s.Write(ctx, w.items))
		for _, it := range w.items {
			want[it.EventID] = it
		}
	}
	// The collector restarts (once it wrote what it received: a collector
	// that stops drops what it had not read yet): both sinks reconnect.
	_, err = srv.WaitMessages(len(want), 30*time.Second)
	require.NoError(t, err)
	require.NoError(t, srv.Restart())
	require.NoError(t, tcp.Write(ctx, mk("tcp-after", 5)))
	require.NoError(t, tlsSink.Write(ctx, mk("tls-after", 5)))
	for _, it := range append(mk("tcp-after", 5), mk("tls-after", 5)...) {
		want[it.EventID] = it
	}

	msgs, err := srv.WaitMessages(len(want), 30*time.Second)
	require.NoError(t, err)
	require.Len(t, msgs, len(want))
	seen := map[string]bool{}
	for _, m := range msgs {
		sd := m.SD["auditproc@32473"]
		require.NotNil(t, sd, "structured data parsed by rsyslog: %+v", m)
		id := sd["event_id"]
		it, ok := want[id]
		require.True(t, ok, "unexpected event id %q", id)
		assert.False(t, seen[id], "event %s twice", id)
		seen[id] = true
		assert.Equal(t, "1", m.Version)
		assert.Equal(t, "replica-1", m.Host)
		assert.Equal(t, "auditproc", m.App)
		assert.Equal(t, "audit", m.MsgID)
		assert.Equal(t, "warning", m.Severity)
		if id[:3] == "tls" {
			assert.Equal(t, "local4", m.Facility)
		} else {
			assert.Equal(t, "audit", m.Facility)
		}
		assert.Equal(t, "2026-12-04T03:00:00.123456Z", m.Time)
		assert.Equal(t, it.EntryID, sd["entry_id"])
		assert.Equal(t, it.Stream, sd["stream"], "escaped and unescaped")
		assert.Equal(t, "k1", sd["key_id"])
		assert.Equal(t, string(it.Event), m.Msg)
	}
}

func TestSyslogSinkCollectorDown(t *testing.T) {
	srv := syslogtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := sink.NewSyslog("siem", sink.SyslogConfig{Address: srv.TCPAddr(), Timeout: 2 * time.Second}, nil)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Write(ctx, items(1, "a")))
	srv.Stop()
	err = s.Write(ctx, items(1, "b"))
	require.Error(t, err, "a collector that is down is an error, not a silent loss")
	assert.False(t, sink.IsPermanent(err))
}

func TestSyslogConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  sink.SyslogConfig
		want string
	}{
		{"no address", sink.SyslogConfig{}, "must be host:port"},
		{"facility", sink.SyslogConfig{Address: "127.0.0.1:1", Facility: "audits"}, "not a syslog facility"},
		{"severity", sink.SyslogConfig{Address: "127.0.0.1:1", Severity: "loud"}, "not a syslog severity"},
		{"msg id space", sink.SyslogConfig{Address: "127.0.0.1:1", MsgID: "two words"}, "printable ASCII"},
		{"ca without tls", sink.SyslogConfig{Address: "127.0.0.1:1", CAFile: "/ca.pem"}, "need tls: true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
