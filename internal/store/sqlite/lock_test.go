//go:build unix

package sqlite

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// TestOneStorePerFile checks that a database file a store has open cannot
// be opened by a second (which would not hear of the first's changes), that
// the refusal names the file and the holder's pid, and that the file is
// free again once the first store is closed, with its data.
func TestOneStorePerFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cyberdrew.db")
	clock := clockwork.NewFakeClockAt(t0)
	first, err := Open(t.Context(), path, Options{Clock: clock})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := first.Set(t.Context(), "views:home", "7", 0); err != nil {
		t.Fatalf("Set: %v", err)
	}
	second, err := Open(t.Context(), path, Options{Clock: clock})
	if err == nil {
		second.Close()
		t.Fatal("a second Open of a file in use succeeded")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("second Open: err = %v, want ErrUnavailable", err)
	}
	for _, want := range []string{path + " is in use", "(pid " + strconv.Itoa(os.Getpid()) + ")", "one daemon per SQLite file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second Open: %q lacks %q", err, want)
		}
	}
	// The refused Open left the first store as it was.
	if v, err := first.Get(t.Context(), "views:home"); err != nil || v != "7" {
		t.Errorf("first store after the refusal: Get = %q, %v", v, err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	again := openTest(t, path, clock)
	if v, err := again.Get(t.Context(), "views:home"); err != nil || v != "7" {
		t.Errorf("reopened: Get = %q, %v; want 7", v, err)
	}
}

// TestAFileJustClosedOpensAgain: a process forked while a store held the
// file (here a child given the lock's descriptor; any exec.Command forks
// with every descriptor until it execs) holds the lock on for a moment
// after the store closes it. A store opened in that moment waits for it
// rather than refusing the file as in use.
func TestAFileJustClosedOpensAgain(t *testing.T) {
	t.Parallel()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary:", err)
	}
	path := filepath.Join(t.TempDir(), "cyberdrew.db")
	clock := clockwork.NewFakeClockAt(t0)
	first, err := Open(t.Context(), path, Options{Clock: clock})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if first.lock == nil {
		t.Skip("this file system takes no flock")
	}
	child := exec.Command(sleep, "0.1")
	child.ExtraFiles = []*os.File{first.lock}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	again, err := Open(t.Context(), path, Options{Clock: clock})
	if err != nil {
		t.Fatalf("Open right after Close, while a child held the lock a moment longer: %v", err)
	}
	again.Close()
}

// TestAPathThatCannotHoldTheDatabaseIsMisconfigured: a data dir under a
// file, or a database path that is a directory, is a setting to fix (serve
// exits 3, which systemd does not restart in a loop), not a failure to
// retry (exit 1).
func TestAPathThatCannotHoldTheDatabaseIsMisconfigured(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(file, "data", "cyberdrew.db"), dir} {
		s, err := Open(t.Context(), path, Options{})
		if err == nil {
			s.Close()
			t.Fatalf("Open(%s) succeeded", path)
		}
		if !errors.Is(err, store.ErrMisconfigured) {
			t.Errorf("Open(%s): %v, want ErrMisconfigured", path, err)
		}
	}
}
