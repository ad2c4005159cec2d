// Package abi holds the names, status codes and encodings of the auditproc
// plugin ABI, version 1. The specification is README.md in this directory;
// this package is its machine-readable half, shared by the host and by Go
// guests (it imports only the standard library, so it builds for
// GOOS=wasip1 and TinyGo).
package abi
