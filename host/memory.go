package host

import (
	"context"
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// guestMemory is an instance's linear memory, mapped outside the Go heap
// where the platform allows (newGuestMemory): the whole memory limit is
// reserved as address space at once, so growing the memory only makes more
// of it accessible, without copying it, and neither the Go heap nor the
// garbage collector's target grows with the guests' memories.
//
// Two parties hold it: wazero, until it closes the module (Free), and the
// instance, until it is closed or its plugin is; the memory is released
// when both let go. A module closed by Plugin.Close while a call runs in it
// on another goroutine thus keeps its memory until that call has returned
// and the worker closes the instance.
type guestMemory struct {
	buf       []byte      // mapped: the whole reservation, [committed:] inaccessible; heap: the memory
	committed uint64      // mapped: how much of buf is accessible
	reserve   uint64      // the most Reallocate gives
	heap      bool        // buf is Go memory: no mapping could be had
	freed     atomic.Bool // wazero let go
	refs      atomic.Int32
}

// withMemory returns ctx with the allocator that gives inst its memory.
func (inst *instance) withMemory(ctx context.Context) context.Context {
	return experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(func(_, max uint64) experimental.LinearMemory {
		m := newGuestMemory(max)
		m.refs.Store(2)
		inst.memory = m
		return m
	}))
}

// Reallocate returns the memory grown to size bytes, or nil past the
// reservation.
func (m *guestMemory) Reallocate(size uint64) []byte {
	if size > m.reserve {
		return nil
	}
	if m.heap {
		if size > uint64(len(m.buf)) {
			m.buf = append(m.buf, make([]byte, size-uint64(len(m.buf)))...)
		}
		return m.buf[:size:size]
	}
	if size > m.committed {
		if !m.commit(size) {
			return nil
		}
		m.committed = size
	}
	return m.buf[:size:size]
}

// Free is wazero's release.
func (m *guestMemory) Free() {
	if m.freed.CompareAndSwap(false, true) {
		m.release()
	}
}

// release drops one holder and frees the memory after the last.
func (m *guestMemory) release() {
	if m.refs.Add(-1) == 0 {
		if !m.heap {
			m.unmap()
		}
		m.buf = nil
	}
}

// heapMemory is a guestMemory in the Go heap, for where no mapping can be
// had: it grows by reallocation, as wazero's own memories do.
func heapMemory(reserve uint64) *guestMemory {
	return &guestMemory{heap: true, reserve: reserve}
}
