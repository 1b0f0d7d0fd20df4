package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/jobs"
)

// setting ties a flag to the environment variables that set it when the
// flag is not given, first set one wins.
type setting struct {
	flag string
	env  []string
	// secret settings never show their value: not in help, not in errors.
	secret bool
}

// serveSettings lists every serve flag with its environment variables.
var serveSettings = []setting{
	{flag: "addr", env: []string{"CYBERDREW_ADDR"}},
	{flag: "data-dir", env: []string{"CYBERDREW_DATA_DIR"}},
	{flag: "store", env: []string{"CYBERDREW_STORE", "REDIS_URL"}, secret: true},
	{flag: "workers", env: []string{"CYBERDREW_WORKERS"}},
	{flag: "lease", env: []string{"CYBERDREW_LEASE"}},
	{flag: "retention", env: []string{"CYBERDREW_RETENTION"}},
	{flag: "log-format", env: []string{"CYBERDREW_LOG_FORMAT"}},
	{flag: "log-level", env: []string{"CYBERDREW_LOG_LEVEL"}},
	{flag: "event-key", env: []string{"INNGEST_EVENT_KEY"}, secret: true},
	{flag: "signing-key", env: []string{"INNGEST_SIGNING_KEY"}, secret: true},
	{flag: "signing-key-fallback", env: []string{"INNGEST_SIGNING_KEY_FALLBACK"}, secret: true},
	{flag: "shutdown-timeout", env: []string{"CYBERDREW_SHUTDOWN_TIMEOUT"}},
	{flag: "intake-timeout", env: []string{"CYBERDREW_INTAKE_TIMEOUT"}},
	{flag: "redis-min-replicas", env: []string{"CYBERDREW_REDIS_MIN_REPLICAS"}},
	{flag: "redis-partitions", env: []string{"CYBERDREW_REDIS_PARTITIONS"}},
	{flag: "redis-replica-timeout", env: []string{"CYBERDREW_REDIS_REPLICA_TIMEOUT"}},
	{flag: "max-event-size", env: []string{"CYBERDREW_MAX_EVENT_SIZE"}},
	{flag: "max-request-size", env: []string{"CYBERDREW_MAX_REQUEST_SIZE"}},
	{flag: "max-batch", env: []string{"CYBERDREW_MAX_BATCH"}},
	{flag: "stream-max-subscribers", env: []string{"CYBERDREW_STREAM_MAX_SUBSCRIBERS"}},
	{flag: "stream-stall-timeout", env: []string{"CYBERDREW_STREAM_STALL_TIMEOUT"}},
	{flag: "metrics-public", env: []string{"CYBERDREW_METRICS_PUBLIC"}},
	{flag: "resend-api-key", env: []string{"RESEND_API_KEY"}, secret: true},
	{flag: "resend-base-url", env: []string{"CYBERDREW_RESEND_BASE_URL"}},
	{flag: "contact-from", env: []string{"CYBERDREW_CONTACT_FROM"}},
	{flag: "contact-to", env: []string{"CYBERDREW_CONTACT_TO"}},
	{flag: "github-token", env: []string{"GITHUB_TOKEN"}, secret: true},
	{flag: "github-user", env: []string{"CYBERDREW_GITHUB_USER"}},
	{flag: "github-api-url", env: []string{"CYBERDREW_GITHUB_API_URL"}},
	{flag: "milestone-webhook", env: []string{"CYBERDREW_MILESTONE_WEBHOOK"}, secret: true},
	{flag: "resend-webhook-secret", env: []string{"RESEND_WEBHOOK_SECRET"}, secret: true},
	{flag: "github-webhook-secret", env: []string{"GITHUB_WEBHOOK_SECRET"}, secret: true},
	{flag: "site-prefix", env: []string{"CYBERDREW_SITE_PREFIX"}},
	{flag: "cors-origins", env: []string{"CYBERDREW_CORS_ORIGINS"}},
	{flag: "trusted-proxies", env: []string{"CYBERDREW_TRUSTED_PROXIES"}},
	{flag: "templates", env: []string{"CYBERDREW_TEMPLATES"}},
	{flag: "analytics-path", env: []string{"CYBERDREW_ANALYTICS_PATH"}},
}

// serveOptions is the serve command's state: the configuration its flags
// write into and the problems met while reading them.
type serveOptions struct {
	cfg      config.Serve
	problems []error
	// unparsed are the flags ("--workers") whose value, given or from
	// the environment, did not parse: their own problem says so, and
	// Validate's about the value left behind would only mislead.
	unparsed map[string]bool
}

func newServeCmd(opts Options) *cobra.Command {
	o := &serveOptions{cfg: config.DefaultServe(opts.Getenv), unparsed: map[string]bool{}}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: event intake, workers, scheduler and admin API",
		Long: `Run the daemon: the Inngest-compatible event API (POST /e/{eventKey}), the
workers that execute runs, the cron scheduler and the admin API (/v1/…).

Each flag can also be set by the environment variable named in its help;
a flag given on the command line wins over the environment. On a loopback
--addr an unset key leaves its side open (dev mode); on any other address
serve refuses to start unless INNGEST_EVENT_KEY and INNGEST_SIGNING_KEY are
both set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Serve == nil {
				return errors.New("serve is not available in this build")
			}
			cfg, err := o.load(cmd.Flags(), opts.Getenv)
			if err != nil {
				return err
			}
			logger := NewLogger(cmd.ErrOrStderr(), cfg.LogFormat, cfg.LogLevel)
			logger.Debug("configuration", "config", cfg)
			ctx, stop := stopOnSignal(cmd.Context(), logger)
			defer stop()
			return opts.Serve(ctx, cfg, logger)
		},
	}

	c := &o.cfg
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address, host:port")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the embedded store")
	fs.StringVar(&c.Store, "store", c.Store, "store: empty for SQLite in the data dir, sqlite:///path or a path, redis://… or rediss://… (several host:port for a Redis Cluster) or redis+sentinel://host:port,…/master[/db]")
	fs.IntVar(&c.Workers, "workers", c.Workers, "runs executed at once")
	fs.DurationVar(&c.Lease, "lease", c.Lease, "how long a worker holds a run without renewing it (a daemon renews all its leases every third of it); a crashed daemon's runs are taken over after it (at least 1s)")
	fs.DurationVar(&c.Retention, "retention", c.Retention, "keep finished runs and their events this long; 0 keeps them forever")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: auto (text on a terminal, JSON otherwise), text or json")
	fs.Var(levelValue{&c.LogLevel}, "log-level", "log level: debug, info, warn or error")
	fs.Var(listValue{&c.EventKeys}, "event-key", "event keys accepted by the event API, comma-separated; unset, it answers only requests straight from this machine")
	fs.StringVar(&c.SigningKey, "signing-key", c.SigningKey, "bearer key of the admin API and /metrics; unset, they answer only requests straight from this machine")
	fs.StringVar(&c.SigningKeyFallback, "signing-key-fallback", c.SigningKeyFallback, "previous signing key, still accepted while keys rotate")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "time in-flight steps get to finish on shutdown")
	fs.DurationVar(&c.IntakeTimeout, "intake-timeout", c.IntakeTimeout, "how long the event API (and the site's routes) wait for the store before they answer 503 (resend with the same id)")
	fs.IntVar(&c.RedisMinReplicas, "redis-min-replicas", c.RedisMinReplicas, "Redis only: every acknowledged write (events, step results, run ends) waits for this many replicas (WAIT); fewer answer 503, resend with the same id; 0 waits for none")
	fs.IntVar(&c.RedisPartitions, "redis-partitions", c.RedisPartitions, "Redis only, set when the keyspace is created: spread the engine's records over this many partitions, each a Redis Cluster hash slot of its own, so a cluster's masters share them (12 spreads evenly over three masters); a keyspace keeps its number")
	fs.DurationVar(&c.RedisReplicaTimeout, "redis-replica-timeout", c.RedisReplicaTimeout, "how long a write waits for --redis-min-replicas replicas (shorter than --intake-timeout)")
	fs.Var(&c.MaxEventSize, "max-event-size", "largest event accepted")
	fs.Var(&c.MaxRequestSize, "max-request-size", "largest event API request accepted")
	fs.IntVar(&c.MaxBatch, "max-batch", c.MaxBatch, "most events in one event API request")
	fs.DurationVar(&c.StreamStall, "stream-stall-timeout", c.StreamStall, "how long a /v1/stream subscriber may read nothing while changes wait for it before it is dropped")
	fs.IntVar(&c.MaxStreams, "stream-max-subscribers", c.MaxStreams, "most /v1/stream subscribers at once; past it a subscriber gets 503 with Retry-After")
	fs.BoolVar(&c.MetricsPublic, "metrics-public", c.MetricsPublic, "serve /metrics without the bearer signing key")
	fs.StringVar(&c.ResendAPIKey, "resend-api-key", "", "Resend API key; unset writes emails to <data-dir>/outbox instead of sending them")
	fs.StringVar(&c.ResendBaseURL, "resend-base-url", c.ResendBaseURL, "Resend-compatible API base URL (default Resend's)")
	fs.StringVar(&c.ContactFrom, "contact-from", c.ContactFrom, "sender of the site's emails")
	fs.StringVar(&c.ContactTo, "contact-to", c.ContactTo, "owner's address: receives contact messages and milestone news")
	fs.StringVar(&c.GitHubToken, "github-token", "", "GitHub token for the contributions refresh; unset disables it")
	fs.StringVar(&c.GitHubUser, "github-user", c.GitHubUser, "GitHub user whose contributions are cached and served")
	fs.StringVar(&c.GitHubAPIURL, "github-api-url", c.GitHubAPIURL, "GitHub GraphQL endpoint (GitHub Enterprise; default api.github.com)")
	fs.StringVar(&c.MilestoneWebhook, "milestone-webhook", "", "Slack-compatible webhook URL told of view milestones")
	fs.StringVar(&c.ResendWebhookSecret, "resend-webhook-secret", "", "signing secret (whsec_…) of the Resend webhook; unset turns POST /webhooks/resend off")
	fs.StringVar(&c.GitHubWebhookSecret, "github-webhook-secret", "", "secret of the GitHub webhook; unset turns POST /webhooks/github off")
	fs.StringVar(&c.SitePrefix, "site-prefix", c.SitePrefix, "prefix of the site's data keys")
	fs.Var(listValue{&c.CORSOrigins}, "cors-origins", "origins allowed to call the site routes from a browser, comma-separated (* for any)")
	fs.StringVar(&c.Templates, "templates", c.Templates, "directory of email templates (layout.html.tmpl, contact.txt.tmpl, …) that replace the built-in ones of the same name; checked at start-up")
	fs.StringVar(&c.AnalyticsPath, "analytics-path", c.AnalyticsPath, "path of the public analytics page, or off")
	fs.Var(listValue{&c.TrustedProxies}, "trusted-proxies", "proxies (CIDRs or addresses, comma-separated) whose X-Forwarded-For the site routes trust for the client address; opens nothing without keys")

	for _, s := range serveSettings {
		f := fs.Lookup(s.flag)
		f.Usage += " (env " + strings.Join(s.env, ", then ") + ")"
		f.Value = &deferredValue{Value: f.Value, name: "--" + s.flag, secret: s.secret, problems: &o.problems, unparsed: o.unparsed}
	}
	return cmd
}

// load completes the configuration: environment variables fill the flags
// not given, then Validate runs. Every problem is reported at once.
func (o *serveOptions) load(fs *pflag.FlagSet, getenv func(string) string) (config.Serve, error) {
	fromEnv := map[string]string{} // "--lease" -> "CYBERDREW_LEASE"
	for _, s := range serveSettings {
		f := fs.Lookup(s.flag)
		if f.Changed {
			continue
		}
		for _, name := range s.env {
			v := getenv(name)
			if v == "" {
				continue
			}
			if name == "REDIS_URL" && !config.IsRedisURL(v) {
				// REDIS_URL names a Redis; a path there would quietly give
				// this daemon a SQLite file of its own.
				o.problems = append(o.problems, errors.New("REDIS_URL: want a redis://, rediss:// or redis+sentinel:// URL (a SQLite file goes in --store or CYBERDREW_STORE)"))
				break
			}
			if err := f.Value.(*deferredValue).Value.Set(v); err != nil {
				o.problems = append(o.problems, valueProblem(name, v, f.Value.Type(), s.secret, err))
				o.unparsed["--"+s.flag] = true
			}
			fromEnv["--"+s.flag] = name
			break
		}
	}
	problems := o.problems
	var found []error
	if err := o.cfg.Validate(); err != nil {
		found = []error{err}
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			found = joined.Unwrap()
		}
	}
	// The email templates are checked with the rest, before the daemon
	// opens its store (it loads them again to use them).
	if dir := o.cfg.Templates; dir != "" {
		if _, err := jobs.LoadTemplates(dir); err != nil {
			found = append(found, fmt.Errorf("--templates: %w", err))
		}
	}
	for _, p := range found {
		// Each problem names its flag ("--lease: …"); a value from the
		// environment is named by its variable too.
		flag, rest, _ := strings.Cut(p.Error(), ":")
		switch {
		case o.unparsed[flag]:
			continue
		case fromEnv[flag] != "":
			p = fmt.Errorf("%s (%s):%s", fromEnv[flag], flag, rest)
		}
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		return config.Serve{}, &configError{problems: problems}
	}
	return o.cfg, nil
}

// deferredValue wraps a flag's value so that a value that does not parse
// is recorded as a configuration problem instead of stopping the parse:
// serve then reports it together with every other problem.
type deferredValue struct {
	pflag.Value
	name     string
	secret   bool
	problems *[]error
	unparsed map[string]bool
}

func (d *deferredValue) Set(s string) error {
	if err := d.Value.Set(s); err != nil {
		*d.problems = append(*d.problems, valueProblem(d.name, s, d.Value.Type(), d.secret, err))
		d.unparsed[d.name] = true
	}
	return nil
}

// valueProblem says why a flag's or a variable's value does not parse,
// without showing a secret value.
func valueProblem(name, value, typ string, secret bool, err error) error {
	if secret {
		return fmt.Errorf("%s: invalid value", name)
	}
	reason := err.Error()
	switch typ {
	case "int":
		reason = "want a whole number"
	case "duration":
		reason = "want a duration such as 30s, 15m or 720h"
	case "bool":
		reason = "want true or false"
	}
	return fmt.Errorf("%s %q: %s", name, value, reason)
}

// levelValue is a log level flag: debug, info, warn or error.
type levelValue struct{ level *slog.Level }

func (v levelValue) Set(s string) error {
	if err := v.level.UnmarshalText([]byte(s)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	return nil
}

func (v levelValue) String() string { return strings.ToLower(v.level.String()) }
func (v levelValue) Type() string   { return "level" }

// listValue is a comma-separated list flag; repeating the flag adds to it.
type listValue struct{ list *[]string }

func (v listValue) Set(s string) error {
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*v.list = append(*v.list, item)
		}
	}
	return nil
}

func (v listValue) String() string { return strings.Join(*v.list, ",") }
func (v listValue) Type() string   { return "keys" }

// stopOnSignal is ctx, ended by the first SIGINT, SIGTERM or SIGHUP, which
// it logs: each stops the daemon gracefully. SIGHUP is a closed terminal
// (serve run in the foreground of an SSH session): there is no
// configuration to reload. stop releases the signals.
func stopOnSignal(ctx context.Context, logger *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		select {
		case sig := <-sigs:
			logger.Info("stopping on a signal", "component", "daemon", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
	}
}
