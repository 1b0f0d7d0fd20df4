//go:build !unix

package sqlite

import (
	"log/slog"
	"os"
)

// lockDatabase takes no lock where flock(2) is missing (Windows): one
// daemon per database file is then the operator's to keep (lock_unix.go).
func lockDatabase(string, *slog.Logger) (*os.File, error) { return nil, nil }
