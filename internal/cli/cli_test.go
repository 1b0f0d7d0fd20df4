package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/cli"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/testkit"
)

// recorder is a ServeFunc that keeps the configuration it was given and
// returns err.
type recorder struct {
	called bool
	cfg    config.Serve
	err    error
}

func (r *recorder) serve(_ context.Context, cfg config.Serve, _ *slog.Logger) error {
	r.called, r.cfg = true, cfg
	return r.err
}

// result is one in-process command line run.
type result struct {
	code           cli.ExitCode
	stdout, stderr string
}

// run executes args with env as the whole environment.
func run(t *testing.T, rec *recorder, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	opts := cli.Options{
		Serve:  rec.serve,
		Build:  cli.Build{Version: "v1.2.3", Commit: "abc123", Date: "2025-03-01T00:00:00Z"},
		Getenv: func(k string) string { return env[k] },
	}
	code := cli.Run(t.Context(), args, &stdout, &stderr, opts)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

var home = map[string]string{"HOME": "/home/drew"}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		serveErr  error
		want      cli.ExitCode
		wantOut   string
		wantErr   string
		wantServe bool
	}{
		{name: "no command prints help", args: nil, want: cli.ExitOK, wantOut: "Exit codes:"},
		{name: "help", args: []string{"--help"}, want: cli.ExitOK, wantOut: "Exit codes:"},
		{name: "unknown command", args: []string{"bogus"}, want: cli.ExitUsage, wantErr: `unknown command "bogus"`},
		{name: "mistyped subcommand", args: []string{"runs", "lst"}, want: cli.ExitUsage, wantErr: `unknown command "lst" for "cyberdrew runs"; did you mean list?`},
		{name: "unknown subcommand", args: []string{"events", "frob"}, want: cli.ExitUsage, wantErr: `unknown command "frob" for "cyberdrew events"`},
		{name: "missing subcommand", args: []string{"functions"}, want: cli.ExitUsage, wantErr: "cyberdrew functions needs a command: invoke, list"},
		{name: "a group's help", args: []string{"runs", "--help"}, want: cli.ExitOK, wantOut: "cancel"},
		{name: "REDIS_URL without a scheme", args: []string{"serve"}, env: map[string]string{"HOME": "/home/drew", "REDIS_URL": "127.0.0.1:6379"}, want: cli.ExitConfig, wantErr: "REDIS_URL: want a redis://"},
		{name: "a store that is an address", args: []string{"serve", "--store", "127.0.0.1:6379"}, want: cli.ExitConfig, wantErr: `is an address, not a SQLite file: write redis://127.0.0.1:6379`},
		{name: "a Redis URL's bad database", args: []string{"serve", "--store", "redis://127.0.0.1:6379/abc"}, want: cli.ExitConfig, wantErr: `invalid database number: "abc"`},
		{name: "unknown flag", args: []string{"serve", "--bogus"}, want: cli.ExitUsage, wantErr: "unknown flag: --bogus\nRun 'cyberdrew serve --help' for usage."},
		{name: "serve takes no arguments", args: []string{"serve", "extra"}, want: cli.ExitUsage, wantErr: `unknown command "extra" for "cyberdrew serve"`},
		{name: "version takes no arguments", args: []string{"version", "extra"}, want: cli.ExitUsage, wantErr: "extra"},
		{name: "bad flag value", args: []string{"serve", "--workers", "many"}, want: cli.ExitConfig, wantErr: `--workers "many": want a whole number`},
		{name: "invalid configuration", args: []string{"serve", "--workers", "-1"}, want: cli.ExitConfig, wantErr: "--workers: must be at least 1"},
		{name: "templates with the other problems, before the store", args: []string{"serve", "--workers", "0", "--templates", "/nonexistent/templates"}, want: cli.ExitConfig,
			wantErr: "--workers: must be at least 1, got 0\n  --templates: email templates: open /nonexistent/templates"},
		{name: "public address without keys", args: []string{"serve", "--addr", "0.0.0.0:8288"}, want: cli.ExitConfig, wantErr: "set INNGEST_EVENT_KEY (--event-key)"},
		{name: "store down", args: []string{"serve"}, serveErr: fmt.Errorf("daemon: open store: %w", store.ErrUnavailable), want: cli.ExitUnavailable, wantErr: "store unavailable", wantServe: true},
		{name: "a flag's bool from the environment", args: []string{"serve"}, env: map[string]string{"HOME": "/home/drew", "CYBERDREW_METRICS_PUBLIC": "maybe"}, want: cli.ExitConfig, wantErr: `CYBERDREW_METRICS_PUBLIC "maybe": want true or false`},
		{name: "store misconfigured", args: []string{"serve"}, serveErr: fmt.Errorf("daemon: redis: open: %w: the URL's database number", store.ErrMisconfigured), want: cli.ExitConfig, wantErr: "database number", wantServe: true},
		{name: "serve fails", args: []string{"serve"}, serveErr: errors.New("daemon: listen: address already in use"), want: cli.ExitError, wantErr: "cyberdrew: daemon: listen: address already in use", wantServe: true},
		{name: "serve stops cleanly", args: []string{"serve"}, want: cli.ExitOK, wantServe: true},
		{name: "version", args: []string{"version"}, want: cli.ExitOK, wantOut: "cyberdrew v1.2.3\ncommit: abc123\nbuilt:  2025-03-01T00:00:00Z\ngo:     go"},
		{name: "send --ts after year 9999", args: []string{"send", "a/b", "--ts", "253402300800000"}, want: cli.ExitUsage, wantErr: "want a time from 1970 to 9999-12-31T23:59:59.999Z"},
		{name: "version as JSON", args: []string{"version", "--json"}, want: cli.ExitOK, wantOut: `"version": "v1.2.3"`},
		{name: "version -o json, as every command", args: []string{"version", "-o", "json"}, want: cli.ExitOK, wantOut: `"version": "v1.2.3"`},
		{name: "version -o bogus", args: []string{"version", "-o", "yaml"}, want: cli.ExitUsage, wantErr: `-o "yaml": want table or json`},
		{name: "completion", args: []string{"completion", "bash"}, want: cli.ExitOK, wantOut: "bash completion"},
		{name: "completion for zsh", args: []string{"completion", "zsh"}, want: cli.ExitOK, wantOut: "zsh completion"},
		{name: "completion needs a shell", args: []string{"completion"}, want: cli.ExitUsage, wantErr: "completion needs a command: bash, fish, powershell, zsh"},
		{name: "completion for an unknown shell", args: []string{"completion", "tcsh"}, want: cli.ExitUsage, wantErr: `unknown command "tcsh"`},
		{name: "email needs a command", args: []string{"email"}, want: cli.ExitUsage, wantErr: "email needs a command: preview"},
		{name: "runs list --status checked here", args: []string{"runs", "list", "--status", "bogus", "--server", "http://127.0.0.1:1"}, want: cli.ExitUsage, wantErr: `--status "bogus": want`},
		{name: "summary --to before --from", args: []string{"summary", "--from", "2026-12-10", "--to", "2026-12-01", "--server", "http://127.0.0.1:1"}, want: cli.ExitUsage, wantErr: "--to 2026-12-01 is before --from 2026-12-10"},
		{name: "dash needs a terminal", args: []string{"dash"}, want: cli.ExitUsage, wantErr: "dash needs a terminal"},
		{name: "dash takes no arguments", args: []string{"dash", "extra"}, want: cli.ExitUsage, wantErr: `unknown command "extra"`},
		{name: "dash has no -o", args: []string{"dash", "-o", "json"}, want: cli.ExitUsage, wantErr: "unknown shorthand flag: 'o'"},
		{name: "dash help says whose stats", args: []string{"dash", "--help"}, want: cli.ExitOK, wantOut: "the stats (runs/s, lag, workers) are those of the daemon it talks to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{err: tt.serveErr}
			env := tt.env
			if env == nil {
				env = home
			}
			r := run(t, rec, env, tt.args...)
			if r.code != tt.want {
				t.Errorf("exit code = %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.want, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, tt.wantOut) {
				t.Errorf("stdout = %q, want it to contain %q", r.stdout, tt.wantOut)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tt.wantErr)
			}
			if rec.called != tt.wantServe {
				t.Errorf("serve called = %v, want %v", rec.called, tt.wantServe)
			}
		})
	}
}

func TestRootHelpListsExitCodes(t *testing.T) {
	t.Parallel()
	r := run(t, &recorder{}, home, "--help")
	for code, name := range map[cli.ExitCode]string{
		cli.ExitOK: "success", cli.ExitError: "failed", cli.ExitUsage: "usage",
		cli.ExitConfig: "invalid configuration", cli.ExitUnavailable: "unavailable",
	} {
		if line := fmt.Sprintf("  %d  ", code); !strings.Contains(r.stdout, line) || !strings.Contains(r.stdout, name) {
			t.Errorf("help does not document exit code %d (%s):\n%s", code, name, r.stdout)
		}
	}
}

func TestServeConfigPrecedence(t *testing.T) {
	t.Parallel()
	defaults := config.DefaultServe(func(k string) string { return home[k] })
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		modify func(c *config.Serve) // from the defaults
	}{
		{name: "defaults", modify: func(*config.Serve) {}},
		{
			name: "XDG data home moves the default data dir",
			env:  map[string]string{"XDG_DATA_HOME": "/xdg"},
			modify: func(c *config.Serve) {
				c.DataDir = "/xdg/cyberdrew"
			},
		},
		{
			name: "environment over defaults",
			env: map[string]string{
				"CYBERDREW_ADDR": "127.0.0.1:9000", "CYBERDREW_DATA_DIR": "/srv/cd", "CYBERDREW_STORE": "sqlite:///srv/x.db",
				"CYBERDREW_WORKERS": "4", "CYBERDREW_RETENTION": "48h", "CYBERDREW_LOG_FORMAT": "json",
				"CYBERDREW_LOG_LEVEL": "debug", "INNGEST_EVENT_KEY": "ek1, ek2", "INNGEST_SIGNING_KEY": "sk",
				"INNGEST_SIGNING_KEY_FALLBACK": "sk-old", "CYBERDREW_SHUTDOWN_TIMEOUT": "5s",
				"CYBERDREW_MAX_EVENT_SIZE": "512KiB", "CYBERDREW_MAX_REQUEST_SIZE": "1MiB", "CYBERDREW_MAX_BATCH": "100",
				"CYBERDREW_LEASE": "3s",
			},
			modify: func(c *config.Serve) {
				c.Addr, c.DataDir, c.Store, c.Workers, c.Retention = "127.0.0.1:9000", "/srv/cd", "sqlite:///srv/x.db", 4, 48*time.Hour
				c.LogFormat, c.LogLevel, c.EventKeys, c.SigningKey, c.SigningKeyFallback = "json", slog.LevelDebug, []string{"ek1", "ek2"}, "sk", "sk-old"
				c.ShutdownTimeout, c.MaxEventSize, c.MaxRequestSize, c.MaxBatch = 5*time.Second, 512*config.KiB, config.MiB, 100
				c.Lease = 3 * time.Second
			},
		},
		{
			name: "flags over environment",
			env: map[string]string{
				"CYBERDREW_ADDR": "127.0.0.1:9000", "CYBERDREW_WORKERS": "4", "CYBERDREW_RETENTION": "48h",
				"INNGEST_EVENT_KEY": "from-env", "CYBERDREW_LOG_LEVEL": "debug", "CYBERDREW_MAX_EVENT_SIZE": "512KiB",
			},
			args: []string{
				"--addr", "localhost:7000", "--workers=2", "--retention", "0", "--event-key", "a,b", "--event-key", "c",
				"--log-level", "WARN", "--max-event-size", "1KiB",
			},
			modify: func(c *config.Serve) {
				c.Addr, c.Workers, c.Retention, c.EventKeys = "localhost:7000", 2, 0, []string{"a", "b", "c"}
				c.LogLevel, c.MaxEventSize = slog.LevelWarn, config.KiB
			},
		},
		{
			name:   "REDIS_URL when no store is set",
			env:    map[string]string{"REDIS_URL": "redis://localhost:6379/0"},
			modify: func(c *config.Serve) { c.Store = "redis://localhost:6379/0" },
		},
		{
			name:   "CYBERDREW_STORE over REDIS_URL",
			env:    map[string]string{"REDIS_URL": "redis://localhost:6379/0", "CYBERDREW_STORE": "/srv/x.db"},
			modify: func(c *config.Serve) { c.Store = "/srv/x.db" },
		},
		{
			name:   "--store over REDIS_URL",
			env:    map[string]string{"REDIS_URL": "redis://localhost:6379/0"},
			args:   []string{"--store", "rediss://cache:6380"},
			modify: func(c *config.Serve) { c.Store = "rediss://cache:6380" },
		},
		{
			name:   "an empty variable counts as unset",
			env:    map[string]string{"CYBERDREW_ADDR": "", "CYBERDREW_WORKERS": ""},
			modify: func(*config.Serve) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"HOME": "/home/drew"}
			for k, v := range tt.env {
				env[k] = v
			}
			rec := &recorder{}
			r := run(t, rec, env, append([]string{"serve"}, tt.args...)...)
			if r.code != cli.ExitOK {
				t.Fatalf("exit code %d, stderr: %s", r.code, r.stderr)
			}
			want := defaults
			tt.modify(&want)
			if !reflect.DeepEqual(rec.cfg, want) {
				t.Errorf("config = %+v\nwant     %+v", rec.cfg, want)
			}
		})
	}
}

func TestServeReportsEveryProblem(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"HOME":                "/home/drew",
		"CYBERDREW_RETENTION": "a month",
		"CYBERDREW_WORKERS":   "8", // overridden by a bad flag: not reported
		"REDIS_URL":           "redis://:hunter2@",
		"INNGEST_SIGNING_KEY": "signkey-prod-hunter3",
	}
	rec := &recorder{}
	r := run(t, rec, env, "serve", "--workers", "-2", "--shutdown-timeout", "soon", "--log-format", "yaml",
		"--log-level", "loud", "--max-event-size", "big", "--addr", "192.168.1.10:8288")
	if r.code != cli.ExitConfig || rec.called {
		t.Fatalf("exit code %d, serve called %v; stderr: %s", r.code, rec.called, r.stderr)
	}
	want := []string{
		"cyberdrew: invalid configuration:",
		`  --shutdown-timeout "soon": want a duration such as 30s, 15m or 720h`,
		`  --log-level "loud": want debug, info, warn or error`,
		`  --max-event-size "big": want a size such as 262144, 256KiB or 10MiB`,
		`  CYBERDREW_RETENTION "a month": want a duration such as 30s, 15m or 720h`,
		"  --addr 192.168.1.10:8288 is not a loopback address: set INNGEST_EVENT_KEY (--event-key) to guard the event API",
		"  REDIS_URL (--store): malformed Redis URL: want redis://[user:password@]host:port[/db], or host:port,host:port… for a cluster",
		"  --workers: must be at least 1, got -2",
		`  --log-format: must be auto, text or json, got "yaml"`,
	}
	if got := strings.Split(strings.TrimSpace(r.stderr), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("stderr:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(r.stderr, "hunter") {
		t.Errorf("stderr shows a secret: %s", r.stderr)
	}
}

// serveVars is every environment variable serve reads, with its flag and
// the default help shows ("" for none).
var serveVars = []struct{ env, flag, def string }{
	{"CYBERDREW_ADDR", "--addr", `"127.0.0.1:8288"`},
	{"CYBERDREW_DATA_DIR", "--data-dir", `"/home/drew/.local/share/cyberdrew"`},
	{"CYBERDREW_STORE", "--store", ""},
	{"REDIS_URL", "--store", ""},
	{"CYBERDREW_WORKERS", "--workers", "16"},
	{"CYBERDREW_LEASE", "--lease", "5s"},
	{"CYBERDREW_RETENTION", "--retention", "720h0m0s"},
	{"CYBERDREW_LOG_FORMAT", "--log-format", `"auto"`},
	{"CYBERDREW_LOG_LEVEL", "--log-level", "info"},
	{"INNGEST_EVENT_KEY", "--event-key", ""},
	{"INNGEST_SIGNING_KEY", "--signing-key", ""},
	{"INNGEST_SIGNING_KEY_FALLBACK", "--signing-key-fallback", ""},
	{"CYBERDREW_SHUTDOWN_TIMEOUT", "--shutdown-timeout", "30s"},
	{"CYBERDREW_MAX_EVENT_SIZE", "--max-event-size", "256KiB"},
	{"CYBERDREW_MAX_REQUEST_SIZE", "--max-request-size", "10MiB"},
	{"CYBERDREW_MAX_BATCH", "--max-batch", "5000"},
	{"CYBERDREW_STREAM_MAX_SUBSCRIBERS", "--stream-max-subscribers", "256"},
	{"RESEND_WEBHOOK_SECRET", "--resend-webhook-secret", ""},
	{"GITHUB_WEBHOOK_SECRET", "--github-webhook-secret", ""},
}

func TestServeHelp(t *testing.T) {
	t.Parallel()
	secrets := map[string]string{
		"HOME":                         "/home/drew",
		"INNGEST_EVENT_KEY":            "evkey-secret-1",
		"INNGEST_SIGNING_KEY":          "signkey-secret-2",
		"INNGEST_SIGNING_KEY_FALLBACK": "signkey-secret-3",
		"REDIS_URL":                    "redis://:secret-4@localhost:6379",
		"CYBERDREW_STORE":              "redis://:secret-5@localhost:6379",
		"RESEND_WEBHOOK_SECRET":        "whsec_c2VjcmV0LTY=",
		"GITHUB_WEBHOOK_SECRET":        "secret-7",
	}
	rec := &recorder{}
	r := run(t, rec, secrets, "serve", "--help")
	if r.code != cli.ExitOK || rec.called {
		t.Fatalf("exit code %d, serve called %v", r.code, rec.called)
	}
	_, flags, ok := strings.Cut(r.stdout, "\nFlags:\n")
	if !ok {
		t.Fatalf("help has no Flags section:\n%s", r.stdout)
	}
	lines := strings.Split(flags, "\n")
	for _, v := range serveVars {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), v.flag+" ") })
		if i < 0 {
			t.Errorf("help has no %s line", v.flag)
			continue
		}
		line := lines[i]
		if !strings.Contains(line, v.env) {
			t.Errorf("help line %q does not name %s", line, v.env)
		}
		switch {
		case v.def == "" && strings.Contains(line, "(default"):
			t.Errorf("help line %q shows a default", line)
		case v.def != "" && !strings.HasSuffix(line, "(default "+v.def+")"):
			t.Errorf("help line %q, want default %s", line, v.def)
		}
	}
	for env, v := range secrets {
		if env != "HOME" && strings.Contains(r.stdout, v) {
			t.Errorf("help shows the value of %s:\n%s", env, r.stdout)
		}
	}
}

// TestReadmeDocumentsServe keeps the README's configuration table in step
// with the flags.
func TestReadmeDocumentsServe(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range serveVars {
		if !strings.Contains(string(readme), "`"+v.env+"`") || !strings.Contains(string(readme), "`"+v.flag) {
			t.Errorf("README does not document %s / %s", v.flag, v.env)
		}
	}
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format string
		want   string
		took   string // a duration as written
	}{
		{config.LogAuto, `{"time":`, `"took":"1m30s"`}, // a buffer is not a terminal
		{config.LogJSON, `{"time":`, `"took":"1m30s"`},
		{config.LogText, `time=`, `took=1m30s`},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		logger := cli.NewLogger(&buf, tt.format, slog.LevelInfo)
		logger.Debug("hidden")
		logger.Info("shown", "took", 90*time.Second)
		out := buf.String()
		if !strings.HasPrefix(out, tt.want) || strings.Contains(out, "hidden") || !strings.Contains(out, "shown") || !strings.Contains(out, tt.took) {
			t.Errorf("format %s: log = %q, want %s", tt.format, out, tt.took)
		}
	}
}

// TestJSONErrors checks that with -o json a failure that printed nothing
// prints {"error","exit_code"} on stdout, and the message on stderr too.
func TestJSONErrors(t *testing.T) {
	t.Parallel()
	// A port nobody listens on: a listener closed before the command runs.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	tests := []struct {
		name string
		args []string
		want cli.ExitCode
	}{
		{name: "daemon down", args: []string{"runs", "list", "--server", addr, "-o", "json"}, want: cli.ExitUnavailable},
		{name: "refresh", args: []string{"refresh", "--server", addr, "-o", "json"}, want: cli.ExitUnavailable},
		{name: "usage", args: []string{"runs", "list", "--since", "yesterday", "-o", "json"}, want: cli.ExitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, &recorder{}, home, tt.args...)
			if r.code != tt.want {
				t.Fatalf("exit code %d, want %d; stderr %q", r.code, tt.want, r.stderr)
			}
			var got struct {
				Error    string `json:"error"`
				ExitCode int    `json:"exit_code"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("stdout is not one JSON object: %v\n%s", err, r.stdout)
			}
			if got.ExitCode != int(tt.want) || got.Error == "" || !strings.Contains(r.stderr, got.Error) {
				t.Errorf("stdout = %+v, stderr = %q", got, r.stderr)
			}
		})
	}
	t.Run("table output stays quiet on stdout", func(t *testing.T) {
		t.Parallel()
		r := run(t, &recorder{}, home, "runs", "list", "--server", addr)
		if r.code != cli.ExitUnavailable || r.stdout != "" {
			t.Errorf("exit code %d, stdout %q", r.code, r.stdout)
		}
	})
}

// TestReadmeStaysInTheRepository checks that a newcomer can follow the
// README from a fresh clone: every file it links or names under docs/
// exists in the repository, nothing points outside it, and the quick start
// puts the binary its examples call on the PATH.
func TestReadmeStaysInTheRepository(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	if strings.Contains(text, "../") {
		t.Errorf("README points outside the repository (../)")
	}
	for _, m := range regexp.MustCompile(`\]\(([^)#:]+)`).FindAllStringSubmatch(text, -1) {
		if _, err := os.Stat(filepath.Join(root, m[1])); err != nil {
			t.Errorf("README links %s: %v", m[1], err)
		}
	}
	if !strings.Contains(text, "go install ./cmd/cyberdrew") {
		t.Errorf("the quick start does not put cyberdrew on the PATH")
	}
}

// TestUnavailableSaysWhy: a 503 from the daemon is reported with the
// daemon's own reason, which is not always its store (a limit of streams
// open): it used to say "its store is unavailable" for every 503.
func TestUnavailableSaysWhy(t *testing.T) {
	t.Parallel()
	daemon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"too many streams open"}`))
	}))
	defer daemon.Close()
	r := run(t, &recorder{}, home, "runs", "list", "--server", daemon.URL)
	if r.code != cli.ExitUnavailable || !strings.Contains(r.stderr, "cannot serve this now (503): too many streams open") || strings.Contains(r.stderr, "store") {
		t.Errorf("exit %d, stderr %q; want exit 4 with the daemon's reason and no word of its store", r.code, r.stderr)
	}
}

// TestSilentServerIsUnreachable: a --server that takes the connection and
// never answers (a wrong port, a frozen proxy) ends each command with exit
// 4 naming the URL, where the commands used to wait forever.
func TestSilentServerIsUnreachable(t *testing.T) {
	t.Parallel()
	url := "http://" + testkit.BlackHole(t)
	env := map[string]string{"CYBERDREW_REQUEST_TIMEOUT": "300ms"}
	for _, args := range [][]string{
		{"runs", "list"},
		{"send", "test/hello.world"},
		{"events", "show", "01JNQ5S9M3ZKX4Y6V8W0A2B4C6"},
	} {
		r := run(t, &recorder{}, env, append(args, "--server", url)...)
		if r.code != cli.ExitUnavailable || !strings.Contains(r.stderr, url) || !strings.Contains(r.stderr, "did not answer within 300ms") {
			t.Errorf("%v: exit %d, stderr %q; want %d naming %s and the wait", args, r.code, r.stderr, cli.ExitUnavailable, url)
		}
	}
	if r := run(t, &recorder{}, map[string]string{"CYBERDREW_REQUEST_TIMEOUT": "soon"}, "runs", "list", "--server", url); r.code != cli.ExitUsage {
		t.Errorf("CYBERDREW_REQUEST_TIMEOUT=soon: exit %d, want %d", r.code, cli.ExitUsage)
	}
}

// TestServeNamesWhereAValueCameFrom: a setting from the environment that
// Validate refuses is named by its variable, and one that does not parse
// is reported once, not again as the zero it left behind.
func TestServeNamesWhereAValueCameFrom(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HOME": "/home/drew", "CYBERDREW_WORKERS": "abc", "CYBERDREW_LEASE": "1ms"}
	r := run(t, &recorder{}, env, "serve")
	if r.code != cli.ExitConfig {
		t.Fatalf("exit %d, want %d; stderr %q", r.code, cli.ExitConfig, r.stderr)
	}
	for _, want := range []string{`CYBERDREW_WORKERS "abc": want a whole number`, "CYBERDREW_LEASE (--lease): must be at least 1s, got 1ms"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q lacks %q", r.stderr, want)
		}
	}
	if strings.Contains(r.stderr, "--workers: must be at least 1") {
		t.Errorf("stderr %q reports the unparsed workers twice", r.stderr)
	}
	r = run(t, &recorder{}, home, "serve", "--workers", "x")
	if strings.Contains(r.stderr, "--workers: must be at least 1") || !strings.Contains(r.stderr, `--workers "x": want a whole number`) {
		t.Errorf("--workers x: stderr %q, want the parse problem only", r.stderr)
	}
}
