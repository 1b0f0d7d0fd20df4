//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// lockDatabase takes the store's lock on the database at path: an
// exclusive flock(2) of path+".lock", which holds the pid of the process
// that has it. Two daemons on one file would each run, but neither would
// hear of the other's changes (the store's notifications are in-process):
// runs wait for a worker that is not told of them, the dash and
// /v1/stream miss half the changes, and the site's rate limits count
// twice. So a second store is refused, naming the holder. The kernel drops
// the lock when its holder exits, even by SIGKILL, so a crash leaves
// nothing to clean up. The lock is a file of its own: SQLite's POSIX locks
// on the database would be dropped by closing any other descriptor of it.
// Where the lock cannot be taken for another reason (a file system without
// flock, a directory the lock file cannot be created in), the store opens
// without it, as it did before there was one, and says so in the log.
func lockDatabase(path string, log *slog.Logger) (*os.File, error) {
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		log.Warn("sqlite: opening without the one-daemon-per-file lock", "lock", name, "err", err)
		return nil, nil
	}
	if err := flockSoon(f); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(name); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = " (pid " + strconv.Itoa(pid) + ")"
			}
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("sqlite: open: %w: %s is in use by another process%s, most likely another cyberdrew daemon: "+
				"one daemon per SQLite file (stop the other, or give this one its own --data-dir; several daemons share one Redis)",
				store.ErrUnavailable, path, holder)
		}
		log.Warn("sqlite: opening without the one-daemon-per-file lock", "lock", name, "err", err)
		return nil, nil
	}
	// The pid is for the message above; the lock does not depend on it.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// flockSoon takes f's exclusive flock, trying again for up to lockWait
// while another holds it. A lock just released can still be held for a
// moment: a process that forks (any exec.Command of the daemon's process,
// or of a test's) gives the child every descriptor until it execs, and a
// flock belongs to the descriptions, not to the descriptor the store
// closed. A store opened right after another closed (a restart in the
// same process) would be refused for that moment.
func flockSoon(f *os.File) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockWait is how long flockSoon waits for a lock another holds.
const lockWait = 250 * time.Millisecond
