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
package bench
