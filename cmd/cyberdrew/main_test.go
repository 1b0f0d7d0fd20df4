package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"cyberdrew": main})
}

// TestScripts runs testdata/script/*.txtar against the real binary. Each
// script gets its own daemon, started in-process on a free port with its
// store in $WORK/data; CYBERDREW_URL points at it (DAEMON_ADDR is its
// host:port). A script tunes its daemon
// with a daemon.conf file of key=value lines:
//
//	signing-key=…   the admin API's key
//	event-key=…     the event API's key
//	github=ok|fail  a fake GitHub GraphQL API that answers a calendar or 401
//	retention=…     keep finished runs and their events this long (a duration)
//	daemon=none     no daemon at all
//
// Besides testscript's own commands a script has exitcode, stdout2env,
// sleep and restart (below).
func TestScripts(t *testing.T) {
	t.Parallel()
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup:               setupDaemon,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":   cmdExitCode,
			"stdout2env": cmdStdoutToEnv,
			"sleep":      cmdSleep,
			"restart":    cmdRestart,
		},
	})
}

func setupDaemon(env *testscript.Env) error {
	env.Setenv("HOME", env.WorkDir)
	env.Setenv("NO_COLOR", "1")
	conf := map[string]string{}
	if f, err := os.Open(filepath.Join(env.WorkDir, "daemon.conf")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok {
				conf[k] = v
			}
		}
		f.Close()
	}
	if conf["daemon"] == "none" {
		return nil
	}
	cfg := config.DefaultServe(func(string) string { return "" })
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(env.WorkDir, "data")
	cfg.Workers = 4
	cfg.ShutdownTimeout = time.Second
	cfg.GitHubUser = "drew"
	if k := conf["signing-key"]; k != "" {
		cfg.SigningKey = k
	}
	if k := conf["event-key"]; k != "" {
		cfg.EventKeys = []string{k}
	}
	if v := conf["retention"]; v != "" {
		keep, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("daemon.conf: retention: %w", err)
		}
		cfg.Retention = keep
	}
	if mode := conf["github"]; mode != "" {
		gh := httptest.NewServer(fakeGitHub(mode == "ok"))
		env.Defer(gh.Close)
		cfg.GitHubToken, cfg.GitHubAPIURL = "test-token", gh.URL
	}
	sd := &scriptDaemon{cfg: cfg}
	if err := sd.start(); err != nil {
		return err
	}
	scriptDaemons.Store(env.WorkDir, sd)
	env.Defer(func() {
		scriptDaemons.Delete(env.WorkDir)
		sd.stop()
	})
	env.Setenv("CYBERDREW_URL", "http://"+sd.d.Addr())
	env.Setenv("DAEMON_ADDR", sd.d.Addr())
	return nil
}

// scriptDaemon is a script's daemon, which `restart` stops and starts again
// on the same address and data.
type scriptDaemon struct {
	cfg config.Serve
	d   *daemon.Daemon
}

// scriptDaemons maps a script's work directory to its *scriptDaemon.
var scriptDaemons sync.Map

func (sd *scriptDaemon) start() error {
	ctx := context.Background()
	d, err := daemon.New(ctx, sd.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), daemon.Options{})
	if err != nil {
		return err
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	sd.d = d
	sd.cfg.Addr = d.Addr() // a restart listens where clients already point
	return nil
}

func (sd *scriptDaemon) stop() {
	if sd.d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = sd.d.Stop(ctx)
	sd.d = nil
}

// cmdRestart stops the script's daemon gracefully (as SIGTERM does), waits
// the given duration with nothing listening, and starts it again on the
// same address and data: "restart 1s", a deploy.
func cmdRestart(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: restart down-duration")
	}
	down, err := time.ParseDuration(args[0])
	ts.Check(err)
	v, ok := scriptDaemons.Load(ts.Getenv("WORK"))
	if !ok {
		ts.Fatalf("restart: the script has no daemon")
	}
	sd := v.(*scriptDaemon)
	sd.stop()
	time.Sleep(down)
	ts.Check(sd.start())
}

// fakeGitHub answers GitHub's GraphQL contribution query: 42 contributions
// over two days, or 401 when !ok.
func fakeGitHub(ok bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"message":"Bad credentials"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"data":{"user":{"contributionsCollection":{"contributionCalendar":{"totalContributions":42,`+
			`"weeks":[{"contributionDays":[{"date":"2025-03-01","contributionCount":40},{"date":"2025-03-02","contributionCount":2}]}]}}}}}`)
	})
}

// exitcode N PROGRAM ARGS... runs a program and checks its exit code; its
// stdout and stderr are kept for the next assertions.
// cmdSleep waits for a duration: "sleep 2s", for what the daemon does on
// its own clock (retention's pruning).
func cmdSleep(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: sleep duration")
	}
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	time.Sleep(d)
}

func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N program [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exitcode: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}

// stdout2env NAME sets NAME to the last command's stdout, trimmed.
func cmdStdoutToEnv(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: stdout2env NAME")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
}
