// Package processor is auditproc's run loop: it reads verified entries from
// the audit stream through the consumer group, runs each through the plugin
// pipeline on a pool of workers, and commits per verdict — ack (with the
// event's emits, atomically), dead-letter, or leave pending for a retry. A
// reclaimer claims entries other consumers left idle and moves entries past
// their delivery budget to the dead-letter stream.
//
// Delivery is at least once: an entry is acknowledged only after the whole
// pipeline succeeded, so a crash anywhere before the ack means it is
// processed again (by this consumer at start-up or by another's reclaimer).
// Plugins get the entry id and delivery count to deduplicate.
//
// One concept per file, in the order an entry meets them:
//
//   - processor.go: Config, New, and Run with its shutdown sequence;
//   - bus.go: the one seam to Redis (a *streambus.Bus, or a fake in tests);
//   - read.go: the read loop and the feeder that hands entries to workers;
//   - reclaim.go: the sweep of idle pending entries;
//   - triage.go: what a batch read or claimed turns into (entries to run,
//     dead letters, integrity alarms);
//   - worker.go: the workers running the pipeline, emits checked, verdicts
//     observed;
//   - commit.go: planCommit, the pure decision of what a batch of verdicts
//     asks of the sinks and Redis, and applyCommit, which does it;
//   - acks.go: the ack queue whose XACKs ride with the next read;
//   - deadletter.go: moves to the dead-letter stream;
//   - retry.go: retries of Redis operations and of sink writes, each with its
//     own consequences;
//   - state.go: what the process holds (entries held, failures remembered,
//     result chunks);
//   - outcomes.go: Stats, and each outcome recorded once in Stats and Metrics;
//   - health.go: readiness, gauges and the stall watch;
//   - sinks.go, metrics.go: sinks and the Prometheus metrics.
package processor
