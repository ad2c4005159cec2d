package host

import "syscall"

// newGuestMemory reserves max bytes of address space, none of it
// accessible yet and with no swap or commit charge (MAP_NORESERVE): a page
// counts towards the process's memory only once the guest touches it, and
// is given back to the system as soon as the memory is released.
func newGuestMemory(max uint64) *guestMemory {
	if max == 0 {
		return heapMemory(0)
	}
	b, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return heapMemory(max)
	}
	return &guestMemory{buf: b, reserve: max}
}

// commit makes buf[:size] accessible. Wasm pages (64 KiB) are whole OS
// pages, so the range is page-aligned.
func (m *guestMemory) commit(size uint64) bool {
	return syscall.Mprotect(m.buf[m.committed:size], syscall.PROT_READ|syscall.PROT_WRITE) == nil
}

func (m *guestMemory) unmap() { _ = syscall.Munmap(m.buf) }
