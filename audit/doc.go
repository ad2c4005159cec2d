// Package audit is auditproc's producer package for Go services: it appends
// signed audit events to a Redis stream, and offers the consumer-group
// helpers a Go service needs to read them back.
//
// A producer calls Audit with a struct, a map, JSON bytes or a string; the
// event gets an event_id and a timestamp when it has none, is signed with the
// active key of the Keyring (HMAC-SHA256, auditproc's envelope version 1) and
// is appended to the stream, "audit:stream" by default. Audit never blocks
// for longer than Config.WriteTimeout and never drops an event silently: when
// Redis cannot be reached it returns an error wrapping ErrUnavailable, and it
// works again as soon as Redis is back. With Config.MinReplicasAcked an
// append counts as written only once that many replicas hold it
// (ErrNotReplicated otherwise): an event the producer was told was written
// is then on a replica too, and survives a failover to it.
//
// A consumer creates the group ("audit-consumers" by default) with
// CreateGroup, ranges over Consume, and acknowledges each message with Ack
// once it has been processed: an unacknowledged message is delivered again
// (to the same consumer after a restart, or to another one through
// ClaimStale). Consume yields verified events only: an entry whose signature
// does not verify is logged as security_audit_tampered_message and left
// pending, never acknowledged.
//
// Keys come from the environment or a file (LoadKeyring), never from code or
// configuration files, and never appear in logs or errors.
package audit
