// Package streambus is auditproc's Redis Streams layer: every entry it adds is
// signed with the integrity envelope, and every entry it reads is verified
// before a caller sees it.
//
// A Bus wraps a go-redis UniversalClient (a single server, Sentinel or
// Cluster) and an integrity.Keyring:
//
//   - XAdd stamps, signs and appends an event. Trimming (MAXLEN ~) happens only
//     when the caller asks for it: an audit stream is permanent by default.
//   - XReadGroup returns verified entries. An entry that fails
//     verification is never returned as an Entry: it is logged as
//     security_audit_tampered_message with its id, stream and reason, counted
//     (TamperedCounts), reported in Batch.Tampered, and in a group it is left
//     pending, not acknowledged.
//   - XGroupCreate is idempotent; XAck, XPending, XInfoGroup and XAutoClaim
//     are the consumer-group bookkeeping, XAutoClaim reporting the ids of
//     entries deleted or trimmed while they were pending.
//   - DeadLetter and Commit are the atomic moves the processor makes: "copy
//     to the dead-letter stream and acknowledge", and "append the emitted
//     events and acknowledge". Each is one Lua script rather than MULTI/EXEC,
//     because MULTI/EXEC runs the XACK even when an XADD before it fails;
//     the script checks its targets first and appends only for entries its
//     XACK found pending, so a retry never writes twice.
//
// Blocking reads are always finite: a zero Block means Config.Block, and a
// block is served in short slices so that cancelling ctx stops it promptly
// (go-redis alone does not interrupt a blocked read on cancellation).
//
// With Redis Cluster, DeadLetter and Commit touch several keys in one
// script: give the streams a common hash tag (for example
// "{audit}:stream" and "{audit}:dead").
//
// With Config.MinReplicasAcked every write is followed by Redis WAIT on its
// own connection (replicas.go): a write the master took and too few replicas
// confirmed fails with ErrNotReplicated, and is safe to run again.
package streambus
