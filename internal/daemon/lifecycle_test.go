package daemon_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// TestRunReturnsWhenTheListenerCloses closes the listener under a running
// daemon: Run (what `serve` runs) notices, shuts down and returns an error.
func TestRunReturnsWhenTheListenerCloses(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(context.Background(), testConfig(t.TempDir()), slog.New(slog.DiscardHandler), daemon.Options{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	c := client{t: t, base: "http://" + ln.Addr().String()}
	if code := c.do("GET", "/readyz", "", nil); code != http.StatusOK {
		t.Fatalf("/readyz = %d before the listener closed", code)
	}
	ln.Close()
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "http server") {
			t.Errorf("Run = %v, want the HTTP server's failure", err)
		}
	case <-time.After(15 * time.Second): // a guard: Run did not notice
		t.Fatalf("Run did not return after its listener closed")
	}
	if err := d.Store().Ping(context.Background()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("after Run the store answers %v, want closed", err)
	}
}

// TestFailedStartReleasesTheStore: a daemon whose address is taken fails to
// start and closes its store (SQLite removes its WAL once the last
// connection closes), so a second daemon on the same data dir starts.
func TestFailedStartReleasesTheStore(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Addr = taken.Addr().String()
	ctx := context.Background()
	d, err := daemon.New(ctx, cfg, slog.New(slog.DiscardHandler), daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a taken address = %v", err)
	}
	if err := d.Store().Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("after the failed start the store answers %v, want closed", err)
	}
	if _, err := os.Stat(filepath.Join(dir, config.DBFile+"-wal")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the WAL is still there (%v): the database was not closed", err)
	}
	cfg.Addr = "127.0.0.1:0"
	c := client{t: t, base: start(t, cfg, nil)}
	if code := c.do("GET", "/readyz", "", nil); code != http.StatusOK {
		t.Errorf("a second daemon on the data dir: /readyz = %d", code)
	}
}
