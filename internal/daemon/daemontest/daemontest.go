// Package daemontest runs real daemons for tests: on the configured
// address (127.0.0.1:0 for a free port), stopped when the test ends.
package daemontest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
)

// stopGuard bounds how long stopping a daemon may take at the test's end.
const stopGuard = 10 * time.Second

// Run starts a daemon with cfg and opts, logging to logger (nil: nowhere),
// and stops it when the test ends; a failure to start or to stop fails t.
func Run(t testing.TB, cfg config.Serve, logger *slog.Logger, opts daemon.Options) *daemon.Daemon {
	t.Helper()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx := context.Background()
	d, err := daemon.New(ctx, cfg, logger, opts)
	if err != nil {
		t.Fatalf("new daemon: %v", err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopGuard)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			t.Errorf("stop daemon: %v", err)
		}
	})
	return d
}
