// Package redistest starts a throwaway, real Redis server for a test.
//
// A test calls Start and gets a *Server it can stop (gracefully), kill
// (SIGKILL) and restart with its data: AOF is always on (appendfsync
// "everysec" by default, "always" with WithAppendFsync), RDB snapshots are off.
//
// Two backends:
//
//   - Process: redis-server from PATH, bound to 127.0.0.1 on a free port, its
//     --dir a t.TempDir(). Restart reuses the port and the dir. Fast; what most
//     tests want.
//   - Container: a Docker container through testcontainers-go, image
//     $AUDITPROC_REDIS_IMAGE or the locally built auditproc/redis:7-local
//     (scripts/redis-image.sh, built on first use when missing). A stopped and
//     started container gets a new mapped port: Addr re-resolves it, and
//     clients from Client follow it. WithNetwork puts it on a Docker network.
//
// The backend comes from WithBackend, else $AUDITPROC_REDIS_BACKEND
// (process|container), else Process when redis-server is on PATH, else
// Container when a Docker engine answers. When the needed backend is not
// available the test skips (SkipOrFail), or fails under AUDITPROC_NO_SKIP=1.
//
// StartCluster starts a Redis Cluster of redis-server processes (three
// masters with one replica each, `redis-cli --cluster create`), or of
// containers on a Docker network (WithContainers, on a network made
// Network(t, WithFixedAddresses())), with helpers to move a slot
// (MigrateSlot), fail over (Failover, or Kill a master, or cut it off the
// network with Disconnect) and wait for the cluster to settle (WaitHealthy):
// internal/rediscluster's, which `auditproc bench` uses for its own cluster
// too. StartSentinel starts a master, a replica and three sentinels. A Link
// is a relay a test can cut like a network partition (open connections go
// silent for good); with WithLinks every cluster node announces its link, so
// a client can be cut off a node while the cluster itself keeps working.
//
// Packages that only need *a* Redis use Shared, with Main in their TestMain,
// and unique key/stream names per test.
package redistest
