package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/config"
)

// redisClient builds the go-redis universal client the configuration
// describes: a single node from the URL, Sentinel with sentinel.master_name,
// or Cluster with cluster.addrs. Timeouts are always finite.
func redisClient(cfg *config.Config) (redis.UniversalClient, error) {
	r := cfg.Redis
	opts := &redis.UniversalOptions{
		DialTimeout:  r.DialTimeout,
		ReadTimeout:  r.IOTimeout,
		WriteTimeout: r.IOTimeout,
		MaxRetries:   1,
		// Blocking reads carry their own deadline (block + read timeout).
		ContextTimeoutEnabled: true,
	}
	if r.URL != "" {
		u, err := redis.ParseURL(r.URL)
		if err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		opts.Addrs = []string{u.Addr}
		opts.DB = u.DB
		opts.Username = u.Username
		opts.Password = u.Password
		opts.TLSConfig = u.TLSConfig
	}
	if len(r.Cluster.Addrs) > 0 {
		opts.Addrs = r.Cluster.Addrs
		opts.IsClusterMode = true
	}
	if r.Sentinel.MasterName != "" {
		opts.MasterName = r.Sentinel.MasterName
		if len(r.Sentinel.Addrs) > 0 {
			opts.Addrs = r.Sentinel.Addrs
		}
	}
	if cfg.RedisPassword != "" {
		opts.Password = cfg.RedisPassword
	}
	if r.TLS.Enabled || r.TLS.CAFile != "" || r.TLS.CertFile != "" {
		tc, err := tlsConfig(r.TLS)
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = tc
	}
	return redis.NewUniversalClient(opts), nil
}

func tlsConfig(t config.TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
