package processor

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The journal is how a restart tells the entries that were running when the
// process died from the innocent ones around them. Each process keeps one
// small file in the state directory, mapped into memory and locked while it
// runs, with one slot per worker naming the entry that worker is running.
// Writing a slot is a store into mapped memory (no system call, no fsync:
// the kernel keeps the page when the process dies, however it dies). At
// start, the journals that no live process locks are read: their entries
// are charged one attempt (see recoverCrashed), and the files removed.
//
// Layout: journalMagic, a uint32 header length, then stream, group and
// consumer, each a uint32 length and its bytes; slots start at the header
// length rounded up to slotSize. A slot is a length byte (0: idle) and the
// entry id.
const (
	journalMagic = "auditproc journal 1\n"
	slotSize     = 64
	journalExt   = ".journal"
)

// journal is this process's journal. A nil *journal notes nothing.
type journal struct {
	path  string
	f     *os.File
	mem   []byte
	slots int // offset of slot 0
}

// journalHeader encodes the header identifying a journal's pipeline.
func journalHeader(stream, group, consumer string) []byte {
	h := []byte(journalMagic)
	h = binary.LittleEndian.AppendUint32(h, 0) // patched below
	for _, s := range []string{stream, group, consumer} {
		h = binary.LittleEndian.AppendUint32(h, uint32(len(s)))
		h = append(h, s...)
	}
	binary.LittleEndian.PutUint32(h[len(journalMagic):], uint32(len(h)))
	return h
}

// parseJournal returns the stream, group and running entry ids of a
// journal's content.
func parseJournal(b []byte) (stream, group string, ids []string, err error) {
	bad := errors.New("not an auditproc journal")
	if !strings.HasPrefix(string(b), journalMagic) || len(b) < len(journalMagic)+4 {
		return "", "", nil, bad
	}
	hlen := int(binary.LittleEndian.Uint32(b[len(journalMagic):]))
	if hlen > len(b) {
		return "", "", nil, bad
	}
	var names []string
	for off := len(journalMagic) + 4; len(names) < 3; {
		if off+4 > hlen {
			return "", "", nil, bad
		}
		n := int(binary.LittleEndian.Uint32(b[off:]))
		off += 4
		if n > hlen-off {
			return "", "", nil, bad
		}
		names = append(names, string(b[off:off+n]))
		off += n
	}
	for off := roundUp(hlen, slotSize); off+slotSize <= len(b); off += slotSize {
		if n := int(b[off]); n > 0 && n < slotSize {
			ids = append(ids, string(b[off+1:off+1+n]))
		}
	}
	return names[0], names[1], ids, nil
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// journalName is the file name of a consumer's journal for stream and
// group: readable, and distinct per pipeline.
func journalName(stream, group, consumer string) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, consumer)
	if len(safe) > 64 {
		safe = safe[:64]
	}
	return safe + journalTag(stream, group)
}

// journalTag ends the journal names of stream and group ("-<12 hex>", a
// ".<pid>" may follow): the journals of one pipeline are told from the
// others' by name, before any is opened (a replica's shards recover
// theirs side by side, and must not lock each other's).
func journalTag(stream, group string) string {
	sum := sha256.Sum256([]byte(stream + "\x00" + group))
	return "-" + hex.EncodeToString(sum[:6])
}

// isJournalOf reports whether the journal file path is named for the
// pipeline whose tag is tag.
func isJournalOf(path, tag string) bool {
	name := strings.TrimSuffix(filepath.Base(path), journalExt)
	if strings.HasSuffix(name, tag) {
		return true
	}
	i := strings.LastIndexByte(name, '.')
	return i > 0 && strings.HasSuffix(name[:i], tag)
}

// begin notes that worker slot runs entry id.
func (j *journal) begin(slot int, id string) {
	if j == nil || len(id) >= slotSize {
		return
	}
	off := j.slots + slot*slotSize
	copy(j.mem[off+1:], id)
	j.mem[off] = byte(len(id)) // last: a slot is never half-written
}

// end notes that worker slot runs nothing.
func (j *journal) end(slot int) {
	if j != nil {
		j.mem[j.slots+slot*slotSize] = 0
	}
}

// journalError is a state directory that cannot hold journals.
func journalError(dir string, err error) error {
	return fmt.Errorf("processor: state directory %q (consumer.state_dir): %w", dir, err)
}

// journalPath is the path of a journal in dir.
func journalPath(dir, name string) string { return filepath.Join(dir, name+journalExt) }
