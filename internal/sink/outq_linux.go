package sink

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// waitAcked waits until the peer's TCP stack acknowledged every byte
// written to c (the send queue, SIOCOUTQ, is empty) or deadline passed. It
// narrows what a syslog collector can lose to what its own process had not
// yet read when it died.
func waitAcked(c *net.TCPConn, deadline time.Time) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	pause := 50 * time.Microsecond
	for {
		var n int
		var ierr error
		if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ierr != nil {
			return false
		}
		if n == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}
