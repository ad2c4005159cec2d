// Package bench measures auditproc side by side with a plain go-redis
// consumer loop, in one run against one throwaway Redis and one pre-filled
// stream (the `auditproc bench` command, `make bench`).
//
// Every scenario drains the same stream through a consumer group of its own,
// in a child process of its own, so that its CPU time and peak RSS are the
// child's rusage. Throughput excludes start-up: it is the entry count divided
// by the time from the group's first read (XINFO GROUPS entries-read > 0) to
// its last ack (entries-read − pending = entries), both observed through
// Redis by polling every 2 ms. Each scenario drains the stream Config.Rounds
// times, the scenarios taking turns, and its fastest drain is reported (the
// machine is shared and noisy). Latency is measured at a fixed offered
// rate: a producer appends signed entries at that rate while the default
// pipeline runs; the forward plugin's archive entry is appended in the same
// atomic step as the source entry's ack, so the millisecond part of the
// archive entry id minus that of the source entry id (both Redis server
// clock) is the append-to-ack latency.
//
// The cluster rows run on a throwaway Redis Cluster of ClusterMasters
// masters (redis-server --cluster-enabled yes, joined by redis-cli
// --cluster create; internal/rediscluster, the tests' code), with
// stream.shards 1 and ClusterMasters: the processor drains a trail
// pre-filled with the same number of entries split over its shards, and
// `emit --file` appends the producers' file. Before anything is written,
// a shard whose hash-tag slot shares a master with an earlier shard's has
// its slot moved, empty, to a master of its own. Their Redis CPU is each
// node's INFO CPU (used_cpu_sys + used_cpu_user) from the first read to
// the last ack, per entry, and they take turns with the standalone
// scenarios, whose rows they are printed next to. The memory rows are the
// standalone Redis's used_memory grown by each prefill, per entry.
package bench
