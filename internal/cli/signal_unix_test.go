//go:build unix

package cli_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/cli"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/testkit"
)

// TestServeStopsOnSIGTERM sends SIGTERM, then SIGHUP (a closed terminal),
// then SIGINT to the test process while serve runs: each time serve's
// context ends, it exits 0 and logs the signal. It is not parallel, so no
// other serve is running when the signal arrives.
func TestServeStopsOnSIGTERM(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) { serveStopsOn(t, sig) })
	}
}

func serveStopsOn(t *testing.T, sig syscall.Signal) {
	started := make(chan struct{})
	serve := func(ctx context.Context, _ config.Serve, _ *slog.Logger) error {
		close(started)
		<-ctx.Done()
		return nil
	}
	done := make(chan cli.ExitCode, 1)
	var out testkit.SyncBuffer
	go func() {
		opts := cli.Options{Serve: serve, Getenv: func(k string) string { return home[k] }}
		done <- cli.Run(context.Background(), []string{"serve"}, &out, &out, opts)
	}()

	<-started
	if err := syscall.Kill(syscall.Getpid(), sig); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != cli.ExitOK {
			t.Errorf("exit code = %d, want 0", code)
		}
		if want := `"signal":` + strconv.Quote(sig.String()); !strings.Contains(out.String(), want) {
			t.Errorf("log %q lacks %s", out.String(), want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("serve did not stop on %v", sig)
	}
}
