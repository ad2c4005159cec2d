// Package sink writes derived audit events to external destinations:
// PostgreSQL (Postgres), syslog over TCP or TLS (Syslog) and HTTP endpoints
// (HTTP, with presets for Splunk HEC, Elasticsearch/OpenSearch _bulk and
// Loki push).
//
// Every external sink is at least once: Write returns only when the
// destination confirmed the items, and each item carries its event id as an
// idempotency key, so a retried entry never shows twice where the
// destination can deduplicate (PostgreSQL's primary key, _bulk create with
// _id, Loki's identical-entry rule) and can be deduplicated by event_id
// elsewhere. docs/sinks.md is the user's page.
//
// Write's error says what to do with each item: nil (all confirmed), a
// *BatchError (per item: nil confirmed, a *PermanentError never to be
// retried, anything else to retry), a *PermanentError (the whole batch is
// refused for good), or any other error (the whole batch is to be retried).
package sink
