// Package daemon wires `cyberdrew serve`: it opens the store, starts the
// HTTP servers, the scheduler and the worker pool together, and stops them
// together in order (intake, scheduler, workers, store) when its context
// ends.
package daemon

import (
	"context"
	"errors"
	"log/slog"

	"github.com/dcyfr/cyberdrew/internal/config"
)

// Serve runs the daemon until ctx ends.
func Serve(ctx context.Context, cfg config.Serve, logger *slog.Logger) error {
	return errors.New("daemon: not wired yet")
}
