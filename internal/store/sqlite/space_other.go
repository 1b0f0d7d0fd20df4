//go:build !unix

package sqlite

// freeBytes is not measured here: readiness relies on its write alone.
func freeBytes(string) (uint64, bool) { return 0, false }
