// Package redistest starts throwaway redis-server processes for tests, on a
// free loopback port, and decides what a test does when redis-server is
// missing: skip loudly, or fail when CYBERDREW_TEST_REDIS=required (CI).
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// EnvRequired names the variable that makes a missing redis-server fatal.
const EnvRequired = "CYBERDREW_TEST_REDIS"

// startGuard bounds how long a server may take to answer PING.
const startGuard = 10 * time.Second

// Server is a running redis-server.
type Server struct {
	Addr string // host:port
	dir  string
	args []string
	cmd  *exec.Cmd
}

// URL is the redis:// URL of database db.
func (s *Server) URL(db int) string { return fmt.Sprintf("redis://%s/%d", s.Addr, db) }

// ErrMissing means redis-server is not on PATH.
var ErrMissing = errors.New("redis-server not found on PATH")

// Start runs redis-server in dir on a free loopback port, without
// persistence unless appendOnly, and returns once it answers PING.
func Start(dir string, appendOnly bool) (*Server, error) {
	return start(dir, appendOnly)
}

// start is Start with extra redis-server arguments.
func start(dir string, appendOnly bool, extra ...string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrMissing
	}
	aof := "no"
	if appendOnly {
		aof = "yes"
	}
	var lastErr error
	for range 5 { // the free port may be taken between probe and start
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, args: []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", aof, "--appendfsync", "always",
			"--databases", "16", "--protected-mode", "no",
		}}
		s.args = append(s.args, extra...)
		if err := s.run(bin); err == nil {
			return s, nil
		} else {
			lastErr = err
		}
	}
	return nil, lastErr
}

func (s *Server) run(bin string) error {
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Dir = s.dir
	var out strings.Builder
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { s.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(startGuard)
	for time.Now().Before(deadline) {
		if ping(s.Addr) == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited: %s", out.String())
		case <-time.After(10 * time.Millisecond): // a guard between connection attempts
		}
	}
	s.Stop()
	return fmt.Errorf("redis-server on %s did not answer PING within %v", s.Addr, startGuard)
}

// Stop kills the server.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Process.Wait()
		s.cmd = nil
	}
}

// Freeze stops the server's process (SIGSTOP): it keeps its connections
// and answers nothing until Thaw.
func (s *Server) Freeze() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// Restart starts the server again on the same port and directory.
func (s *Server) Restart() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return ErrMissing
	}
	return s.run(bin)
}

// Skip ends the test when redis-server could not start: a loud skip, or a
// failure when EnvRequired is "required".
func Skip(t testing.TB, err error) {
	t.Helper()
	if os.Getenv(EnvRequired) == "required" {
		t.Fatalf("redis tests are required (%s=required) but cannot run: %v", EnvRequired, err)
	}
	t.Skipf("SKIPPING REDIS TESTS: %v (install redis-server, or set %s=required to make this fatal)", err, EnvRequired)
}

// StartT starts a server for one test in t.TempDir() and stops it when the
// test ends; it skips or fails the test as Skip does when it cannot.
func StartT(t testing.TB, appendOnly bool) *Server {
	t.Helper()
	s, err := Start(t.TempDir(), appendOnly)
	if err != nil {
		Skip(t, err)
	}
	t.Cleanup(s.Stop)
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Commands is how many commands the server behind c has executed since
// its stats were last reset (CONFIG RESETSTAT), those that scripts call
// included, each once.
func Commands(ctx context.Context, c goredis.UniversalClient) (int64, error) {
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, fmt.Errorf("commandstats: %w", err)
	}
	return CommandCalls(info)
}

// CommandCalls sums the calls of every command in the text of INFO
// commandstats: commands that scripts call count too, each once.
func CommandCalls(info string) (int64, error) {
	var total int64
	for line := range strings.SplitSeq(info, "\n") {
		_, stats, ok := strings.Cut(line, ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(stats, ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("commandstats line %q: %w", line, err)
		}
		total += n
	}
	return total, nil
}
