package redistest

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
)

// Link is a TCP relay on 127.0.0.1 in front of a Redis server that a test
// can cut, the way a network partition cuts a client off: while cut, bytes
// sent either way go unanswered (no RST, no FIN), and new connections are
// accepted but never reach the server. After Restore, new connections work
// again, but every connection that was open at the cut stays silent for
// good, as after a partition during which the peer's address changed: a
// client must notice by its own timeouts (read deadline, TCP keepalive) and
// dial again.
//
// Give clients Addr instead of the server's address. A cluster node started
// by StartCluster with WithLinks announces its link's port, so cluster
// clients route through the links too.
type Link struct {
	ln     net.Listener
	target func() string

	mu      sync.Mutex
	cut     bool
	restore chan struct{} // closed by Restore; replaced by Cut
	closed  chan struct{}
	conns   map[*linkConn]struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

type linkConn struct {
	client, server net.Conn
	dead           bool // open at a cut: never forwards again
}

// NewLink starts a link to the address target returns (called at every new
// connection, so it follows a server that moved) and closes it in t's
// cleanup.
func NewLink(t testing.TB, target func() string) *Link {
	t.Helper()
	l, err := newLink(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func newLink(target func() string) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("redistest: link: %w", err)
	}
	l := &Link{ln: ln, target: target, restore: make(chan struct{}), closed: make(chan struct{}),
		conns: map[*linkConn]struct{}{}}
	close(l.restore)
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Addr is the link's host:port.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Port is the link's port.
func (l *Link) Port() int { return l.ln.Addr().(*net.TCPAddr).Port }

// Cut stops all traffic through the link: open connections go silent for
// good, new ones hang until Restore.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return
	}
	l.cut = true
	l.restore = make(chan struct{})
	for c := range l.conns {
		c.dead = true
	}
}

// Restore lets new connections through again (those open at the cut stay
// silent).
func (l *Link) Restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.cut {
		return
	}
	l.cut = false
	close(l.restore)
}

// Close stops the link and closes every connection through it.
func (l *Link) Close() {
	l.once.Do(func() {
		close(l.closed)
		_ = l.ln.Close()
		l.mu.Lock()
		for c := range l.conns {
			_ = c.client.Close()
			if c.server != nil {
				_ = c.server.Close()
			}
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		cc, err := l.ln.Accept()
		if err != nil {
			return
		}
		c := &linkConn{client: cc}
		l.mu.Lock()
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		l.wg.Add(1)
		go l.serve(c)
	}
}

// wait blocks while the link is cut; it reports false when c must stay
// silent for good (it blocks until Close then) or the link closed.
func (l *Link) wait(c *linkConn) bool {
	for {
		l.mu.Lock()
		dead, restore := c.dead, l.restore
		l.mu.Unlock()
		if dead {
			<-l.closed
			return false
		}
		select {
		case <-l.closed:
			return false
		case <-restore:
			l.mu.Lock()
			cut := l.cut
			l.mu.Unlock()
			if !cut {
				return true
			}
		}
	}
}

func (l *Link) serve(c *linkConn) {
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		_ = c.client.Close()
		if c.server != nil {
			_ = c.server.Close()
		}
	}()
	// A connection made while cut is not dead: it waits for Restore.
	l.mu.Lock()
	c.dead = false
	l.mu.Unlock()
	if !l.wait(c) {
		return
	}
	sc, err := net.Dial("tcp", l.target())
	if err != nil {
		return
	}
	l.mu.Lock()
	c.server = sc
	l.mu.Unlock()
	select {
	case <-l.closed:
		return
	default:
	}
	done := make(chan struct{}, 2)
	go func() { l.pump(c, sc, c.client); done <- struct{}{} }()
	go func() { l.pump(c, c.client, sc); done <- struct{}{} }()
	<-done
	// One side ended: end the other too (unless the link holds it silent,
	// in which case pump blocks until Close anyway).
	_ = c.client.Close()
	_ = sc.Close()
	<-done
}

// pump copies src to dst, holding every chunk while the link is cut.
func (l *Link) pump(c *linkConn, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !l.wait(c) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				// EOF or reset: pass the close on (CloseWrite keeps the
				// other direction's last bytes flowing).
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}
