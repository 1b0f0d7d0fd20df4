package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dcyfr/cyberdrew/internal/testkit"
)

// child is this program re-run as a worker process, whose stdout lines the
// harness reads.
type child struct {
	cmd    *exec.Cmd
	lines  chan string         // closed when stdout ends
	stderr *testkit.SyncBuffer // its stderr, for error messages
	waited chan struct{}
}

// startChild runs the program as role with o.
func (e *env) startChild(role string, o childOptions) (*child, error) {
	cmd := exec.Command(e.exe, o.args()...)
	cmd.Env = append(os.Environ(), childEnv+"="+role)
	c := &child{cmd: cmd, lines: make(chan string, 4096), stderr: &testkit.SyncBuffer{}, waited: make(chan struct{})}
	cmd.Stderr = c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting a worker process: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		cmd.Wait()
		close(c.waited)
	}()
	return c, nil
}

// next returns the child's next line, or an error when it exits or the
// wait ends.
func (c *child) next(ctx context.Context, wait <-chan time.Time) (what string, job int, err error) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", 0, fmt.Errorf("worker process exited: %s", strings.TrimSpace(c.stderr.String()))
		}
		what, n, _ := strings.Cut(l, " ")
		job, _ = strconv.Atoi(n)
		return what, job, nil
	case <-wait:
		return "", 0, errWaitOver
	case <-ctx.Done():
		return "", 0, ctx.Err()
	}
}

// errWaitOver means the child did not say what was expected in time.
var errWaitOver = fmt.Errorf("waited too long")

// expect reads lines until one starts with what.
func (c *child) expect(ctx context.Context, what string, within time.Duration) (string, error) {
	wait := time.After(within)
	for {
		w, _, err := c.next(ctx, wait)
		if err != nil {
			return "", fmt.Errorf("waiting for %q: %w", what, err)
		}
		if w == what {
			return w, nil
		}
	}
}

// kill sends SIGKILL and reaps the process.
func (c *child) kill() {
	c.cmd.Process.Kill()
	c.drain()
}

// stop asks the process to end, and kills it after 10 s.
func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.waited:
	case <-time.After(10 * time.Second):
		c.kill()
	}
	c.drain()
}

// drain discards what is left of stdout until the process is reaped.
func (c *child) drain() {
	for range c.lines {
	}
	<-c.waited
}

// rss is the child's resident set size in bytes, from /proc.
func (c *child) rss() (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("reading the worker's RSS: %w", err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", c.cmd.Process.Pid)
}
