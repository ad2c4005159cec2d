package processor

import (
	"context"

	"github.com/auditproc/auditproc/internal/streambus"
)

// bus is all the processor asks of Redis: a *streambus.Bus, or a fake one
// in the tests of the processor's decisions. Nothing else in the package
// talks to Redis.
type bus interface {
	XGroupCreate(ctx context.Context, stream, group, start string) (bool, error)
	XReadGroup(ctx context.Context, a streambus.GroupReadArgs) (streambus.Batch, error)
	XAutoClaim(ctx context.Context, a streambus.AutoClaimArgs) (streambus.Batch, error)
	XAck(ctx context.Context, stream, group string, ids ...string) (int64, error)
	Commit(ctx context.Context, stream, group string, items ...streambus.Item) (streambus.CommitResult, error)
	DeadLetter(ctx context.Context, stream, group, dlq string, letters ...streambus.Letter) ([]string, error)
	// XPending tells StopWhenIdle whether anything is left pending.
	XPending(ctx context.Context, stream, group string) (streambus.PendingInfo, error)
	// XInfoGroup feeds the pending and lag gauges.
	XInfoGroup(ctx context.Context, stream, group string) (streambus.GroupInfo, error)
	// Charge counts failed attempts; Touch keeps held entries from looking
	// idle; XRange reads an entry to dead-letter by id.
	Charge(ctx context.Context, stream, group string, ids ...string) ([]streambus.Charged, error)
	Touch(ctx context.Context, stream, group, consumer string, ids ...string) (int64, error)
	XRange(ctx context.Context, stream, start, end string, count int64) ([]streambus.RawEntry, error)
	// Seen looks up and records the (source, seq) of a batch's chained
	// entries before any plugin runs (replays); SettleGap reports a hole of
	// a source's sequence as missing once its grace ended (gaps).
	Seen(ctx context.Context, stream, group string, marks []streambus.Mark) ([]streambus.SeenVerdict, error)
	SettleGap(ctx context.Context, stream, group, source string, from, to uint64) (uint64, streambus.SourceMark, error)
}

var _ bus = (*streambus.Bus)(nil)
