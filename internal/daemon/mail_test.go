package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// TestOwnerMailInDevIsLogged starts daemons without a Resend key: without
// an owner's address the log says where the owner's mail goes (the From
// address, in the dev outbox); with one it says nothing of it.
func TestOwnerMailInDevIsLogged(t *testing.T) {
	t.Parallel()
	for _, owner := range []string{"", "me@example.com"} {
		var logs bytes.Buffer
		cfg := testConfig(t.TempDir())
		cfg.ContactTo = owner
		ctx := context.Background()
		d, err := daemon.New(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)), daemon.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = d.Stop(stopCtx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		said := strings.Contains(logs.String(), "CYBERDREW_CONTACT_TO is not set: in dev the owner's mail")
		if owner == "" && (!said || !strings.Contains(logs.String(), "owner=contact@cyberdrew.dev") || !strings.Contains(logs.String(), "outbox="+filepath.Join(cfg.DataDir, "outbox"))) {
			t.Errorf("no owner: the log does not say where the owner's mail goes:\n%s", logs.String())
		}
		if owner != "" && said {
			t.Errorf("owner %s: the log still says the owner's mail goes to the From address:\n%s", owner, logs.String())
		}
	}
}

// TestBrokenTemplatesStopTheStart gives serve a template directory with a
// file that does not parse: the daemon does not start, the error names the
// file, and it is a configuration to fix (serve exits 3, which the systemd
// unit does not restart), not a failure to retry.
func TestBrokenTemplatesStopTheStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "milestone.html.tmpl")
	if err := os.WriteFile(file, []byte(`{{define "content"}}{{if}}{{end}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t.TempDir())
	cfg.Templates = dir
	_, err := daemon.New(context.Background(), cfg, slog.New(slog.DiscardHandler), daemon.Options{})
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "--templates") {
		t.Fatalf("daemon.New with a broken template = %v, want an error naming --templates and %s", err, file)
	}
	if !errors.Is(err, store.ErrMisconfigured) {
		t.Errorf("daemon.New with a broken template = %v, want store.ErrMisconfigured", err)
	}
}
