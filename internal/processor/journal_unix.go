//go:build unix

package processor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// openJournal creates, maps and locks this process's journal with slots
// worker slots. A journal of the same name that a live process locks (two
// processes running as one consumer) makes it take a name of its own.
func openJournal(dir, stream, group, consumer string, slots int) (*journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, journalError(dir, err)
	}
	name := journalName(stream, group, consumer)
	path := journalPath(dir, name)
	f, err := lockedFile(path)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		path = journalPath(dir, fmt.Sprintf("%s.%d", name, os.Getpid()))
		f, err = lockedFile(path)
	}
	if err != nil {
		return nil, journalError(dir, err)
	}
	header := journalHeader(stream, group, consumer)
	size := roundUp(len(header), slotSize) + slots*slotSize
	if err := f.Truncate(0); err != nil {
		_ = f.Close()
		return nil, journalError(dir, err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		_ = f.Close()
		return nil, journalError(dir, err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		_ = f.Close()
		return nil, journalError(dir, err)
	}
	copy(mem, header)
	return &journal{path: path, f: f, mem: mem, slots: roundUp(len(header), slotSize)}, nil
}

// lockedFile opens path, creating it, with an exclusive lock that fails at
// once (EWOULDBLOCK) when another process holds it.
func lockedFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// close removes the journal: nothing runs any more.
func (j *journal) close() {
	if j == nil {
		return
	}
	_ = os.Remove(j.path)
	_ = syscall.Munmap(j.mem)
	_ = j.f.Close()
}

// crashedJournals reads the journals in dir that no live process holds and
// that belong to stream and group, and returns the entries they name as
// running. done removes those journals (call it once the entries are
// charged); until then they stay locked.
func crashedJournals(dir, stream, group string) (ids []string, done func(), err error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+journalExt))
	if err != nil {
		return nil, nil, journalError(dir, err)
	}
	var held []*os.File
	var remove []string
	done = func() {
		for _, p := range remove {
			_ = os.Remove(p)
		}
		for _, f := range held {
			_ = f.Close()
		}
	}
	tag := journalTag(stream, group)
	for _, path := range paths {
		if !isJournalOf(path, tag) {
			continue // another pipeline's (or another shard's)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue // removed meanwhile
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			_ = f.Close() // its process runs
			continue
		}
		// Another process may have recovered and removed it just before
		// the lock was ours: only the file still at path counts.
		fi, err1 := f.Stat()
		pi, err2 := os.Stat(path)
		content, err3 := io.ReadAll(f)
		if err1 != nil || err2 != nil || err3 != nil || !os.SameFile(fi, pi) {
			_ = f.Close()
			continue
		}
		s, g, running, err := parseJournal(content)
		if err != nil || s != stream || g != group {
			_ = f.Close() // another pipeline's: its own processes recover it
			continue
		}
		ids = append(ids, running...)
		held = append(held, f)
		remove = append(remove, path)
	}
	return ids, done, nil
}
