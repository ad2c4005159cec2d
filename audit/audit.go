package audit

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/redisconn"
	"github.com/auditproc/auditproc/internal/shard"
	"github.com/auditproc/auditproc/internal/streambus"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultRedisURL     = "redis://localhost:6379/0"
	DefaultStream       = "audit:stream"
	DefaultGroup        = "audit-consumers"
	DefaultWriteTimeout = 2 * time.Second
	DefaultBlock        = 5 * time.Second
	DefaultCount        = 10
	DefaultClaimMinIdle = time.Minute
	DefaultRetryDelay   = 500 * time.Millisecond
	// DefaultRetryWindow is how long Redis remembers the event id of an
	// event Audit wrote, so that a retry with the same id is not doubled.
	DefaultRetryWindow = time.Hour
	// DefaultMinReplicasTimeout bounds the wait for replicas
	// (Config.MinReplicasAcked).
	DefaultMinReplicasTimeout = streambus.DefaultMinReplicasTimeout
)

// Errors of this package. Errors from Redis that are not ErrUnavailable are
// returned wrapped, as they are.
var (
	// ErrUnavailable: the event was not written. Redis could not be
	// reached (the request never left), or answered that it cannot serve
	// (loading, no master, read only, out of memory) without running it.
	// Try again later.
	ErrUnavailable = errors.New("audit: redis unavailable")
	// ErrOutcomeUnknown: the request was sent but no answer came within
	// Config.WriteTimeout (a stalled server, a cut connection): the event
	// may or may not be in the stream. Retry with the same event id (see
	// OutcomeUnknownError): Redis remembers the ids Audit wrote for
	// Config.RetryWindow and does not store a retried one twice.
	ErrOutcomeUnknown = errors.New("audit: outcome unknown")
	// ErrInvalidEvent: the event is not (and does not encode to) a JSON
	// object, or its event_id or timestamp is unusable.
	ErrInvalidEvent = errors.New("audit: invalid event")
	// ErrInvalidConfig: Config.Validate refused the configuration.
	ErrInvalidConfig = errors.New("audit: invalid config")
	// ErrNotReplicated: the event was appended on the master, but fewer
	// replicas than Config.MinReplicasAcked confirmed it within
	// Config.MinReplicasTimeout. It is in the stream; if the master fails
	// over before a replica has it, it is lost. Retry with the same event
	// id (see NotReplicatedError): nothing is written twice, and the retry
	// waits for the replicas again.
	ErrNotReplicated = errors.New("audit: not replicated")
)

// Config configures a Bus. Keys is required; every other field has a
// default.
type Config struct {
	// RedisURL is the server used when Client is nil:
	// "redis://user:password@host:6379/0", "rediss://…" for TLS,
	// "unix:///path/redis.sock", "redis+sentinel://host:26379,host2:26379/master"
	// for Sentinel, "redis+cluster://host:6379,host2:6379" for a cluster.
	// Default: DefaultRedisURL. The Bus builds its client with dial, read and
	// write timeouts of WriteTimeout and one retry, so a dead server fails
	// fast, and closes it in Close.
	RedisURL string
	// Client, when not nil, is used instead of RedisURL (single server,
	// Sentinel or Cluster). Close does not close it. Audit bounds each call
	// with WriteTimeout through its context: enable the client's
	// ContextTimeoutEnabled option so that a server that stops answering is
	// bounded too, not only one that refuses connections.
	Client redis.UniversalClient
	// Keys signs and verifies the events. Required: see LoadKeyring.
	Keys *Keyring
	// Stream is the audit stream. Default: DefaultStream.
	Stream string
	// Shards is stream.shards: above 1, Audit and a Producer append each
	// event to the stream of its shard (shard 0 is Stream; docs/scaling.md),
	// chosen by PartitionKey. Consume, Ack, Pending and ClaimStale read one
	// stream: they refuse a Bus with Shards above 1 (give each shard's
	// stream its own Bus). Default: 1.
	Shards int
	// PartitionKey is stream.partition_key: the top-level event field whose
	// value picks the shard (CRC-32 of its text modulo Shards), so that
	// events with the same value keep their order. Events without it, or
	// with it empty, spread evenly.
	PartitionKey string
	// Group is the consumer group. Default: DefaultGroup.
	Group string
	// MaxLen, when positive, trims the stream to about MaxLen entries on
	// each Audit (MAXLEN ~). Default: 0, no trimming: audit is permanent.
	MaxLen int64
	// WriteTimeout bounds each Audit, Ack and Pending call. Default:
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Block is how long Consume waits on Redis for new entries per read
	// before asking again. Default: DefaultBlock.
	Block time.Duration
	// Count is how many entries Consume reads and ClaimStale claims at a
	// time. Default: DefaultCount.
	Count int64
	// ClaimMinIdle is how long an entry must have been pending, unacknowledged,
	// before ClaimStale takes it over. Default: DefaultClaimMinIdle.
	ClaimMinIdle time.Duration
	// RetryDelay is how long Consume waits after a failed read before reading
	// again, and a Producer's first wait before sending again (doubling up
	// to DefaultMaxRetryDelay). Default: DefaultRetryDelay.
	RetryDelay time.Duration
	// Source is this producer's stable name (1-64 characters of
	// [A-Za-z0-9._-]), for example the service's name. Events are signed
	// with envelope version 2: one chain per Bus (source id
	// "<Source>/<random session>"), with signed checkpoints every
	// CheckpointEvery events or CheckpointInterval, also when idle, and a
	// closing one in Close, so that a reader can prove no event of this
	// producer was deleted or replayed (docs/trail.md). Default: the host
	// name, its other characters replaced by "-" ("producer" without one).
	Source string
	// CheckpointEvery: a checkpoint after this many events. Default: 1000.
	CheckpointEvery int
	// CheckpointInterval: a checkpoint at least this often. Default: 60 s.
	CheckpointInterval time.Duration
	// RetryWindow is how long Redis remembers an event id Audit wrote (a key
	// of about 100 bytes per event, next to the stream), so that a retry
	// after ErrOutcomeUnknown is not stored twice. Default:
	// DefaultRetryWindow.
	RetryWindow time.Duration
	// MinReplicasAcked, when above 0, is how many replicas must hold each
	// append (Audit, a Producer's batches, the chain's checkpoints) and
	// each Ack before it counts as done: Redis WAIT, sent on the append's
	// own connection (in a Cluster, to the stream's master). An append
	// the master took but fewer replicas confirmed within
	// MinReplicasTimeout is reported with ErrNotReplicated. Default 0: the
	// master's reply is enough, and a failover of the master may lose the
	// appends it had not yet passed on (Redis replicates asynchronously).
	// The auditproc configuration calls it redis.min_replicas_acked.
	MinReplicasAcked int
	// MinReplicasTimeout bounds that wait; it must be shorter than
	// WriteTimeout (than the read timeout of Client, when given). Default:
	// DefaultMinReplicasTimeout.
	MinReplicasTimeout time.Duration

	// The Producer's fields (NewProducer); Bus ignores them.

	// QueueSize bounds the events a Producer holds in memory; Send blocks
	// while it is full. Default: DefaultQueueSize.
	QueueSize int
	// BatchSize is the most events per script call. Default:
	// DefaultBatchSize.
	BatchSize int
	// Pipeline is the most batches per round trip. Default: DefaultPipeline.
	Pipeline int
	// ProducerID names the producer in Redis, where its last sequence
	// number and event count are kept for DedupWindow. Leave it empty for a
	// random name per Producer. A fixed name means "the same sequence of
	// events": a new Producer with it numbers its events from 1 again,
	// passes over the ones Redis holds already (Result.Duplicate), and
	// derives missing event ids from the name and the event's number
	// (auditproc emit names a producer after the file's content). When
	// Redis cannot say at NewProducer how many it holds, the script in
	// Redis still skips them (nothing is doubled), but the new chain then
	// starts with entries never written, which `auditproc verify` reports
	// as a gap.
	ProducerID string
	// shard is the index of a Producer's shard (shards.go): above 0, the
	// producer's name in Redis and its derived event ids are those of
	// "<ProducerID>/<shard>", which no ProducerID can be.
	shard int
	// layout is the shard layout a named Producer records with its
	// sequence ("" for one shard; shards.go).
	layout string
	// DedupWindow is how long Redis remembers a producer's last sequence
	// number after its last write. Default: DefaultDedupWindow.
	DedupWindow time.Duration
	// SpoolDir, when set, is a directory where the Producer keeps signed
	// events, fsynced, while Redis does not take them within WriteTimeout;
	// they are sent in order once Redis is back, by this Producer or the
	// next one opened on the directory. One process at a time per
	// directory (it is locked).
	SpoolDir string
	// SpoolMaxBytes caps the spool on disk; past it events are refused
	// with ErrSpoolFull. Default: DefaultSpoolMaxBytes.
	SpoolMaxBytes int64
}

// DefaultSource is the default Config.Source: the host name made a valid
// source name.
func DefaultSource() string {
	host, _ := os.Hostname()
	if name := integrity.SourceName(host); name != "" {
		return name
	}
	return "producer"
}

func (c *Config) setDefaults() {
	if c.RedisURL == "" && c.Client == nil {
		c.RedisURL = DefaultRedisURL
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Block == 0 {
		c.Block = DefaultBlock
	}
	if c.Count == 0 {
		c.Count = DefaultCount
	}
	if c.ClaimMinIdle == 0 {
		c.ClaimMinIdle = DefaultClaimMinIdle
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.Source == "" {
		c.Source = DefaultSource()
	}
	if c.RetryWindow == 0 {
		c.RetryWindow = DefaultRetryWindow
	}
	if c.MinReplicasTimeout == 0 {
		c.MinReplicasTimeout = DefaultMinReplicasTimeout
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Pipeline == 0 {
		c.Pipeline = DefaultPipeline
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = DefaultDedupWindow
	}
	if c.SpoolMaxBytes == 0 {
		c.SpoolMaxBytes = DefaultSpoolMaxBytes
	}
}

// Validate reports a configuration New cannot use. Zero values are valid:
// New replaces them with their defaults.
func (c Config) Validate() error {
	var errs []error
	if c.Keys == nil {
		errs = append(errs, fmt.Errorf("%w: no keys: load them with LoadKeyring", ErrInvalidConfig))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"WriteTimeout", c.WriteTimeout}, {"Block", c.Block}, {"ClaimMinIdle", c.ClaimMinIdle}, {"RetryDelay", c.RetryDelay},
		{"RetryWindow", c.RetryWindow}, {"DedupWindow", c.DedupWindow}} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("%w: %s %s must not be negative (zero means the default)", ErrInvalidConfig, d.name, d.d))
		}
	}
	if c.Shards < 0 || c.Shards > shard.Max {
		errs = append(errs, fmt.Errorf("%w: Shards %d: want 1 to %d", ErrInvalidConfig, c.Shards, shard.Max))
	}
	if c.PartitionKey == "event_id" || c.PartitionKey == "timestamp" {
		errs = append(errs, fmt.Errorf("%w: PartitionKey %q is stamped by the producer: name a field of the service's (without one, events spread evenly)", ErrInvalidConfig, c.PartitionKey))
	}
	if c.QueueSize < 0 || c.BatchSize < 0 || c.Pipeline < 0 || c.SpoolMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: QueueSize, BatchSize, Pipeline and SpoolMaxBytes must not be negative", ErrInvalidConfig))
	}
	if c.ProducerID != "" && !plainID(c.ProducerID) {
		errs = append(errs, fmt.Errorf("%w: ProducerID %q: want 1 to 128 of [A-Za-z0-9._:-]", ErrInvalidConfig, truncateID(c.ProducerID)))
	}
	if c.MaxLen < 0 || c.Count < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxLen %d and Count %d must not be negative", ErrInvalidConfig, c.MaxLen, c.Count))
	}
	if c.MinReplicasAcked < 0 || c.MinReplicasTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: MinReplicasAcked %d and MinReplicasTimeout %s must not be negative", ErrInvalidConfig, c.MinReplicasAcked, c.MinReplicasTimeout))
	} else if c.MinReplicasAcked > 0 {
		// The replicas' answer is read within WriteTimeout.
		wait, write := cmp.Or(c.MinReplicasTimeout, DefaultMinReplicasTimeout), cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
		if wait >= write {
			errs = append(errs, fmt.Errorf("%w: MinReplicasTimeout %s must be shorter than WriteTimeout %s", ErrInvalidConfig, wait, write))
		}
	}
	return errors.Join(errs...)
}

// Bus writes audit events and reads them back through the consumer group.
// It is safe for concurrent use.
type Bus struct {
	cfg Config
	rdb redis.UniversalClient
	own bool
	bus *streambus.Bus
	log *slog.Logger

	stopCheckpoints context.CancelFunc
	checkpointsDone chan struct{}

	durableOnce sync.Once
	// shardsOnce checks, at the first Audit, that processors read every
	// shard the Bus writes (shardsRead).
	shardsOnce sync.Once
	shardsErr  error
}

// streamOf is the stream of the shard of a stamped event whose event_id is
// id: by the partition key, else by the event id, so that Audit called again
// with the event an OutcomeUnknownError gave goes to the same stream (where
// it is found written already).
func (b *Bus) streamOf(stamped []byte, id string) string {
	if b.cfg.Shards < 2 {
		return b.cfg.Stream
	}
	return shard.Key(b.cfg.Stream, shard.Of(stamped, b.cfg.PartitionKey, b.cfg.Shards, shard.ByText(id)))
}

// New returns a Bus. It does not contact Redis: an unreachable server shows
// as ErrUnavailable on the first call. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Bus, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rdb, own := cfg.Client, false
	if rdb == nil {
		c, _, err := redisconn.NewFromURL(cfg.RedisURL, "", redisconn.Timeouts{Dial: cfg.WriteTimeout, IO: cfg.WriteTimeout})
		if err != nil {
			// The URL may hold a password: do not quote it.
			return nil, fmt.Errorf("%w: RedisURL: not a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL", ErrInvalidConfig)
		}
		rdb, own = c, true
	}
	bus, err := streambus.New(streambus.Config{Block: cfg.Block, Count: cfg.Count, Source: cfg.Source,
		Checkpoint:       integrity.ChainConfig{CheckpointEvery: cfg.CheckpointEvery, CheckpointInterval: cfg.CheckpointInterval},
		MinReplicasAcked: cfg.MinReplicasAcked, MinReplicasTimeout: cfg.MinReplicasTimeout},
		logger, rdb, cfg.Keys.k)
	if err != nil {
		if own {
			_ = rdb.Close()
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	b := &Bus{cfg: cfg, rdb: rdb, own: own, bus: bus, log: logger, stopCheckpoints: stop, checkpointsDone: make(chan struct{})}
	go func() {
		defer close(b.checkpointsDone)
		bus.RunCheckpoints(ctx)
	}()
	return b, nil
}

// Source returns the source id the Bus signs as: "<Config.Source>/<session>".
func (b *Bus) Source() string { return b.bus.Source() }

// Close appends the closing checkpoint of the chain (within WriteTimeout),
// stops the periodic checkpoints and releases the Redis client the Bus
// created; a Config.Client stays open. A Bus that could not write its
// closing checkpoint still closes and returns the error: a reader will
// report the source's tail as missing.
func (b *Bus) Close() error {
	b.stopCheckpoints()
	<-b.checkpointsDone
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.WriteTimeout)
	defer cancel()
	err := b.bus.CloseChain(ctx)
	if err != nil {
		err = classify("close", err)
	}
	if b.own {
		err = errors.Join(err, b.rdb.Close())
	}
	return err
}

// oneStream refuses a reading call on a Bus of a sharded trail: which
// shard's stream would it read?
func (b *Bus) oneStream(op string) error {
	if b.cfg.Shards > 1 {
		return fmt.Errorf("%w: %s reads one stream, and this Bus writes %d shards: give each shard's stream a Bus of its own (Shards 1, Stream the shard's)",
			ErrInvalidConfig, op, b.cfg.Shards)
	}
	return nil
}

// Audit signs event and appends it to the audit stream, returning the new
// entry id. event may be:
//
//   - []byte or json.RawMessage: JSON text, which must be an object;
//   - string: JSON text when it is a JSON object, otherwise the string is
//     wrapped as {"message": "<the string>"};
//   - anything else (struct, map, pointer): encoded with encoding/json, which
//     must give an object.
//
// The event gets an event_id (UUIDv7) and a timestamp (RFC 3339, UTC) when
// it has none; the bytes are otherwise written as given. The call takes at
// most Config.WriteTimeout. Its error says what became of the event:
//
//   - ErrInvalidEvent: refused, nothing sent;
//   - ErrUnavailable: not written (Redis unreachable, or it refused to run
//     the append); try again later;
//   - ErrOutcomeUnknown, as an *OutcomeUnknownError: sent, no answer. Retry
//     with OutcomeUnknownError.Event (the event as stamped, with its event
//     id): an event id Audit wrote within Config.RetryWindow is not written
//     again, and the retry returns the first entry id;
//   - ErrNotReplicated, as a *NotReplicatedError, with the entry id (only
//     with Config.MinReplicasAcked): appended on the master, not confirmed
//     by enough replicas in time. Retry with NotReplicatedError.Event as
//     above: the retry writes nothing and waits for the replicas again.
//
// For high rates, use a Producer: it pipelines batches instead of one round
// trip per event.
func (b *Bus) Audit(ctx context.Context, event any) (string, error) {
	raw, err := encodeEvent(event)
	if err != nil {
		return "", err
	}
	b.durableOnce.Do(func() { go b.warnNotDurable(context.WithoutCancel(ctx)) })
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("audit: %w (the event was not sent)", err)
	}
	stream := b.cfg.Stream
	if b.cfg.Shards > 1 {
		b.shardsOnce.Do(func() { b.shardsErr = shardsRead(b.rdb, b.cfg.Stream, b.cfg.Shards, b.cfg.WriteTimeout) })
		if b.shardsErr != nil {
			return "", b.shardsErr
		}
		// The shard goes by the event id when there is no partition key,
		// so the event is stamped first.
		stamped, id, err := integrity.Stamp(raw, time.Now())
		if err != nil {
			return "", classify("audit", fmt.Errorf("%w: %w", ErrInvalidEvent, err))
		}
		raw, stream = stamped, b.streamOf(stamped, id)
	}
	env, err := b.bus.Seal(stream, raw)
	if err != nil {
		return "", classify("audit", err)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.WriteTimeout)
	defer cancel()
	id, dup, err := b.bus.AppendOnce(ctx, stream, env, b.cfg.MaxLen, b.cfg.RetryWindow)
	var nr *streambus.NotReplicatedError
	if errors.As(err, &nr) {
		// The master holds the link, a failover may lose it: the chain
		// goes on in a new session rather than past a possible hole.
		b.bus.ChainBroken(ctx, stream, err)
		return id, &NotReplicatedError{EventID: env.EventID, EntryID: id, Event: env.Event,
			Replicas: nr.Replicas, Want: nr.Want, Timeout: nr.Timeout, Err: err}
	}
	if err != nil {
		// The link Seal signed may or may not be in the stream: the chain
		// goes on in a new session rather than past a possible hole.
		b.bus.ChainBroken(ctx, stream, err)
		if notSent(err) {
			return "", classify("audit", err)
		}
		return "", &OutcomeUnknownError{EventID: env.EventID, Event: env.Event, Err: err}
	}
	if dup {
		// A retry: the event is there already, under its first link; the
		// link signed now was not written.
		b.bus.ChainBroken(ctx, stream, fmt.Errorf("event %s was written before", env.EventID))
	} else {
		_ = b.bus.Checkpoint(ctx) // by count; failures are logged there
	}
	b.log.LogAttrs(ctx, slog.LevelDebug, "audit_event_written",
		slog.String("stream", stream), slog.String("entry_id", id), slog.String("event_id", env.EventID), slog.Bool("retry", dup))
	return id, nil
}

// OutcomeUnknownError is Audit's error when the append was sent and no
// answer came. It wraps ErrOutcomeUnknown.
type OutcomeUnknownError struct {
	// EventID is the event's event_id.
	EventID string
	// Event is the event as stamped: pass it to Audit again to retry.
	Event json.RawMessage
	// Err is what the Redis client said.
	Err error
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("%v: event %s was sent and not answered (%v): retry with the same event id", ErrOutcomeUnknown, e.EventID, e.Err)
}

// Unwrap returns ErrOutcomeUnknown and the client's error.
func (e *OutcomeUnknownError) Unwrap() []error { return []error{ErrOutcomeUnknown, e.Err} }

// NotReplicatedError is Audit's error when the master appended the event
// and fewer replicas than Config.MinReplicasAcked confirmed it within
// Config.MinReplicasTimeout. It wraps ErrNotReplicated.
type NotReplicatedError struct {
	// EventID is the event's event_id; EntryID its entry id on the master.
	EventID, EntryID string
	// Event is the event as stamped: pass it to Audit again to wait again.
	Event json.RawMessage
	// Replicas is how many replicas confirmed it, Want how many were
	// asked for, Timeout how long Redis waited.
	Replicas, Want int
	Timeout        time.Duration
	// Err is what the Redis layer said.
	Err error
}

func (e *NotReplicatedError) Error() string {
	return fmt.Sprintf("%v: event %s was appended on the master as entry %s, but only %d of %d replicas confirmed it within %s: "+
		"it is lost if the master fails over before a replica has it; retry with the same event id to wait again",
		ErrNotReplicated, e.EventID, e.EntryID, e.Replicas, e.Want, e.Timeout)
}

// Unwrap returns ErrNotReplicated and the Redis layer's error.
func (e *NotReplicatedError) Unwrap() []error { return []error{ErrNotReplicated, e.Err} }

// dialError: the connection could not be made (nothing was sent), or the
// client was closed or out of connections before sending.
func dialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) || errors.Is(err, syscall.ECONNREFUSED)
}

// warnNotDurable logs redis_not_durable when Redis may lose appended events
// on its own: no AOF, or an eviction policy other than noeviction (the
// check run makes). A server that forbids CONFIG is not reported.
func (b *Bus) warnNotDurable(ctx context.Context) {
	for _, p := range NotDurable(ctx, b.rdb, b.cfg.WriteTimeout) {
		b.log.LogAttrs(ctx, slog.LevelWarn, "redis_not_durable", slog.String("problem", p))
	}
}

// NotDurable returns why Redis could lose appended events on its own (no
// AOF, an eviction policy other than noeviction), nothing when it is
// durable or does not answer CONFIG GET within timeout.
func NotDurable(ctx context.Context, rdb redis.UniversalClient, timeout time.Duration) []string {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	problems, _ := streambus.DurabilityProblems(ctx, rdb)
	return problems
}

func encodeEvent(event any) ([]byte, error) {
	var raw []byte
	switch ev := event.(type) {
	case nil:
		return nil, fmt.Errorf("%w: nil event", ErrInvalidEvent)
	case []byte:
		// JSON text is checked once, by integrity.CheckEvent, on the way
		// to signing (Stamp, Producer.Send): every rule in one pass.
		return ev, nil
	case json.RawMessage:
		return ev, nil
	case string:
		raw = []byte(ev)
		if !isJSONObject(raw) {
			var err error
			if raw, err = json.Marshal(map[string]string{"message": ev}); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
			}
		}
	default:
		var err error
		if raw, err = json.Marshal(ev); err != nil {
			return nil, fmt.Errorf("%w: encode %T: %w", ErrInvalidEvent, event, err)
		}
	}
	if !isJSONObject(raw) {
		return nil, fmt.Errorf("%w: %T is not a JSON object", ErrInvalidEvent, event)
	}
	return raw, nil
}

func isJSONObject(b []byte) bool {
	t := bytes.TrimSpace(b)
	return len(t) > 0 && t[0] == '{' && json.Valid(t)
}

// classify wraps err with ErrUnavailable when Redis could not serve, and
// with ErrInvalidEvent when the event was refused.
func classify(op string, err error) error {
	switch {
	case errors.Is(err, integrity.ErrInvalidEvent):
		return fmt.Errorf("%w: %s: %w", ErrInvalidEvent, op, err)
	case errors.Is(err, streambus.ErrInvalidArgs), errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", op, err)
	case errors.Is(err, streambus.ErrNotReplicated):
		return fmt.Errorf("%w: %s: %w", ErrNotReplicated, op, err)
	case isUnavailable(err):
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}

// isUnavailable tells a server that cannot serve (network errors, timeouts,
// a closed pool, LOADING, MASTERDOWN, …) from a command the server refused.
// A MOVED or ASK that reaches the caller (the client ran out of redirects
// while a slot moves) ran nothing: the cluster cannot serve it yet.
func isUnavailable(err error) bool {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "BUSY ", "MOVED ", "ASK "} {
			if redis.HasErrorPrefix(rerr, p) {
				return true
			}
		}
		return false
	}
	return true
}

// Message is a verified audit event read from the stream.
type Message struct {
	// ID is the stream entry id: pass it to Ack once the event is processed.
	ID string
	// EventID is the event's event_id.
	EventID string
	// KeyID names the key that signed it.
	KeyID string
	// Event is the event, byte for byte as the producer signed it.
	Event json.RawMessage
	// Deliveries is how many times the group delivered it, this time
	// included; above 1 it was delivered before and not acknowledged.
	Deliveries int64
}

// Decode decodes the event into v with encoding/json.
func (m Message) Decode(v any) error { return json.Unmarshal(m.Event, v) }

func message(e streambus.Entry) Message {
	return Message{ID: e.ID, EventID: e.EventID, KeyID: e.KeyID, Event: e.Event, Deliveries: e.Deliveries}
}

// CreateGroup creates the consumer group, and the stream when missing, so
// that the group sees every entry of the stream. It reports false, and no
// error, when the group exists already.
func (b *Bus) CreateGroup(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.WriteTimeout)
	defer cancel()
	created, err := b.bus.XGroupCreate(ctx, b.cfg.Stream, b.cfg.Group, "0")
	if err != nil {
		return false, classify("create group", err)
	}
	b.log.LogAttrs(ctx, slog.LevelInfo, "audit_consumer_group_initialized",
		slog.String("stream", b.cfg.Stream), slog.String("group", b.cfg.Group), slog.Bool("created", created))
	return created, nil
}

// Consume reads the group as consumer and yields each verified message. It
// first yields the messages this consumer received before and did not
// acknowledge (after a restart, say), then new ones, waiting for them; it
// stops when ctx is done or the loop breaks. Acknowledge each message with
// Ack after processing it: Consume does not.
//
// A failed read yields an error (wrapping ErrUnavailable when Redis is
// unreachable); if the loop goes on, Consume retries after
// Config.RetryDelay. Entries that fail verification are not yielded: they
// are logged as security_audit_tampered_message and left pending.
func (b *Bus) Consume(ctx context.Context, consumer string) iter.Seq2[Message, error] {
	return func(yield func(Message, error) bool) {
		if err := b.oneStream("consume"); err != nil {
			yield(Message{}, err)
			return
		}
		history := "0" // this consumer's pending entries first; "" once done
		for ctx.Err() == nil {
			args := streambus.GroupReadArgs{Stream: b.cfg.Stream, Group: b.cfg.Group, Consumer: consumer, ID: ">", Count: b.cfg.Count, Block: b.cfg.Block}
			if history != "" {
				args.ID = history
			}
			rctx, cancel := context.WithTimeout(ctx, b.cfg.Block+b.cfg.WriteTimeout)
			batch, err := b.bus.XReadGroup(rctx, args)
			cancel()
			if err != nil {
				if ended(ctx) || !yield(Message{}, classify("consume", err)) {
					return
				}
				sleep(ctx, b.cfg.RetryDelay)
				continue
			}
			if history != "" {
				history = batch.Cursor
				if batch.Len() == 0 {
					history = ""
				}
				b.dropDeleted(ctx, batch.Deleted)
			}
			b.ackCheckpoints(ctx, batch.Checkpoints)
			b.log.LogAttrs(ctx, slog.LevelDebug, "audit_events_consumed",
				slog.String("consumer", consumer), slog.Int("count", len(batch.Entries)))
			for _, e := range batch.Entries {
				if !yield(message(e), nil) {
					return
				}
			}
		}
	}
}

// dropDeleted acknowledges pending ids whose entries were deleted or
// trimmed from the stream: there is nothing left to process.
func (b *Bus) dropDeleted(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	b.log.LogAttrs(ctx, slog.LevelWarn, "audit_pending_deleted",
		slog.String("stream", b.cfg.Stream), slog.String("group", b.cfg.Group), slog.Any("entry_ids", ids))
	if _, err := b.Ack(ctx, ids...); err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "audit_ack_failed", slog.String("error", err.Error()))
	}
}

// ackCheckpoints acknowledges the checkpoints of chained producers: they
// prove the trail whole to a reader of the stream and carry no event.
func (b *Bus) ackCheckpoints(ctx context.Context, cps []streambus.Entry) {
	if len(cps) == 0 {
		return
	}
	ids := make([]string, len(cps))
	for i, c := range cps {
		ids[i] = c.ID
	}
	if _, err := b.Ack(ctx, ids...); err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "audit_ack_failed", slog.String("error", err.Error()))
	}
}

// ended reports whether ctx is done or its deadline has passed: a read
// bounded by that deadline can fail with a timeout an instant before the
// context's own timer marks it done.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Ack acknowledges processed messages by id and returns how many were
// pending.
func (b *Bus) Ack(ctx context.Context, ids ...string) (int64, error) {
	if err := b.oneStream("ack"); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.WriteTimeout)
	defer cancel()
	n, err := b.bus.XAck(ctx, b.cfg.Stream, b.cfg.Group, ids...)
	if err != nil {
		return 0, classify("ack", err)
	}
	b.log.LogAttrs(ctx, slog.LevelDebug, "audit_events_acknowledged",
		slog.String("stream", b.cfg.Stream), slog.Int64("count", n))
	return n, nil
}

// PendingInfo summarises the group's delivered, unacknowledged messages.
type PendingInfo struct {
	// Count of pending messages.
	Count int64
	// Lowest and Highest pending entry ids; "" when Count is 0.
	Lowest, Highest string
	// Consumers maps each consumer to its number of pending messages.
	Consumers map[string]int64
}

// Pending returns the group's pending summary.
func (b *Bus) Pending(ctx context.Context) (PendingInfo, error) {
	if err := b.oneStream("pending"); err != nil {
		return PendingInfo{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.WriteTimeout)
	defer cancel()
	p, err := b.bus.XPending(ctx, b.cfg.Stream, b.cfg.Group)
	if err != nil {
		return PendingInfo{}, classify("pending", err)
	}
	return PendingInfo{Count: p.Count, Lowest: p.Lowest, Highest: p.Highest, Consumers: p.Consumers}, nil
}

// ClaimStale takes over, for consumer, messages that were delivered to any
// consumer of the group and left unacknowledged for at least
// Config.ClaimMinIdle (their consumer crashed, say), and returns the
// verified ones: it scans the pending list until it has Config.Count of
// them or more, or reaches its end. Each Redis call takes at most
// Config.WriteTimeout.
// Process and Ack them like those of Consume. Claimed entries that fail
// verification are logged and stay pending; entries deleted while pending
// are logged and dropped from the pending list.
func (b *Bus) ClaimStale(ctx context.Context, consumer string) ([]Message, error) {
	if err := b.oneStream("claim"); err != nil {
		return nil, err
	}
	var out []Message
	cursor := "0-0"
	for {
		cctx, cancel := context.WithTimeout(ctx, b.cfg.WriteTimeout)
		batch, err := b.bus.XAutoClaim(cctx, streambus.AutoClaimArgs{
			Stream: b.cfg.Stream, Group: b.cfg.Group, Consumer: consumer,
			MinIdle: b.cfg.ClaimMinIdle, Start: cursor, Count: b.cfg.Count,
		})
		cancel()
		if err != nil {
			return out, classify("claim stale", err)
		}
		for _, e := range batch.Entries {
			out = append(out, message(e))
		}
		b.ackCheckpoints(ctx, batch.Checkpoints)
		if len(batch.Deleted) > 0 {
			b.log.LogAttrs(ctx, slog.LevelWarn, "audit_pending_deleted",
				slog.String("stream", b.cfg.Stream), slog.String("group", b.cfg.Group), slog.Any("entry_ids", batch.Deleted))
		}
		cursor = batch.Cursor
		if cursor == "0-0" || int64(len(out)) >= b.cfg.Count {
			return out, nil
		}
	}
}

// TamperedCounts returns how many entries failed verification since New,
// by reason ("signature_mismatch", "unknown_key_id", "malformed_envelope",
// "unsigned").
func (b *Bus) TamperedCounts() map[string]uint64 { return b.bus.TamperedCounts() }
