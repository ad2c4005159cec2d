// Package integration holds auditproc's integration tests against a real
// Redis server: the audit stream's delivery guarantees end to end, through
// the public producer package.
package integration
