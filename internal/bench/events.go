package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/integrity"
)

// eventGen makes realistic signed audit events of about 330 bytes: mostly
// ordinary actions, some heartbeats (the default pipeline's filter drops
// them), failed logins and role grants (its detect plugin alerts on them),
// and an email the redact plugin masks.
type eventGen struct {
	r    *rand.Rand
	keys *integrity.Keyring
	n    int
}

func newEventGen(keys *integrity.Keyring, seed uint64) *eventGen {
	return &eventGen{r: rand.New(rand.NewPCG(seed, 0x5eed)), keys: keys}
}

var actions = []string{"invoice.approve", "export.create", "user.login", "document.view", "record.update", "report.download"}

// next returns a signed event for stream: its envelope and event id.
func (g *eventGen) next(stream string) (integrity.Envelope, error) {
	stamped, err := g.event()
	if err != nil {
		return integrity.Envelope{}, err
	}
	return g.keys.Sign(stream, stamped)
}

// event returns a stamped event.
func (g *eventGen) event() ([]byte, error) {
	g.n++
	action, outcome, severity := actions[g.r.IntN(len(actions))], "success", "info"
	switch x := g.r.IntN(100); {
	case x < 5:
		action, severity = "heartbeat", "debug"
	case x < 8:
		action, outcome, severity = "user.login", "failure", "warning"
	case x < 9:
		action, severity = "role.grant", "notice"
	}
	actor := g.r.IntN(5000)
	ev := fmt.Appendf(nil, `{"actor":"u-%04d","email":"user%04d@example.com","action":%q,"target":"invoice/%06d",`+
		`"outcome":%q,"severity":%q,"source_ip":"10.1.%d.%d","region":"eu-west-1",`+
		`"user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36","request_id":"req-%016x"}`,
		actor, actor, action, g.r.IntN(1_000_000), outcome, severity, g.r.IntN(256), g.r.IntN(256), g.r.Uint64())
	stamped, _, err := integrity.Stamp(ev, time.Now())
	return stamped, err
}

// prefill appends n signed events to stream, 1000 per pipelined round trip,
// and returns the mean event size in bytes.
func prefill(ctx context.Context, rdb redis.Cmdable, keys *integrity.Keyring, stream string, n int) (int, error) {
	g := newEventGen(keys, 1)
	total := 0
	for done := 0; done < n; {
		pipe := rdb.Pipeline()
		for i := 0; i < 1000 && done < n; i, done = i+1, done+1 {
			env, err := g.next(stream)
			if err != nil {
				return 0, err
			}
			total += len(env.Event)
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: env.Values()})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, fmt.Errorf("prefill %s: %w", stream, err)
		}
	}
	return total / max(n, 1), nil
}

// prefillChain appends n events to stream as one chained source (envelope
// v2, checkpoints by the default policy, a closing one), 1000 per
// pipelined round trip.
func prefillChain(ctx context.Context, rdb redis.Cmdable, keys *integrity.Keyring, stream string, n int) error {
	g := newEventGen(keys, 1)
	chain, err := integrity.NewChain(keys, "bench", integrity.ChainConfig{})
	if err != nil {
		return err
	}
	add := func(pipe redis.Pipeliner, envs []integrity.StreamEnvelope) {
		for _, e := range envs {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: e.Stream, Values: e.Values()})
		}
	}
	for done := 0; done < n; {
		pipe := rdb.Pipeline()
		for i := 0; i < 1000 && done < n; i, done = i+1, done+1 {
			ev, err := g.event()
			if err != nil {
				return err
			}
			now := time.Now()
			env, err := chain.Sign(stream, ev, now)
			if err != nil {
				return err
			}
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: env.Values()})
			due, err := chain.Due(now)
			if err != nil {
				return err
			}
			add(pipe, due)
		}
		if done == n {
			closing, err := chain.Close(time.Now())
			if err != nil {
				return err
			}
			add(pipe, closing)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("prefill %s: %w", stream, err)
		}
	}
	return nil
}

// Baseline drains group on stream with a plain go-redis loop: XREADGROUP
// COUNT count, the XACK of the previous batch pipelined with the next read,
// until a read returns nothing. With keys, every entry's HMAC is checked
// (integrity.Verify) too; without, nothing is. It returns the entries read.
func Baseline(ctx context.Context, rdb *redis.Client, stream, group string, count int64, keys *integrity.Keyring) (int, error) {
	n := 0
	var ack []string
	for {
		pipe := rdb.Pipeline()
		if len(ack) > 0 {
			pipe.XAck(ctx, stream, group, ack...)
		}
		read := pipe.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: group, Consumer: "baseline", Streams: []string{stream, ">"}, Count: count, Block: -1,
		})
		if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
			return n, err
		}
		res, _ := read.Result()
		if len(res) == 0 || len(res[0].Messages) == 0 {
			return n, nil
		}
		msgs := res[0].Messages
		n += len(msgs)
		ack = ack[:0]
		for _, m := range msgs {
			if keys != nil {
				if _, err := keys.Verify(stream, m.Values); err != nil {
					return n, fmt.Errorf("entry %s: %w", m.ID, err)
				}
			}
			ack = append(ack, m.ID)
		}
	}
}
