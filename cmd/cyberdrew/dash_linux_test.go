package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dcyfr/cyberdrew/internal/cli"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
)

// openPTY opens a pseudo-terminal of 120×40 and returns its two ends.
func openPTY(t *testing.T) (master, terminal *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the terminal: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}); err != nil {
		t.Fatalf("window size: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// screen reads what the program draws on the terminal's other end, and
// answers the two queries a terminal emulator answers (background colour,
// cursor position).
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screen) read(master *os.File) {
	b := make([]byte, 4096)
	for {
		n, err := master.Read(b)
		if n > 0 {
			chunk := string(b[:n])
			if strings.Contains(chunk, "\x1b]11;?") {
				master.WriteString("\x1b]11;rgb:0000/0000/0000\x1b\\")
			}
			if strings.Contains(chunk, "\x1b[6n") {
				master.WriteString("\x1b[1;1R")
			}
			s.mu.Lock()
			s.buf.WriteString(chunk)
			s.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (s *screen) has(text string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Contains(s.buf.String(), text)
}

// TestDashOnATerminal runs `cyberdrew dash` as a user does: stdin and
// stdout on a terminal (a pseudo-terminal here), against a real daemon. It
// draws its screen, shows the run of an event sent meanwhile, and quits on
// q with exit 0. It failed with
// "dash needs a terminal" (exit 2) while the command line handed the dash
// its own counting wrapper of stdout instead of the terminal.
func TestDashOnATerminal(t *testing.T) {
	cfg := config.DefaultServe(func(string) string { return "" })
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Workers = 2
	cfg.ShutdownTimeout = time.Second
	ctx := context.Background()
	d, err := daemon.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stop, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Stop(stop)
	}()

	master, terminal := openPTY(t)
	var sc screen
	go sc.read(master)
	stdin := os.Stdin
	os.Stdin = terminal // the dash reads its keys from the process's stdin
	defer func() { os.Stdin = stdin }()
	var stderr bytes.Buffer
	done := make(chan cli.ExitCode, 1)
	go func() {
		done <- cli.Run(ctx, []string{"dash", "--server", "http://" + d.Addr()}, terminal, &stderr,
			cli.Options{Getenv: func(string) string { return "" }})
	}()

	waitFor := func(text string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !sc.has(text) {
			select {
			case code := <-done:
				t.Fatalf("dash ended with exit %d before drawing %q: %s", code, text, stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				sc.mu.Lock()
				t.Fatalf("the dash drew no %q in 15 s; stderr: %s\nscreen: %q", text, stderr.String(), sc.buf.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("no runs yet")
	// An event sent meanwhile shows up as its run.
	resp, err := http.Post("http://"+d.Addr()+"/e/dev", "application/json",
		strings.NewReader(`{"name":"test/hello.world","data":{"email":"a@b.c"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("send: status %d", resp.StatusCode)
	}
	waitFor("hello-world")
	if _, err := master.WriteString("q"); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != cli.ExitOK {
			t.Fatalf("dash quit with exit %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dash did not quit on q")
	}
}
