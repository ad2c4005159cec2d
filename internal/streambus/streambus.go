package streambus

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/integrity"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultBlock is how long a blocking read waits when its Block is zero.
	DefaultBlock = 5 * time.Second
	// DefaultCount is how many entries a read or claim asks for when its Count
	// is zero.
	DefaultCount = 100
)

// blockSlice is the longest single BLOCK sent to Redis. A longer block is
// served as a series of slices, checking ctx between them, because go-redis
// does not interrupt a blocked read when its context is cancelled.
const blockSlice = 200 * time.Millisecond

// Errors returned by Bus methods.
var (
	// ErrInvalidArgs: a required argument (stream, group, consumer, ids) is
	// missing or out of range.
	ErrInvalidArgs = errors.New("streambus: invalid arguments")
	// ErrNoGroup: the consumer group does not exist on the stream.
	ErrNoGroup = errors.New("streambus: no such consumer group")
)

// Config tunes a Bus. The zero value is usable.
type Config struct {
	// Block is how long a blocking read waits when the call's Block is zero.
	// Default: DefaultBlock. It must be positive: go-redis reads a zero BLOCK
	// as "forever", which a Bus never sends.
	Block time.Duration
	// Count is the COUNT of reads and claims whose Count is zero.
	// Default: DefaultCount.
	Count int64
	// Source, when set, is the stable name of this writer (1-64 characters
	// of [A-Za-z0-9._-]): the Bus then signs what it appends with envelope
	// version 2, as one chain per stream of the source "<Source>/<session>"
	// (a new session per Bus), with checkpoints by Checkpoint's policy
	// (see RunCheckpoints and Close). Empty: version 1, no chain.
	Source string
	// Checkpoint is the chain's checkpoint policy (defaults
	// integrity.DefaultCheckpointEvery and DefaultCheckpointInterval).
	Checkpoint integrity.ChainConfig
	// RequireChain refuses version 1 entries on every read
	// (malformed_envelope): only chained entries verify.
	RequireChain bool
	// MinReplicasAcked, when above 0, is how many replicas must hold each
	// write of the Bus before it counts as done: appends (XAdd,
	// AppendOnce, AppendBatches), commits (Commit, DeadLetter, XAck and the
	// acks of XReadGroup) and checkpoints. Redis WAIT follows the write on
	// its own connection (see replicated); a write the master took but
	// fewer replicas confirmed within MinReplicasTimeout fails with a
	// *NotReplicatedError, and running it again is safe (each is once
	// only). The rdb given to New must then be a *redis.Client or a
	// *redis.ClusterClient. Default 0: the master's reply is enough, and
	// no WAIT is sent.
	MinReplicasAcked int
	// MinReplicasTimeout bounds each wait for replicas; it must be shorter
	// than the client's read timeout. Default DefaultMinReplicasTimeout.
	MinReplicasTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Block == 0 {
		c.Block = DefaultBlock
	}
	if c.Count == 0 {
		c.Count = DefaultCount
	}
	if c.MinReplicasTimeout == 0 {
		c.MinReplicasTimeout = DefaultMinReplicasTimeout
	}
}

// Validate reports a Config that New cannot use.
func (c Config) Validate() error {
	if c.Block < 0 {
		return fmt.Errorf("%w: block %s is negative", ErrInvalidArgs, c.Block)
	}
	if c.Count < 0 {
		return fmt.Errorf("%w: count %d is negative", ErrInvalidArgs, c.Count)
	}
	if c.MinReplicasAcked < 0 {
		return fmt.Errorf("%w: min replicas acked %d is negative", ErrInvalidArgs, c.MinReplicasAcked)
	}
	if c.MinReplicasTimeout < 0 {
		return fmt.Errorf("%w: min replicas timeout %s is negative", ErrInvalidArgs, c.MinReplicasTimeout)
	}
	return nil
}

// Bus reads and writes signed entries on Redis Streams. It is safe for
// concurrent use.
type Bus struct {
	rdb  redis.UniversalClient
	keys *integrity.Keyring
	log  *slog.Logger
	cfg  Config

	mu       sync.Mutex
	tampered map[string]uint64

	// replyBytesPerEntry is the size of the last full raw read reply per
	// entry it held, to size the next reply's buffer in one allocation.
	replyBytesPerEntry atomic.Int64
	// scratch is a pool of *scratch, a read's working slices.
	scratch sync.Pool
	// slice is the longest BLOCK of one blocking read: blockSlice, or less
	// when the client's read timeout would not wait that long.
	slice time.Duration
	// chain signs appends when Config.Source is set.
	chain *integrity.Chain
	// writes serialises the chained writes of Commit, DeadLetter,
	// AppendSealed and checkpoints, each signed and written under it: an
	// entry is never signed while an earlier one's write is in flight, so a
	// write whose outcome is unknown (the chain then restarts) can only
	// leave its session's tail missing, never a hole before a later entry.
	writes sync.Mutex
}

// New returns a Bus on rdb that signs and verifies with keys. The Bus does
// not own rdb: closing it is the caller's job. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger, rdb redis.UniversalClient, keys *integrity.Keyring) (*Bus, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalidArgs)
	}
	if keys == nil {
		return nil, fmt.Errorf("%w: nil keyring", ErrInvalidArgs)
	}
	if err := cfg.checkWaitClient(rdb); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &Bus{rdb: rdb, keys: keys, log: logger, cfg: cfg, tampered: map[string]uint64{}, slice: sliceFor(rdb)}
	if cfg.Source != "" {
		chain, err := integrity.NewChain(keys, cfg.Source, cfg.Checkpoint)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidArgs, err)
		}
		b.chain = chain
	}
	return b, nil
}

// Source returns the source id the Bus signs as ("<name>/<session>"), ""
// when it signs version 1 envelopes.
func (b *Bus) Source() string {
	if b.chain == nil {
		return ""
	}
	return b.chain.Source()
}

// readTimeout is the read timeout of a *redis.Client or
// *redis.ClusterClient; false for another client, whose options are not
// known.
func readTimeout(rdb redis.UniversalClient) (time.Duration, bool) {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ReadTimeout, true
	case *redis.ClusterClient:
		return c.Options().ReadTimeout, true
	}
	return 0, false
}

// sliceFor is the block slice for rdb: blockSlice, or half its read
// timeout when that is shorter, so that a blocking read is never cut by it.
func sliceFor(rdb redis.UniversalClient) time.Duration {
	rt, _ := readTimeout(rdb)
	if rt > 0 && rt/2 < blockSlice {
		return max(rt/2, time.Millisecond)
	}
	return blockSlice
}

// TamperedCounts returns how many entries failed verification, by reason
// (integrity.Reason: "signature_mismatch", "unknown_key_id",
// "malformed_envelope", "unsigned"), since the Bus was created. An entry read
// twice is counted twice. The map is a copy.
func (b *Bus) TamperedCounts() map[string]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.tampered)
}

// Entry is a verified stream entry.
type Entry struct {
	// ID is the stream entry id ("1700000000000-0").
	ID string
	// Stream is the stream the entry was read from; the signature binds it.
	Stream string
	// KeyID names the key that signed the entry.
	KeyID string
	// EventID is the event's event_id.
	EventID string
	// Event is the signed JSON object, byte for byte as the producer wrote it.
	// It shares memory with the Redis reply (no copy per entry): read it,
	// never change it; copy it to change it. EventID and Sig share that
	// memory too: keeping either for long keeps the whole batch's reply.
	Event []byte
	// Sig is the hex signature, kept so that the entry can be dead-lettered and
	// replayed unchanged.
	Sig string
	// Deliveries is how many times the group delivered the entry, this time
	// included: 1 for a new entry (XReadGroup with ">"), the XPENDING count
	// for re-read and claimed entries.
	Deliveries int64
	// Attempts is how many times the entry failed its pipeline or was
	// running when its process died (AttemptsKey): filled for re-read and
	// claimed entries, 0 for new ones. Unlike Deliveries, a claim or a read
	// that did not run the entry does not count.
	Attempts int64
	// Link is the entry's place in its source's chain: zero for an
	// envelope version 1 entry (Source "").
	integrity.Link
}

// AttemptsKey is the hash that counts the attempts of stream's entries, by
// entry id. It shares the stream's hash tag, so a commit touching both stays
// in one Redis Cluster slot.
func AttemptsKey(stream string) string { return stream + ":attempts" }

// Envelope returns the entry's signed envelope, whose Values are the stream
// fields the producer wrote.
func (e Entry) Envelope() integrity.Envelope {
	v := integrity.Version
	if e.Source != "" {
		v = integrity.Version2
	}
	return integrity.Envelope{Version: v, KeyID: e.KeyID, EventID: e.EventID, Event: e.Event, Sig: e.Sig, Link: e.Link}
}

// Tampered is an entry that failed verification. It is never handed out as
// an Entry.
type Tampered struct {
	ID     string
	Stream string
	// Reason is integrity.Reason(Err).
	Reason string
	// Err wraps one of the integrity verification sentinels.
	Err error
	// Deliveries as in Entry.
	Deliveries int64
	// Fields are the entry's fields as stored, for forensics and
	// dead-lettering: name, value, name, value, … in stream order, a field
	// named twice included (copies, not views of the reply).
	Fields []string
}

// Batch is what a read or a claim returns.
type Batch struct {
	// Entries are the verified entries, in stream order.
	Entries []Entry
	// Tampered are the entries that failed verification, in stream order.
	// In a consumer group they are left pending.
	Tampered []Tampered
	// Checkpoints are the verified checkpoints of version 2 sources, in
	// stream order: never to be handed to plugins, but acknowledged (and
	// counted in their source's sequence) like entries.
	Checkpoints []Entry
	// Deleted are ids that were pending but whose entries were deleted or
	// trimmed from the stream (XReadGroup of history, XAutoClaim). Redis drops
	// them from the pending list (XAUTOCLAIM) or keeps them (XREADGROUP
	// history) until they are acknowledged.
	Deleted []string
	// Cursor is where to continue: for XReadGroup the id of the last
	// entry Redis returned (verified or not), or the request's id when none
	// came back; for XAutoClaim the next start id, "0-0" once the whole
	// pending list has been scanned.
	Cursor string
	// Acked is how many ids of GroupReadArgs.Ack were acknowledged.
	Acked int64
	// AcksSent says that the XACK of GroupReadArgs.Ack went through, with
	// Acked its count — also in the Batch returned with an error of the
	// read that followed (a failed read, a cancelled wait), so that the
	// caller does not send them again.
	AcksSent bool
	// AckReplayed are the ids of GroupReadArgs.Ack refused as replays (see
	// Item.Mark): not acknowledged, to be dead-lettered.
	AckReplayed []string
	// AckMarks say where the sources of the acks' marks stand now.
	AckMarks []SourceMark
}

// Len is the number of entries Redis returned: verified, tampered and deleted.
func (b Batch) Len() int {
	return len(b.Entries) + len(b.Tampered) + len(b.Deleted) + len(b.Checkpoints)
}
