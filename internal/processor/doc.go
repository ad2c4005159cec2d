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
package processor
