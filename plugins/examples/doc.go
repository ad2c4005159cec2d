// Package examples holds auditproc's example plugins, one directory each
// (Go plugins are main packages built with GOOS=wasip1, C plugins are built
// with clang), and their tests, which run the built modules through the
// real host.
package examples
