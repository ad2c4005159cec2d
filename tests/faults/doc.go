// Package faults is auditproc's fault suite on real containers: Redis and
// two or three auditproc replicas (containers of the image scripts/image.sh
// builds, auditproc:local unless AUDITPROC_IMAGE names another) on a private
// Docker network, driven by testcontainers-go.
//
// A checker produces numbered events through the producer package (audit),
// each with its event id and a per-run sequence number inside the signed
// event. The pipeline is two instances of the e2e-go test plugin, each
// emitting what it saw to a recording sink stream. Every scenario injects its
// faults under load (kill -9 a replica, cut one off the network, restart
// Redis with AOF everysec and always, rolling restart, a plugin that traps on
// 1% of deliveries, poison events), waits until the group has nothing
// pending, and checks the same invariant, printed as a table:
//
//   - every event id the producer was told was written is in the stream;
//   - every stream entry was processed by every plugin and acked, or is in
//     the dead-letter stream with its reason; none is left pending;
//   - nothing was acked without being processed, no emit was doubled;
//   - no forged entry reached a plugin;
//   - duplicates delivered to plugins (at-least-once) are counted.
//
// The TestCluster scenarios run the same pipeline on Redis Cluster: three
// masters with a replica each, containers on the scenario's network at
// fixed addresses (redistest.StartCluster WithContainers), every key of the
// pipeline under the hash tag {audit}, forged entries among the events. They
// kill -9 the master serving that slot (its replica is promoted after the
// 2 s node timeout) with redis.min_replicas_acked 0 and 1 for the producer
// and the replicas, move the slot between masters key batch by key batch
// while the replicas process, and cut the master off the network (docker
// network disconnect) for longer than the node timeout. With
// min_replicas_acked 0 an acknowledged write the old master had not yet
// replicated is lost with it, and counted; with 1, or without a failover,
// any loss is a violation.
//
// TestSoak runs random faults from that list for $AUDITPROC_SOAK (make soak
// DURATION=5m), or briefly in CI. Without a Docker engine every test skips,
// or fails under AUDITPROC_NO_SKIP=1 (.ci/run).
package faults
