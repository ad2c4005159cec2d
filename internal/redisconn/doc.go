// Package redisconn builds the Redis client of every auditproc command and
// of the audit package, and checks up front what would otherwise fail at
// run time.
//
// One configuration (config.Redis, or a URL alone) gives a go-redis
// UniversalClient in one of three modes:
//
//   - Standalone: redis://[user[:password]@]host:port[/db], rediss:// (TLS),
//     unix:///path/redis.sock[?db=N].
//   - Cluster: redis.cluster.addrs, or a seed list as a URL:
//     redis+cluster://host1:port1,host2:port2 (rediss+cluster:// for TLS), or
//     redis://host1:port1?addr=host2:port2&addr=host3:port3.
//   - Sentinel: redis.sentinel.master_name with redis.sentinel.addrs, or
//     redis+sentinel://[user[:password]@]host1:port1,host2:port2/master[/db]
//     (rediss+sentinel:// for TLS to the data nodes).
//
// The password comes from AUDITPROC_REDIS_PASSWORD or redis.password_file
// (config.Load), and wins over one in the URL. Every client has finite
// dial, read and write timeouts, TCP keepalive, and in cluster mode
// reloads its slot map every ClusterReloadInterval.
//
// IsPermanent sorts errors into those no retry can cure (wrong password,
// missing ACL permission, a server that is not Redis, a refused TLS
// certificate, a cluster-only setting against a standalone server) and
// transient ones (network, failover, resharding). CheckLayout refuses a
// stream layout that cannot work in the mode: on a cluster, every key one
// commit touches must hash to one slot.
package redisconn
