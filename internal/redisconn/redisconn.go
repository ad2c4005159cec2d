package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/config"
)

// Mode is how auditproc reaches Redis.
type Mode int

const (
	// Standalone is one server (or a managed endpoint that looks like one).
	Standalone Mode = iota
	// Cluster is Redis Cluster: keys spread over 16384 slots.
	Cluster
	// Sentinel is a master found through sentinels, failed over by them.
	Sentinel
)

func (m Mode) String() string {
	switch m {
	case Cluster:
		return "cluster"
	case Sentinel:
		return "sentinel"
	default:
		return "standalone"
	}
}

// ClusterReloadInterval is how often a cluster client reloads its slot map
// while it sends commands. go-redis reloads it on MOVED and ASK only (and
// otherwise after a minute), so without this a client keeps dialing a
// killed master long after its replica took over.
const ClusterReloadInterval = time.Second

// KeepAlive is the TCP keepalive of every connection: probes after 5s of
// silence, 2s apart, the connection dropped after 3 unanswered, so a
// connection cut off by the network fails within about 11s even when no
// command waits on it.
var KeepAlive = net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3}

// ErrURL is wrapped by every error about redis.url (which is never quoted:
// it may hold a password).
var ErrURL = errors.New("redisconn: invalid redis.url")

// Target is where and how to connect, resolved from config.Redis.
type Target struct {
	Mode       Mode
	Addrs      []string // the server, the cluster seeds or the sentinels
	Network    string   // "tcp" or "unix"
	MasterName string   // Sentinel
	DB         int
	Username   string
	Password   string
	TLS        *tls.Config
}

// Resolve reads r (and password, which wins over one in the URL) into a
// Target. It touches neither the network nor Redis; errors name the
// configuration key.
func Resolve(r config.Redis, password string) (Target, error) {
	var t Target
	if r.URL != "" {
		var err error
		if t, err = parseURL(r.URL); err != nil {
			return Target{}, err
		}
	}
	if len(r.Cluster.Addrs) > 0 {
		if t.Mode == Sentinel {
			return Target{}, &config.FieldError{Key: "redis.cluster.addrs", Msg: "cannot be combined with a redis+sentinel:// URL"}
		}
		t.Mode, t.Addrs, t.Network = Cluster, r.Cluster.Addrs, "tcp"
	}
	if r.Sentinel.MasterName != "" || len(r.Sentinel.Addrs) > 0 {
		if len(r.Cluster.Addrs) > 0 || t.Mode == Cluster {
			return Target{}, &config.FieldError{Key: "redis.sentinel", Msg: "cannot be combined with a cluster (redis.cluster.addrs or a cluster URL): choose one mode"}
		}
		if r.Sentinel.MasterName == "" {
			return Target{}, &config.FieldError{Key: "redis.sentinel.master_name", Msg: "is required with redis.sentinel.addrs"}
		}
		t.Mode, t.MasterName, t.Network = Sentinel, r.Sentinel.MasterName, "tcp"
		if len(r.Sentinel.Addrs) > 0 {
			t.Addrs = r.Sentinel.Addrs
		} else if r.URL == "" || strings.HasPrefix(r.URL, "unix:") {
			return Target{}, &config.FieldError{Key: "redis.sentinel.addrs", Msg: "is required with redis.sentinel.master_name (the sentinels' host:port)"}
		}
	}
	if t.Mode == Cluster && t.DB != 0 {
		return Target{}, &config.FieldError{Key: "redis.url", Msg: "names database " + strconv.Itoa(t.DB) + ", but Redis Cluster has only database 0"}
	}
	if len(t.Addrs) == 0 {
		return Target{}, &config.FieldError{Key: "redis.url", Msg: "is empty: give a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL"}
	}
	for i, a := range t.Addrs {
		if t.Network == "unix" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return Target{}, &config.FieldError{Key: addrKey(t.Mode, r, i), Msg: fmt.Sprintf("%q is not host:port", a)}
		}
	}
	if password != "" {
		t.Password = password
	}
	if r.TLS.Enabled || r.TLS.CAFile != "" || r.TLS.CertFile != "" || r.TLS.KeyFile != "" {
		tc, err := tlsConfig(r.TLS)
		if err != nil {
			return Target{}, err
		}
		if tc.ServerName == "" && t.TLS != nil {
			tc.ServerName = t.TLS.ServerName
		}
		t.TLS = tc
	}
	return t, nil
}

func addrKey(m Mode, r config.Redis, i int) string {
	switch {
	case m == Cluster && len(r.Cluster.Addrs) > 0:
		return fmt.Sprintf("redis.cluster.addrs[%d]", i)
	case m == Sentinel && len(r.Sentinel.Addrs) > 0:
		return fmt.Sprintf("redis.sentinel.addrs[%d]", i)
	}
	return "redis.url"
}

// parseURL reads the URL forms listed in the package documentation.
func parseURL(raw string) (Target, error) {
	bad := func(msg string) error {
		return &config.FieldError{Key: "redis.url", Msg: msg + " (" + ErrURL.Error() + ")"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Target{}, bad("is not a URL")
	}
	t := Target{Network: "tcp"}
	scheme, kind, _ := strings.Cut(u.Scheme, "+")
	switch scheme {
	case "redis", "rediss", "unix":
	default:
		return Target{}, bad("must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://")
	}
	if u.User != nil {
		t.Username = u.User.Username()
		t.Password, _ = u.User.Password()
	}
	if scheme == "unix" {
		if kind != "" {
			return Target{}, bad("unix:// takes no +" + kind)
		}
		if u.Path == "" {
			return Target{}, bad("unix:// needs a socket path")
		}
		t.Network, t.Addrs = "unix", []string{u.Path}
		if db := u.Query().Get("db"); db != "" {
			if t.DB, err = strconv.Atoi(db); err != nil || t.DB < 0 {
				return Target{}, bad("db must be a whole number")
			}
		}
		return t, nil
	}
	hosts := strings.Split(u.Host, ",")
	for _, h := range hosts {
		if h == "" {
			return Target{}, bad("has an empty host")
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, defaultPort(kind))
		}
		t.Addrs = append(t.Addrs, h)
	}
	q := u.Query()
	t.Addrs = append(t.Addrs, q["addr"]...)
	for k := range q {
		if k != "addr" && k != "db" {
			return Target{}, bad("has the unknown parameter " + strconv.Quote(k) + " (known: addr, db)")
		}
	}
	path := strings.Trim(u.Path, "/")
	switch kind {
	case "sentinel":
		t.Mode = Sentinel
		name, db, _ := strings.Cut(path, "/")
		if name == "" {
			return Target{}, bad("redis+sentinel:// needs the master name as its path: redis+sentinel://host:26379,host2:26379/mymaster[/db]")
		}
		t.MasterName, path = name, db
	case "cluster":
		t.Mode = Cluster
	case "":
		if len(t.Addrs) > 1 {
			t.Mode = Cluster // a seed list
		}
	default:
		return Target{}, bad("has the unknown scheme variant +" + kind + " (known: +sentinel, +cluster)")
	}
	if d := q.Get("db"); d != "" {
		path = d
	}
	if path != "" {
		if t.DB, err = strconv.Atoi(path); err != nil || t.DB < 0 {
			return Target{}, bad("database must be a whole number")
		}
	}
	if scheme == "rediss" {
		host, _, _ := net.SplitHostPort(t.Addrs[0])
		t.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	}
	return t, nil
}

func defaultPort(kind string) string {
	if kind == "sentinel" {
		return "26379"
	}
	return "6379"
}

func tlsConfig(t config.TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, &config.FieldError{Key: "redis.tls.ca_file", Msg: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &config.FieldError{Key: "redis.tls.ca_file", Msg: t.CAFile + " holds no PEM certificate"}
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, &config.FieldError{Key: "redis.tls.cert_file", Msg: "with redis.tls.key_file: " + err.Error()}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Timeouts of a client; zero fields take the config package's defaults.
type Timeouts struct {
	Dial, IO time.Duration
	// Shards is the trail's shard count: each shard's loop holds a blocking
	// read and a few more connections at once, so the pool (per node, on a
	// cluster) grows by connsPerShard per shard past go-redis's default.
	Shards int
}

// connsPerShard is how many connections one shard's processor may use at
// once: its blocking read, a commit, a reclaim sweep and a gauge or
// checkpoint.
const connsPerShard = 4

// New builds the client for the configuration: cfg.Redis with
// cfg.RedisPassword.
func New(cfg *config.Config) (redis.UniversalClient, Mode, error) {
	t, err := Resolve(cfg.Redis, cfg.RedisPassword)
	if err != nil {
		return nil, Standalone, err
	}
	return t.Client(Timeouts{Dial: cfg.Redis.DialTimeout, IO: cfg.Redis.IOTimeout, Shards: cfg.ShardCount()}), t.Mode, nil
}

// NewFromURL builds a client from a URL alone (the audit package's
// RedisURL), with the given timeouts.
func NewFromURL(rawURL, password string, to Timeouts) (redis.UniversalClient, Mode, error) {
	t, err := Resolve(config.Redis{URL: rawURL}, password)
	if err != nil {
		return nil, Standalone, err
	}
	return t.Client(to), t.Mode, nil
}

// Client builds the go-redis client of the target. Every timeout is
// finite: blocking reads get their block time on top of the I/O timeout
// (go-redis adds it), and a context deadline earlier than that wins.
func (t Target) Client(to Timeouts) redis.UniversalClient {
	if to.Dial <= 0 {
		to.Dial = config.DefaultDialTimeout
	}
	if to.IO <= 0 {
		to.IO = config.DefaultIOTimeout
	}
	o := &redis.UniversalOptions{
		Addrs:        t.Addrs,
		DB:           t.DB,
		Username:     t.Username,
		Password:     t.Password,
		MasterName:   t.MasterName,
		TLSConfig:    t.TLS,
		DialTimeout:  to.Dial,
		ReadTimeout:  to.IO,
		WriteTimeout: to.IO,
		PoolTimeout:  to.IO + time.Second,
		MaxRetries:   1,
		// One dial per attempt: callers retry with their own backoff, and
		// go-redis's default of five dials makes a dead server slow to
		// report.
		DialerRetries:         1,
		DialerRetryTimeout:    min(to.Dial/10, 100*time.Millisecond),
		ContextTimeoutEnabled: true,
		Dialer:                dialer(to.Dial, t.TLS),
	}
	if to.Shards > 1 {
		o.PoolSize = 10*runtime.GOMAXPROCS(0) + connsPerShard*to.Shards
	}
	switch t.Mode {
	case Cluster:
		co := o.Cluster()
		co.ClusterStateReloadInterval = ClusterReloadInterval
		// Redirections during a resharding or failover: MOVED and ASK are
		// followed at once, TRYAGAIN and CLUSTERDOWN with backoff.
		co.MaxRedirects = 8
		return redis.NewClusterClient(co)
	case Sentinel:
		return redis.NewFailoverClient(o.Failover())
	default:
		so := o.Simple()
		so.Network = t.Network
		return redis.NewClient(so)
	}
}

// dialer dials with KeepAlive and, when tc is set, TLS.
func dialer(timeout time.Duration, tc *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := &net.Dialer{Timeout: timeout, KeepAliveConfig: KeepAlive}
		if tc == nil {
			return d.DialContext(ctx, network, addr)
		}
		c := tc.Clone()
		if c.ServerName == "" {
			c.ServerName, _, _ = net.SplitHostPort(addr)
		}
		td := &tls.Dialer{NetDialer: d, Config: c}
		return td.DialContext(ctx, network, addr)
	}
}
