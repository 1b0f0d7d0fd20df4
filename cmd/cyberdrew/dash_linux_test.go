package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dcyfr/cyberdrew/internal/cli"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/testkit"
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

// screen reads what the program draws on the terminal's other end; with
// answer set it answers the two queries a terminal emulator answers
// (background colour, cursor position).
type screen struct {
	answer bool // answer the queries, as a terminal emulator does
	// background is the answer to the background query (OSC 11); black
	// when empty.
	background string
	mu         sync.Mutex
	buf        bytes.Buffer
}

func (s *screen) read(master *os.File) {
	b := make([]byte, 4096)
	for {
		n, err := master.Read(b)
		if n > 0 {
			chunk := string(b[:n])
			if s.answer && strings.Contains(chunk, "\x1b]11;?") {
				master.WriteString("\x1b]11;" + cmp.Or(s.background, "rgb:0000/0000/0000") + "\x1b\\")
			}
			if s.answer && strings.Contains(chunk, "\x1b[6n") {
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

func (s *screen) has(text string) bool { return strings.Contains(s.text(), text) }

func (s *screen) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// TestDashOnATerminal runs `cyberdrew dash` as a user does: stdin and
// stdout on a terminal (a pseudo-terminal here), against a real daemon. It
// draws its screen, shows the run of an event sent meanwhile, and quits on
// ?q typed fast (one read: it ignored both keys) with exit 0. It failed with
// "dash needs a terminal" (exit 2) while the command line handed the dash
// its own counting wrapper of stdout instead of the terminal.
func TestDashOnATerminal(t *testing.T) {
	addr := startDaemon(t)
	master, terminal := openPTY(t)
	sc := &screen{answer: true}
	go sc.read(master)
	done, stderr := startDash(t, terminal, addr, func(string) string { return "" })

	waitFor(t, sc, done, stderr, "no runs yet")
	// An event sent meanwhile shows up as its run.
	resp, err := http.Post("http://"+addr+"/e/dev", "application/json",
		strings.NewReader(`{"name":"test/hello.world","data":{"email":"a@b.c"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("send: status %d", resp.StatusCode)
	}
	waitFor(t, sc, done, stderr, "hello-world")
	// Keys typed fast reach the dash in one read: ? opens the help, q
	// quits it.
	if _, err := master.WriteString("?q"); err != nil {
		t.Fatal(err)
	}
	waitExit(t, done, stderr, cli.ExitOK)
}

// TestDashStartsWhereNothingAnswersQueries runs the dash on a terminal that
// answers no query, as a serial console or a relayed pty does. The dash
// used to ask the terminal for its background colour (OSC 11, then a
// cursor position report) and wait 5 s for an answer before drawing
// anything, reading the keys typed meanwhile as a possible answer: a q
// typed at once was lost. It must draw and quit on that q without waiting
// for an answer, send no cursor position query, and ask for the background
// only when it draws colours and COLORFGBG does not give it.
//
// The dash runs in a child process (this test binary, see init) whose
// controlling terminal is the pseudo-terminal, with stdin and stdout on it
// from the start: the queries were sent by the terminal's foreground
// process only, and Bubble Tea v1 sent them from a package init, before
// main, in every program linking it.
func TestDashStartsWhereNothingAnswersQueries(t *testing.T) {
	addr := startDaemon(t)
	for _, env := range [][]string{{"NO_COLOR="}, {"NO_COLOR=1"}, {"COLORFGBG=15;0"}} {
		t.Run(strings.Join(env, " "), func(t *testing.T) {
			master, terminal := openPTY(t)
			sc := &screen{}
			go sc.read(master)
			// q typed at once, before the dash has drawn.
			if _, err := master.WriteString("q"); err != nil {
				t.Fatal(err)
			}
			done, stderr := startChild(t, terminal, append([]string{"TERM=xterm-256color"}, env...),
				"dash", "--server", "http://"+addr)
			waitExit(t, done, stderr, cli.ExitOK)
			// What the dash wrote may still be on its way to the reader: a
			// frame, then the main screen restored last.
			waitText(t, sc, "Functions")
			waitText(t, sc, "\x1b[?1049l")
			if sc.has("\x1b[6n") {
				t.Errorf("the dash sent a cursor position query to a terminal that answers none")
			}
			// Without COLORFGBG it may ask (it may also have quit on the q
			// first); with it, or without colours, it has nothing to ask.
			if env[0] != "NO_COLOR=" && sc.has("\x1b]11;?") {
				t.Errorf("with %s the dash asked the terminal for its background", env[0])
			}
		})
	}
}

// TestDashTakesTheTerminalsBackground runs the dash on a terminal with a
// white background that says so when asked (OSC 11), as most do, without
// COLORFGBG: the dash draws its title in the colour for a light background
// (#5A3FC0), where it kept the one for a dark background (#B9A5FF, hard to
// read on white) since it stopped asking.
func TestDashTakesTheTerminalsBackground(t *testing.T) {
	addr := startDaemon(t)
	master, terminal := openPTY(t)
	sc := &screen{answer: true, background: "rgb:ffff/ffff/ffff"}
	go sc.read(master)
	done, stderr := startChild(t, terminal, []string{"TERM=xterm-256color", "COLORTERM=truecolor"},
		"dash", "--server", "http://"+addr)
	const light = "38;2;90;63;192" // #5A3FC0 in truecolor
	waitText(t, sc, light)
	if _, err := master.WriteString("q"); err != nil {
		t.Fatal(err)
	}
	waitExit(t, done, stderr, cli.ExitOK)
}

// TestVersionOnATerminalThatAnswersNothing runs `cyberdrew version` with
// stdin and stdout on a terminal that answers no query. Every command,
// version too, asked that terminal for its background colour (OSC 11 and a
// cursor position report, from Bubble Tea v1's package init) and waited
// 5 s for an answer before doing anything. It must ask nothing and end at
// once.
func TestVersionOnATerminalThatAnswersNothing(t *testing.T) {
	master, terminal := openPTY(t)
	sc := &screen{}
	go sc.read(master)
	start := time.Now()
	done, stderr := startChild(t, terminal, []string{"TERM=xterm-256color"}, "version")
	waitExit(t, done, stderr, cli.ExitOK)
	// Far from the 5 s wait, and loose enough for a loaded machine.
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("cyberdrew version took %s on a terminal that answers nothing", took.Round(time.Millisecond))
	}
	waitText(t, sc, "cyberdrew ")
	for _, query := range []string{"\x1b]11;?", "\x1b[6n"} {
		if sc.has(query) {
			t.Errorf("cyberdrew version sent the query %q to the terminal: %q", query, sc.text())
		}
	}
}

// cliChildEnv marks a run of this test binary as `cyberdrew` (see init).
const cliChildEnv = "CYBERDREW_TEST_CLI_CHILD"

// init runs `cyberdrew` with this test binary's arguments in a child of
// startChild.
func init() {
	if os.Getenv(cliChildEnv) == "" {
		return
	}
	os.Exit(cli.Main(cli.Options{}))
}

// startChild runs `cyberdrew args...` in a child process (this test binary,
// see init) in a session of its own whose controlling terminal is
// terminal, with stdin and stdout on it, stderr in a buffer, and env (with
// a temporary HOME) as its whole environment. It returns its exit code's
// channel and its stderr.
func startChild(t *testing.T, terminal *os.File, env []string, args ...string) (<-chan cli.ExitCode, *testkit.SyncBuffer) {
	t.Helper()
	stderr := &testkit.SyncBuffer{}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append([]string{cliChildEnv + "=1", "HOME=" + t.TempDir()}, env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = terminal, terminal, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan cli.ExitCode, 1)
	go func() {
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			done <- cli.ExitCode(ee.ExitCode())
		case err != nil:
			done <- -1
		default:
			done <- cli.ExitOK
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return done, stderr
}

// TestDashRefusesADumbTerminal: a dumb terminal cannot move the cursor, so
// the dash says so and exits 2 without writing to it.
func TestDashRefusesADumbTerminal(t *testing.T) {
	addr := startDaemon(t)
	master, terminal := openPTY(t)
	sc := &screen{}
	go sc.read(master)
	env := map[string]string{"TERM": "dumb"}
	done, stderr := startDash(t, terminal, addr, func(k string) string { return env[k] })
	waitExit(t, done, stderr, cli.ExitUsage)
	if !strings.Contains(stderr.String(), "TERM=dumb") {
		t.Errorf("stderr does not name TERM=dumb: %s", stderr.String())
	}
	time.Sleep(100 * time.Millisecond) // let the reader see any late bytes
	if sc.has("\x1b[") {
		t.Errorf("the dash wrote escape sequences to a dumb terminal: %q", sc.text())
	}
}

// startDaemon starts a daemon on loopback for the test and returns its
// address.
func startDaemon(t *testing.T) string {
	t.Helper()
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
	t.Cleanup(func() {
		stop, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Stop(stop)
	})
	return d.Addr()
}

// startDash runs `cyberdrew dash` with stdin and stdout on terminal, as a
// user does, and returns its exit code's channel and its stderr.
func startDash(t *testing.T, terminal *os.File, addr string, getenv func(string) string) (<-chan cli.ExitCode, *testkit.SyncBuffer) {
	t.Helper()
	stdin := os.Stdin
	os.Stdin = terminal // the dash reads its keys from the process's stdin
	stderr := &testkit.SyncBuffer{}
	done := make(chan cli.ExitCode, 1)
	go func() {
		done <- cli.Run(context.Background(), []string{"dash", "--server", "http://" + addr}, terminal, stderr,
			cli.Options{Getenv: getenv})
	}()
	t.Cleanup(func() { os.Stdin = stdin })
	return done, stderr
}

// waitFor waits until the dash has drawn text.
func waitFor(t *testing.T, sc *screen, done <-chan cli.ExitCode, stderr *testkit.SyncBuffer, text string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !sc.has(text) {
		select {
		case code := <-done:
			t.Fatalf("dash ended with exit %d before drawing %q: %s", code, text, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dash drew no %q in 15 s; stderr: %s\nscreen: %q", text, stderr.String(), sc.text())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitText waits until the terminal has shown text.
func waitText(t *testing.T, sc *screen, text string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !sc.has(text) {
		if time.Now().After(deadline) {
			t.Fatalf("the terminal shows no %q in 5 s: %q", text, sc.text())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitExit waits for the dash to end with want.
func waitExit(t *testing.T, done <-chan cli.ExitCode, stderr *testkit.SyncBuffer, want cli.ExitCode) {
	t.Helper()
	select {
	case code := <-done:
		if code != want {
			t.Fatalf("dash ended with exit %d, want %d: %s", code, want, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("dash did not end in 15 s (want exit %d); stderr: %s", want, stderr.String())
	}
}
