package streambus

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// rawEntry is one stream entry of a reply: its id and its fields as the flat
// name/value list Redis sends. fields is nil for an entry deleted while
// pending (a history read shows it with no fields).
type rawEntry struct {
	id      string
	fields  []string
	deleted bool
}

// replyError is an error reply from Redis found in a raw reply ("-NOGROUP
// …"). Like go-redis's own error replies it is a redis.Error, so that
// redis.HasErrorPrefix recognises it.
type replyError string

func (e replyError) Error() string { return string(e) }

// RedisError marks replyError as a redis.Error.
func (replyError) RedisError() {}

var _ redis.Error = replyError("")

// errReply is wrapped by every error about a reply that is not the RESP
// shape of a stream read.
var errReply = errors.New("streambus: unexpected reply")

// parseStreamsReply parses the raw RESP2 or RESP3 reply of XREAD or
// XREADGROUP (go-redis's DoRaw) without go-redis's map per entry: the
// fields and the ids are strings sharing raw's memory, which is never
// changed afterwards, so the whole batch costs a few allocations instead of
// about thirteen per entry. Entry ids are copied into one string per batch,
// so that an id kept for long (a failure memory, a log) holds a few bytes
// per entry rather than the whole reply. A null reply (nothing to read) is
// no entries and no error.
func parseStreamsReply(raw []byte, sc *scratch) ([]rawEntry, error) {
	p := respParser{b: raw, sc: sc}
	kind, n, err := p.header()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, p.end()
	}
	// RESP3 answers with a map of stream name → entries, RESP2 with an
	// array of [name, entries] pairs.
	if kind != '%' && kind != '*' {
		return nil, p.unexpected(kind)
	}
	entries := sc.entries[:0]
	for range n {
		if kind == '*' {
			if err := p.array(2); err != nil {
				return nil, err
			}
		}
		if _, err := p.bulk(); err != nil { // the stream name: one stream is read
			return nil, err
		}
		if entries, err = p.entries(entries); err != nil {
			return nil, err
		}
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	ownIDs(entries)
	sc.entries = entries
	return entries, nil
}

// scratch holds a read's working slices, reused from one read to the next:
// the parsed entries, the backing array of their field lists, the
// verdicts. Nothing handed out points into them (entries point into the
// reply), so they are cleared and reused once the batch is sorted.
type scratch struct {
	entries  []rawEntry
	fields   []string
	verdicts []verdict
}

// reset drops the references into the last reply.
func (sc *scratch) reset() {
	clear(sc.entries)
	clear(sc.fields)
	clear(sc.verdicts)
	sc.entries, sc.fields, sc.verdicts = sc.entries[:0], sc.fields[:0], sc.verdicts[:0]
}

// ownIDs copies the entries' ids out of the reply into one allocation.
func ownIDs(entries []rawEntry) {
	total := 0
	for _, e := range entries {
		total += len(e.id)
	}
	arena := make([]byte, 0, total)
	for i := range entries {
		start := len(arena)
		arena = append(arena, entries[i].id...)
		entries[i].id = unsafe.String(unsafe.SliceData(arena[start:]), len(entries[i].id))
	}
}

// ownFields copies an entry's fields out of the reply, in stream order,
// repeated names included, for a tampered entry's forensics.
func ownFields(fields []string) []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = strings.Clone(f)
	}
	return out
}

// parseEntriesReply parses the raw reply of XRANGE or XCLAIM: an array of
// entries. Ids are owned (see parseStreamsReply).
func parseEntriesReply(raw []byte, sc *scratch) ([]rawEntry, error) {
	p := respParser{b: raw, sc: sc}
	entries, err := p.entries(sc.entries[:0])
	if err != nil {
		return nil, err
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	ownIDs(entries)
	sc.entries = entries
	return entries, nil
}

// parseAutoClaimReply parses the raw reply of XAUTOCLAIM: the next cursor,
// the claimed entries and (Redis 7 and later) the ids of pending entries
// that no longer exist.
func parseAutoClaimReply(raw []byte, sc *scratch) (cursor string, entries []rawEntry, deleted []string, err error) {
	p := respParser{b: raw, sc: sc}
	kind, n, err := p.header()
	if err != nil {
		return "", nil, nil, err
	}
	if kind != '*' || n < 2 || n > 3 {
		return "", nil, nil, fmt.Errorf("%w: xautoclaim reply of %q %d elements", errReply, kind, n)
	}
	if cursor, err = p.bulk(); err != nil {
		return "", nil, nil, err
	}
	cursor = strings.Clone(cursor)
	if entries, err = p.entries(sc.entries[:0]); err != nil {
		return "", nil, nil, err
	}
	if n == 3 {
		kind, nd, err := p.header()
		if err != nil {
			return "", nil, nil, err
		}
		if kind != '*' || nd < 0 || nd > len(p.b)-p.pos {
			return "", nil, nil, p.unexpected(kind)
		}
		for range nd {
			id, err := p.bulk()
			if err != nil {
				return "", nil, nil, err
			}
			deleted = append(deleted, strings.Clone(id))
		}
	}
	if err := p.end(); err != nil {
		return "", nil, nil, err
	}
	ownIDs(entries)
	sc.entries = entries
	return cursor, entries, deleted, nil
}

// respParser reads RESP from a complete reply.
type respParser struct {
	b   []byte
	pos int
	sc  *scratch
}

// header reads a type line and returns its type and its count or length;
// n is -1 for a null ("_", "*-1", "$-1"). An error reply is returned as a
// replyError.
func (p *respParser) header() (kind byte, n int, err error) {
	rest := p.b[p.pos:]
	i := 0
	for i+1 < len(rest) && (rest[i] != '\r' || rest[i+1] != '\n') {
		i++
	}
	if i == 0 || i+1 >= len(rest) {
		return 0, 0, fmt.Errorf("%w: truncated at byte %d", errReply, p.pos)
	}
	line := rest[:i]
	p.pos += i + 2
	switch line[0] {
	case '-':
		return '-', 0, replyError(line[1:])
	case '_':
		return '_', -1, nil
	}
	n, err = strconv.Atoi(unsafe.String(unsafe.SliceData(line[1:]), len(line)-1))
	if err != nil || n < -1 {
		return 0, 0, fmt.Errorf("%w: bad header %.20q", errReply, line)
	}
	return line[0], n, nil
}

func (p *respParser) unexpected(kind byte) error {
	return fmt.Errorf("%w: type %q at byte %d", errReply, kind, p.pos)
}

// array reads an array header of exactly n elements.
func (p *respParser) array(n int) error {
	kind, got, err := p.header()
	if err != nil {
		return err
	}
	if kind != '*' || got != n {
		return fmt.Errorf("%w: want an array of %d, got %q %d", errReply, n, kind, got)
	}
	return nil
}

// bulk reads a bulk string as a view into the reply.
func (p *respParser) bulk() (string, error) {
	kind, n, err := p.header()
	if err != nil {
		return "", err
	}
	if kind != '$' || n < 0 {
		return "", p.unexpected(kind)
	}
	if n > len(p.b)-p.pos-2 {
		return "", fmt.Errorf("%w: truncated string at byte %d", errReply, p.pos)
	}
	end := p.pos + n
	if p.b[end] != '\r' || p.b[end+1] != '\n' {
		return "", fmt.Errorf("%w: truncated string at byte %d", errReply, p.pos)
	}
	s := unsafe.String(unsafe.SliceData(p.b[p.pos:]), n)
	p.pos = end + 2
	return s, nil
}

// entries reads an array of entries, [id, [name, value, …]] each, appending
// them to out.
func (p *respParser) entries(out []rawEntry) ([]rawEntry, error) {
	kind, n, err := p.header()
	if err != nil {
		return out, err
	}
	if kind != '*' || n < 0 {
		return out, p.unexpected(kind)
	}
	// An entry takes at least 4 bytes ("*2\r\n"): a larger count than the
	// rest of the reply can hold is not believed (nor allocated for).
	if n > (len(p.b)-p.pos)/4 {
		return out, fmt.Errorf("%w: %d entries announced at byte %d, more than the reply holds", errReply, n, p.pos)
	}
	out = slices.Grow(out, n)
	// One backing array for the fields of the whole batch (an envelope has
	// four fields, eight strings).
	backing := slices.Grow(p.sc.fields, 8*n)
	for i := range n {
		if err := p.array(2); err != nil {
			return out, err
		}
		var e rawEntry
		if e.id, err = p.bulk(); err != nil {
			return out, err
		}
		kind, nf, err := p.header()
		if err != nil {
			return out, err
		}
		switch {
		case nf < 0:
			e.deleted = true
		case kind == '*':
			if rest := (len(p.b) - p.pos) / 4; len(backing)+nf > cap(backing) && nf > 0 && nf <= rest && n-i <= rest/nf {
				// More fields than foreseen (envelope v2 has eight):
				// room for as many in each entry left, when the rest
				// of the reply can hold them (a field takes at least
				// 4 bytes).
				backing = slices.Grow(backing, nf*(n-i))
			}
			start := len(backing)
			for range nf {
				s, err := p.bulk()
				if err != nil {
					return out, err
				}
				backing = append(backing, s)
			}
			e.fields = backing[start:len(backing):len(backing)]
		default:
			return out, p.unexpected(kind)
		}
		out = append(out, e)
	}
	p.sc.fields = backing
	return out, nil
}

// end checks that the whole reply was read.
func (p *respParser) end() error {
	if p.pos != len(p.b) {
		return fmt.Errorf("%w: %d bytes after the reply", errReply, len(p.b)-p.pos)
	}
	return nil
}

// replyBuffer receives a raw reply (go-redis's DoRawWriteTo). It reads each
// bulk string straight into its buffer (ReadFrom), without io.Copy's
// intermediate buffer; it grows by doubling if its capacity was too small.
type replyBuffer struct{ b []byte }

func (w *replyBuffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// ReadFrom reads r to its end (go-redis hands it a bulk string's bytes).
func (w *replyBuffer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if len(w.b) == cap(w.b) {
			w.b = slices.Grow(w.b, max(512, cap(w.b)))
		}
		n, err := r.Read(w.b[len(w.b):cap(w.b)])
		w.b = w.b[:len(w.b)+n]
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
