package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/auditproc/auditproc/internal/integrity"
	"github.com/auditproc/auditproc/internal/streambus"
)

// Spool layout: DIR/lock (flock'ed by the one process using the spool) and
// segment files DIR/<20-digit number>.seg, appended in order and drained
// oldest first. A segment is a run of records:
//
//	length uint32 BE | CRC-32C of the payload uint32 BE | payload
//
// A payload is one batch of signed entries: the record version, stream,
// producer, first sequence number, key id, then (record version 2) the
// envelope version 2 chain's source, first chain seq, prev and the first
// event number, then the entry count and per entry (version 2: its kind)
// its event id, bytes and signature (integers uvarint, strings uvarint
// length then bytes). Version 1 records (envelope version 1, from earlier
// releases) are still drained. Each
// record is fsynced before its events count as spooled. A record cut short
// by a crash at the end of the last segment is dropped when the spool is
// opened (its events never counted as spooled); a bad record anywhere else
// is an error.
const (
	// DefaultSpoolMaxBytes caps the spool's size on disk (1 GiB).
	DefaultSpoolMaxBytes = 1 << 30
	// SpoolSegmentBytes is the size past which a new segment starts.
	SpoolSegmentBytes = 4 << 20

	spoolRecordVersion = 2
	spoolHeader        = 8
	spoolMaxRecord     = 1 << 30
)

// ErrSpoolFull: the spool holds Config.SpoolMaxBytes already; the event was
// not written anywhere. It wraps ErrUnavailable.
var ErrSpoolFull = fmt.Errorf("%w: spool full", ErrUnavailable)

// ErrSpoolCorrupt: a spool record fails its checksum or does not decode.
var ErrSpoolCorrupt = errors.New("audit: spool corrupt")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type spool struct {
	dir    string
	max    int64
	lock   *os.File
	segs   []uint64 // segment numbers, oldest first
	sizes  map[uint64]int64
	total  int64 // bytes of every segment
	events int64 // events not yet drained

	w    *os.File // the last segment, open for appending
	wseg uint64

	// The drain position: rdata is segs[0]'s content, roff the next record.
	rdata   []byte
	roff    int
	rseg    uint64
	peekLen int
	peekN   int
}

func segName(dir string, n uint64) string { return filepath.Join(dir, fmt.Sprintf("%020d.seg", n)) }

// openSpool locks dir (creating it, mode 0700) and scans its segments.
func openSpool(dir string, max int64) (*spool, error) {
	if max <= 0 {
		max = DefaultSpoolMaxBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: spool: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: spool: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("audit: spool %s is in use by another process: one producer per spool directory", dir)
		}
		return nil, fmt.Errorf("audit: spool %s: lock: %w", dir, err)
	}
	s := &spool{dir: dir, max: max, lock: lock, sizes: map[uint64]int64{}}
	st, err := scanSpool(dir, true)
	if err != nil {
		s.close()
		return nil, err
	}
	s.segs, s.total, s.events = st.segs, st.Bytes, st.Events
	for i, n := range st.segs {
		s.sizes[n] = st.sizes[i]
	}
	return s, nil
}

// SpoolStatus is what waits in a spool directory.
type SpoolStatus struct {
	// Dir is the spool directory.
	Dir string `json:"dir"`
	// Segments, Records, Events and Bytes count what waits.
	Segments int   `json:"segments"`
	Records  int   `json:"records"`
	Events   int64 `json:"events"`
	Bytes    int64 `json:"bytes"`
	// Streams counts the waiting events per stream.
	Streams map[string]int64 `json:"streams"`
	// Oldest is the modification time of the oldest segment (zero when
	// empty).
	Oldest time.Time `json:"oldest,omitzero"`
	// InUse: a running producer holds the spool.
	InUse bool `json:"in_use"`
	// TornTail: the last segment ends in a record cut short (a crash while
	// writing it); the next producer drops it, as its events were never
	// reported spooled.
	TornTail bool `json:"torn_tail"`

	segs  []uint64
	sizes []int64
}

// ReadSpoolStatus reads the spool in dir without changing it, with the
// spools of a sharded Producer's other shards (dir/shard-<k>) counted in.
func ReadSpoolStatus(dir string) (SpoolStatus, error) {
	st, err := readOneSpool(dir)
	if err != nil {
		return st, err
	}
	for _, sub := range shardSpools(dir) {
		o, err := readOneSpool(sub)
		if err != nil {
			return st, err
		}
		st.Segments += o.Segments
		st.Records += o.Records
		st.Events += o.Events
		st.Bytes += o.Bytes
		for s, n := range o.Streams {
			st.Streams[s] += n
		}
		if !o.Oldest.IsZero() && (st.Oldest.IsZero() || o.Oldest.Before(st.Oldest)) {
			st.Oldest = o.Oldest
		}
		st.InUse = st.InUse || o.InUse
		st.TornTail = st.TornTail || o.TornTail
	}
	return st, nil
}

// shardSpools lists the spools of shards 1 and up in dir (shard-<k>), in
// shard order.
func shardSpools(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	type sub struct {
		k    int
		path string
	}
	var subs []sub
	for _, e := range ents {
		name, ok := strings.CutPrefix(e.Name(), "shard-")
		if !ok || !e.IsDir() {
			continue
		}
		if k, err := strconv.Atoi(name); err == nil && k > 0 && strconv.Itoa(k) == name {
			subs = append(subs, sub{k, filepath.Join(dir, e.Name())})
		}
	}
	slices.SortFunc(subs, func(a, b sub) int { return a.k - b.k })
	out := make([]string, len(subs))
	for i, s := range subs {
		out[i] = s.path
	}
	return out
}

// readOneSpool is ReadSpoolStatus of dir alone.
func readOneSpool(dir string) (SpoolStatus, error) {
	if _, err := os.Stat(dir); err != nil {
		return SpoolStatus{}, fmt.Errorf("audit: spool: %w", err)
	}
	st, err := scanSpool(dir, false)
	if err != nil {
		return st, err
	}
	if f, err := os.Open(filepath.Join(dir, "lock")); err == nil {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); errors.Is(err, syscall.EWOULDBLOCK) {
			st.InUse = true
		}
		f.Close()
	}
	return st, nil
}

// scanSpool reads every segment; with repair it truncates a torn record at
// the end of the last segment.
func scanSpool(dir string, repair bool) (SpoolStatus, error) {
	st := SpoolStatus{Dir: dir, Streams: map[string]int64{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return st, fmt.Errorf("audit: spool: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		st.segs = append(st.segs, n)
	}
	slices.Sort(st.segs)
	for i, n := range st.segs {
		path := segName(dir, n)
		data, err := os.ReadFile(path)
		if err != nil {
			return st, fmt.Errorf("audit: spool: %w", err)
		}
		if i == 0 {
			if fi, err := os.Stat(path); err == nil {
				st.Oldest = fi.ModTime()
			}
		}
		off := 0
		for off < len(data) {
			b, size, err := decodeRecord(data[off:])
			if err != nil {
				if i == len(st.segs)-1 && errors.Is(err, errTorn) {
					st.TornTail = true
					if repair {
						if err := os.Truncate(path, int64(off)); err != nil {
							return st, fmt.Errorf("audit: spool: drop the torn record of %s: %w", path, err)
						}
						data = data[:off]
					}
					break
				}
				return st, fmt.Errorf("%w: %s at offset %d: %w", ErrSpoolCorrupt, path, off, err)
			}
			st.Records++
			st.Events += int64(eventsOf(b))
			st.Streams[b.Stream] += int64(eventsOf(b))
			off += size
		}
		st.sizes = append(st.sizes, int64(len(data)))
		st.Bytes += int64(len(data))
	}
	st.Segments = len(st.segs)
	return st, nil
}

var errTorn = errors.New("record cut short")

// eventsOf counts a record's events (its chain's checkpoints not counted).
func eventsOf(b *streambus.AppendBatch) int {
	return (&batch{AppendBatch: *b}).countEvents(b.Len())
}

// decodeRecord decodes the record at the start of data and returns it with
// its size.
func decodeRecord(data []byte) (*streambus.AppendBatch, int, error) {
	if len(data) < spoolHeader {
		return nil, 0, errTorn
	}
	n := int(binary.BigEndian.Uint32(data))
	if n > spoolMaxRecord {
		return nil, 0, fmt.Errorf("record length %d", n)
	}
	if len(data) < spoolHeader+n {
		return nil, 0, errTorn
	}
	payload := data[spoolHeader : spoolHeader+n]
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(data[4:]) {
		if len(data) == spoolHeader+n {
			return nil, 0, errTorn // the last record: a write cut short
		}
		return nil, 0, errors.New("CRC mismatch")
	}
	b, err := decodeBatch(payload)
	if err != nil {
		return nil, 0, err
	}
	return b, spoolHeader + n, nil
}

func encodeBatch(b *streambus.AppendBatch) []byte {
	size := spoolHeader + 128 + len(b.Stream) + len(b.Producer) + len(b.KeyID) + len(b.Source) + len(b.Prev)
	for i := range b.Events {
		size += 40 + len(b.EventIDs[i]) + len(b.Events[i]) + len(b.Sigs[i])
	}
	out := make([]byte, spoolHeader, size)
	version := uint64(spoolRecordVersion)
	if b.Source == "" {
		version = 1
	}
	out = binary.AppendUvarint(out, version)
	str := func(s []byte) { out = binary.AppendUvarint(out, uint64(len(s))); out = append(out, s...) }
	str([]byte(b.Stream))
	str([]byte(b.Producer))
	out = binary.AppendUvarint(out, b.FirstSeq)
	str([]byte(b.KeyID))
	if version == 2 {
		str([]byte(b.Source))
		out = binary.AppendUvarint(out, b.ChainSeq)
		str([]byte(b.Prev))
		out = binary.AppendUvarint(out, b.FirstEvent)
	}
	out = binary.AppendUvarint(out, uint64(len(b.Events)))
	for i := range b.Events {
		if version == 2 {
			str([]byte(b.Kinds[i]))
		}
		str([]byte(b.EventIDs[i]))
		str(b.Events[i])
		str(b.Sigs[i])
	}
	binary.BigEndian.PutUint32(out, uint32(len(out)-spoolHeader))
	binary.BigEndian.PutUint32(out[4:], crc32.Checksum(out[spoolHeader:], crcTable))
	return out
}

func decodeBatch(p []byte) (*streambus.AppendBatch, error) {
	bad := errors.New("payload does not decode")
	num := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	str := func() ([]byte, bool) {
		l, ok := num()
		if !ok || l > uint64(len(p)) {
			return nil, false
		}
		s := p[:l:l]
		p = p[l:]
		return s, true
	}
	version, ok := num()
	if !ok || version < 1 || version > spoolRecordVersion {
		return nil, bad
	}
	b := &streambus.AppendBatch{}
	stream, ok1 := str()
	producer, ok2 := str()
	first, ok3 := num()
	kid, ok4 := str()
	if version == 2 {
		src, ok6 := str()
		cseq, ok7 := num()
		prev, ok8 := str()
		fev, ok9 := num()
		if !ok6 || !ok7 || !ok8 || !ok9 || len(src) == 0 || cseq == 0 {
			return nil, bad
		}
		b.Source, b.ChainSeq, b.Prev, b.FirstEvent = string(src), cseq, string(prev), fev
	}
	n, ok5 := num()
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || n > uint64(len(p)) || first == 0 {
		return nil, bad
	}
	b.Stream, b.Producer, b.FirstSeq, b.KeyID = string(stream), string(producer), first, string(kid)
	for range n {
		if version == 2 {
			kind, ok := str()
			if !ok || (string(kind) != integrity.KindEvent && string(kind) != integrity.KindCheckpoint) {
				return nil, bad
			}
			b.Kinds = append(b.Kinds, string(kind))
		}
		id, ok1 := str()
		ev, ok2 := str()
		sig, ok3 := str()
		if !ok1 || !ok2 || !ok3 {
			return nil, bad
		}
		b.EventIDs = append(b.EventIDs, string(id))
		b.Events = append(b.Events, ev)
		b.Sigs = append(b.Sigs, sig)
	}
	if len(p) != 0 {
		return nil, bad
	}
	return b, nil
}

// append writes a record and fsyncs it.
func (s *spool) append(b *streambus.AppendBatch) error {
	rec := encodeBatch(b)
	if s.total+int64(len(rec)) > s.max {
		return fmt.Errorf("%w: %s holds %d bytes and the cap is %d (Config.SpoolMaxBytes, emit --spool-max): %d more events are refused until Redis is back and the spool drains",
			ErrSpoolFull, s.dir, s.total, s.max, b.Len())
	}
	if s.w == nil || s.sizes[s.wseg] >= SpoolSegmentBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	if _, err := s.w.Write(rec); err != nil {
		return s.writeFailed(err)
	}
	if err := s.w.Sync(); err != nil {
		return s.writeFailed(err)
	}
	s.sizes[s.wseg] += int64(len(rec))
	s.total += int64(len(rec))
	s.events += int64(eventsOf(b))
	return nil
}

// writeFailed cuts the segment back to its last whole record, so that a
// half-written record never precedes the next.
func (s *spool) writeFailed(err error) error {
	_ = s.w.Truncate(s.sizes[s.wseg])
	_ = s.w.Close()
	s.w = nil
	return fmt.Errorf("%w: spool %s: %w", ErrUnavailable, s.dir, err)
}

func (s *spool) rotate() error {
	if s.w != nil {
		_ = s.w.Close()
		s.w = nil
	}
	n := uint64(1)
	if len(s.segs) > 0 {
		n = s.segs[len(s.segs)-1]
		if s.sizes[n] >= SpoolSegmentBytes {
			n++
		}
	}
	f, err := os.OpenFile(segName(s.dir, n), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("%w: spool: %w", ErrUnavailable, err)
	}
	if len(s.segs) == 0 || s.segs[len(s.segs)-1] != n {
		s.segs = append(s.segs, n)
		s.sizes[n] = 0
		if d, err := os.Open(s.dir); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	s.w, s.wseg = f, n
	return nil
}

// peek returns the oldest record not drained yet, or nil when the spool is
// empty.
func (s *spool) peek() (*streambus.AppendBatch, error) {
	for len(s.segs) > 0 {
		if s.rdata == nil || s.rseg != s.segs[0] {
			data, err := os.ReadFile(segName(s.dir, s.segs[0]))
			if err != nil {
				return nil, fmt.Errorf("audit: spool: %w", err)
			}
			s.rdata, s.roff, s.rseg = data, 0, s.segs[0]
		}
		if s.roff < len(s.rdata) {
			b, size, err := decodeRecord(s.rdata[s.roff:])
			if err != nil {
				return nil, fmt.Errorf("%w: %s at offset %d: %w", ErrSpoolCorrupt, segName(s.dir, s.rseg), s.roff, err)
			}
			s.peekLen, s.peekN = size, eventsOf(b)
			return b, nil
		}
		// Segment drained. The one being written may have grown since it
		// was read: read it again before deleting it.
		if s.w != nil && s.wseg == s.rseg {
			if fi, err := s.w.Stat(); err == nil && fi.Size() > int64(len(s.rdata)) {
				// Read it again from where the drain is, not from its start.
				data, err := os.ReadFile(segName(s.dir, s.rseg))
				if err != nil {
					return nil, fmt.Errorf("audit: spool: %w", err)
				}
				s.rdata = data
				continue
			}
			_ = s.w.Close()
			s.w = nil
		}
		if err := os.Remove(segName(s.dir, s.rseg)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("audit: spool: %w", err)
		}
		s.total -= s.sizes[s.rseg]
		delete(s.sizes, s.rseg)
		s.segs = s.segs[1:]
		s.rdata = nil
	}
	return nil, nil
}

// ack marks the record peek returned as drained.
func (s *spool) ack() {
	s.roff += s.peekLen
	s.events -= int64(s.peekN)
	s.peekLen, s.peekN = 0, 0
}

// depth is what waits: events and bytes on disk.
func (s *spool) depth() (int64, int64) { return s.events, s.total }

func (s *spool) close() error {
	var errs []error
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // releases the flock
	}
	return errors.Join(errs...)
}
