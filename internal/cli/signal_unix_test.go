//go:build unix

package cli_test

import (
	"bytes"
	"context"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/cli"
	"github.com/dcyfr/cyberdrew/internal/config"
)

// TestServeStopsOnSIGTERM sends SIGTERM to the test process while serve
// runs: serve's context ends and it exits 0. It is not parallel, so no
// other serve is running when the signal arrives.
func TestServeStopsOnSIGTERM(t *testing.T) {
	started := make(chan struct{})
	serve := func(ctx context.Context, _ config.Serve, _ *slog.Logger) error {
		close(started)
		<-ctx.Done()
		return nil
	}
	done := make(chan cli.ExitCode, 1)
	go func() {
		var out bytes.Buffer
		opts := cli.Options{Serve: serve, Getenv: func(k string) string { return home[k] }}
		done <- cli.Run(context.Background(), []string{"serve"}, &out, &out, opts)
	}()

	<-started
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != cli.ExitOK {
			t.Errorf("exit code = %d, want 0", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
}
