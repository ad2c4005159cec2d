//go:build !linux

package host

func newGuestMemory(max uint64) *guestMemory { return heapMemory(max) }

func (m *guestMemory) commit(uint64) bool { return false }

func (m *guestMemory) unmap() {}
