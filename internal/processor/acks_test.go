package processor_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/processor"
	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/streambus"
)

func TestMain(m *testing.M) { redistest.Main(m) }

type ackFixture struct {
	rdb    *redis.Client
	keys   *integrity.Keyring
	bus    *streambus.Bus
	stream string
}

// newAckFixture starts a Redis server of the test's own (so that its
// command statistics are the processor's alone).
func newAckFixture(t *testing.T) *ackFixture {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	key, err := integrity.GenerateKey()
	require.NoError(t, err)
	keys, err := integrity.NewKeyring("k", map[string][]byte{"k": key})
	require.NoError(t, err)
	bus, err := streambus.New(streambus.Config{}, nil, rdb, keys)
	require.NoError(t, err)
	return &ackFixture{rdb: rdb, keys: keys, bus: bus, stream: "acks:stream"}
}

func (f *ackFixture) add(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	env, err := f.keys.Sign(f.stream, []byte(benchEvent))
	require.NoError(t, err)
	pipe := f.rdb.Pipeline()
	for range n {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: f.stream, Values: env.Values()})
	}
	_, err = pipe.Exec(ctx)
	require.NoError(t, err)
}

func (f *ackFixture) processor(t *testing.T, cfg processor.Config) *processor.Processor {
	t.Helper()
	cfg.Stream, cfg.Group, cfg.Consumer, cfg.DeadLetter = f.stream, "g", "c", "acks:dead"
	p, err := processor.New(cfg, nil, f.bus, host.NewPipeline(), nil)
	require.NoError(t, err)
	return p
}

// pending is the group's pending count, -1 before the group exists.
func (f *ackFixture) pending(t *testing.T) int64 {
	t.Helper()
	info, err := f.rdb.XPending(context.Background(), f.stream, "g").Result()
	if redis.HasErrorPrefix(err, "NOGROUP") {
		return -1
	}
	require.NoError(t, err)
	return info.Count
}

// TestAcksRideWithTheNextRead: a batch whose commit is acks only (no
// stream emits) is acknowledged by an XACK pipelined with the reader's next
// XREADGROUP, as a plain consumer loop does, not in a round trip of the
// committer's own; every entry is acknowledged and counted once.
func TestAcksRideWithTheNextRead(t *testing.T) {
	f := newAckFixture(t)
	const n = 2000
	f.add(t, n)
	cmds := f.monitor(t)
	p := f.processor(t, processor.Config{BatchSize: 100, Block: 100 * time.Millisecond, StopWhenIdle: true})
	require.NoError(t, p.Run(context.Background()))

	assert.Zero(t, f.pending(t))
	st := p.Stats()
	assert.EqualValues(t, n, st.Processed.Load())
	assert.Zero(t, st.LateAcks.Load())

	// Redis runs a pipeline's commands one after the other: an XACK sent
	// with a read is followed by that read, from the same client.
	lines := cmds()
	acks, alone := 0, 0
	for i, l := range lines {
		if l.cmd != "xack" {
			continue
		}
		acks++
		next := i + 1
		for next < len(lines) && lines[next].client != l.client {
			next++
		}
		if next == len(lines) || lines[next].cmd != "xreadgroup" {
			alone++
		}
	}
	assert.Positive(t, acks)
	// The committer sends acks itself when the reader did not take them
	// within a few milliseconds: at the end of the drain, and now and then
	// on a busy machine.
	assert.LessOrEqual(t, alone, acks/4+1, "of %d XACKs, %d went out alone", acks, alone)
}

type monitored struct{ client, cmd string }

// monitor records the commands Redis runs (MONITOR, on a connection of its
// own) until the returned function is called.
func (f *ackFixture) monitor(t *testing.T) func() []monitored {
	t.Helper()
	conn, err := net.Dial("tcp", f.rdb.Options().Addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = conn.Write([]byte("MONITOR\r\n"))
	require.NoError(t, err)
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+OK\r\n", line)
	lines := make(chan []monitored, 1)
	go func() {
		var out []monitored
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				lines <- out
				return
			}
			// +1700000000.123456 [0 127.0.0.1:5555] "xack" "acks:stream" ...
			if _, rest, ok := strings.Cut(line, "["); ok {
				if fields := strings.Fields(rest); len(fields) >= 3 {
					out = append(out, monitored{client: fields[1], cmd: strings.ToLower(strings.Trim(fields[2], `"`))})
				}
			}
		}
	}()
	return func() []monitored {
		require.NoError(t, f.rdb.Ping(context.Background()).Err())
		time.Sleep(100 * time.Millisecond)
		_ = conn.Close()
		return <-lines
	}
}

// TestAcksNotHeldByAnIdleStream: when nothing more arrives, the reader
// waits in a blocking read and sends nothing; the committer acknowledges
// what it finished itself, promptly.
func TestAcksNotHeldByAnIdleStream(t *testing.T) {
	f := newAckFixture(t)
	f.add(t, 10)
	p := f.processor(t, processor.Config{Block: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	require.Eventually(t, func() bool { return f.pending(t) == 0 && p.Stats().Processed.Load() == 10 },
		2*time.Second, 10*time.Millisecond, "acked well within the reader's 10 s block")
	cancel()
	require.NoError(t, <-done)
}

// TestAcksFlushedAtShutdown: entries finished before a shutdown are
// acknowledged before Run returns, whatever the reader was doing.
func TestAcksFlushedAtShutdown(t *testing.T) {
	for i := range 5 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			f := newAckFixture(t)
			f.add(t, 500)
			p := f.processor(t, processor.Config{BatchSize: 50, Block: 10 * time.Second})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- p.Run(ctx) }()
			require.Eventually(t, func() bool { return p.Stats().Processed.Load() > 0 }, 5*time.Second, time.Millisecond)
			time.Sleep(time.Duration(i) * time.Millisecond)
			cancel()
			require.NoError(t, <-done)
			groups, err := f.rdb.XInfoGroups(context.Background(), f.stream).Result()
			require.NoError(t, err)
			require.Len(t, groups, 1)
			assert.Zero(t, f.pending(t), "every entry read was finished and acknowledged")
			assert.EqualValues(t, groups[0].EntriesRead, p.Stats().Processed.Load(), "and counted once")
		})
	}
}

// TestTwoReadsInFlight: the processor keeps two reads of new entries in
// flight, so that Redis prepares a batch while the last one is verified;
// on an idle stream both wait in Redis (blocked XREADGROUP clients).
func TestTwoReadsInFlight(t *testing.T) {
	f := newAckFixture(t)
	f.add(t, 1)
	p := f.processor(t, processor.Config{Block: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	blocked := func() int {
		list, err := f.rdb.ClientList(context.Background()).Result()
		require.NoError(t, err)
		n := 0
		for line := range strings.SplitSeq(list, "\n") {
			if strings.Contains(line, " cmd=xreadgroup") && strings.Contains(line, " flags=b") {
				n++
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return blocked() == 2 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, 2, blocked(), "no more than two")
	cancel()
	require.NoError(t, <-done)
	assert.EqualValues(t, 1, p.Stats().Processed.Load())
}
