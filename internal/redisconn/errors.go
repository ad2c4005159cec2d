package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/redis/go-redis/v9"
)

// permanentPrefixes are the Redis error codes no retry cures: the
// credentials or the ACL rules must change first.
var permanentPrefixes = []string{
	"WRONGPASS", // wrong user or password
	"NOAUTH",    // the server wants a password and got none
	"NOPERM",    // the ACL user may not run a command or touch a key
}

// IsPermanent reports whether err will stay whatever auditproc retries:
// WRONGPASS, NOAUTH, NOPERM; a password sent to a server that has none
// ("ERR AUTH ... called without any password configured"); cluster mode
// against a server without cluster support; a server that does not speak
// the Redis protocol; a TLS certificate that does not verify or a TLS
// handshake with a server that does not speak TLS. Everything else
// (network errors, timeouts, LOADING, failover and resharding errors) is
// transient. A nil error is not permanent.
func IsPermanent(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *PermanentError
	if errors.As(err, &pe) {
		return true
	}
	for _, p := range permanentPrefixes {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		// Server replies without a code of their own (ERR), recognised by
		// their documented text.
		return strings.Contains(msg, "called without any password configured") ||
			strings.Contains(msg, "cluster support disabled") ||
			strings.Contains(msg, "invalid username-password pair")
	}
	var (
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalid    x509.CertificateInvalidError
		verify     *tls.CertificateVerificationError
		recordHdr  tls.RecordHeaderError
		alert      tls.AlertError
		netOpError *net.OpError
	)
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.As(err, &verify), errors.As(err, &recordHdr), errors.As(err, &alert):
		return true
	case errors.As(err, &netOpError):
		return false
	}
	// go-redis's protocol reader has no typed errors; these are the
	// messages it gives when the peer's reply is not RESP (an HTTP server,
	// an SMTP banner, ...).
	msg := err.Error()
	return strings.HasPrefix(msg, "redis: can't parse") || strings.HasPrefix(msg, "redis: invalid reply") ||
		strings.HasPrefix(msg, "redis: got") && strings.Contains(msg, "elements in cluster info")
}

// PermanentError is returned by Check for an error no retry cures; it says
// what to do.
type PermanentError struct {
	Mode Mode
	Err  error
}

func (e *PermanentError) Error() string {
	return fmt.Sprintf("redis (%s mode): %v: this does not go away by retrying; check redis.url, the user, the password (AUDITPROC_REDIS_PASSWORD or redis.password_file), its ACL rules and redis.tls", e.Mode, e.Err)
}

func (e *PermanentError) Unwrap() error { return e.Err }

// Check sends one PING through c (to every master of a cluster), then
// XINFO STREAM on each of streams (what the ACL user may do with them
// shows without changing anything; a stream that does not exist yet is
// fine). It returns a *PermanentError when an answer shows that retrying
// cannot help, the plain error when Redis is only unreachable for now, nil
// when it answered.
func Check(ctx context.Context, c redis.UniversalClient, mode Mode, streams ...string) error {
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() })
		if err == nil {
			err = cc.Ping(ctx).Err()
		}
	} else {
		err = c.Ping(ctx).Err()
	}
	for _, s := range streams {
		if err != nil {
			break
		}
		if e := c.XInfoStream(ctx, s).Err(); IsPermanent(e) {
			err = fmt.Errorf("XINFO STREAM %s: %w", s, e)
		}
	}
	if IsPermanent(err) {
		return &PermanentError{Mode: mode, Err: err}
	}
	return err
}
