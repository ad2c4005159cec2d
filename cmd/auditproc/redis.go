package main

import (
	"github.com/redis/go-redis/v9"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/redisconn"
)

// redisClient builds the go-redis client the configuration describes
// (standalone, Sentinel or Cluster; see internal/redisconn). Timeouts are
// always finite. An error is the configuration's (exit 2).
func redisClient(cfg *config.Config) (redis.UniversalClient, error) {
	rdb, _, err := redisconn.New(cfg)
	return rdb, err
}
