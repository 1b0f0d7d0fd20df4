// Package daemon wires `cyberdrew serve`: it opens the store, starts the
// engine, the worker pool, the cron scheduler, retention and the HTTP server
// together, and stops them together in order — intake, scheduler, workers
// (drained within the shutdown timeout), engine, store — when its context
// ends.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/metrics"
	"github.com/dcyfr/cyberdrew/internal/site"
	"github.com/dcyfr/cyberdrew/internal/store"
	redisstore "github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
	"github.com/dcyfr/cyberdrew/internal/webhooks"
)

// Serve runs the daemon until ctx ends or one of its parts dies, then shuts
// it down gracefully; a part that died is its error.
func Serve(ctx context.Context, cfg config.Serve, logger *slog.Logger) error {
	d, err := New(ctx, cfg, logger, Options{})
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Told to stop while its store was being opened.
			logger.Info("cyberdrew stopped before serving", "component", "daemon")
			return nil
		}
		return err
	}
	return d.Run(ctx)
}

// stopSlack is the time Stop gets beyond the shutdown timeout: the HTTP
// server's shutdown, the runs' hand-back and closing the store.
const stopSlack = 5 * time.Second

// Run starts the daemon, serves until ctx ends or a part dies (the HTTP
// server fails, the worker pool stops claiming), then stops it within the
// shutdown timeout plus stopSlack. A part that died is returned as an
// error, so that `serve` exits non-zero.
func (d *Daemon) Run(ctx context.Context) error {
	if ctx.Err() != nil {
		// Told to stop while it was being built (a store slow to answer):
		// it never serves, and has nothing to drain.
		d.undo(nil)
		d.log.Info("cyberdrew stopped before serving")
		return nil
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	var died error
	select {
	case <-ctx.Done():
	case died = <-d.died:
		d.log.Error("a part of the daemon died; shutting down", "err", died)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout+stopSlack)
	defer cancel()
	return errors.Join(died, d.Stop(stopCtx))
}

// Daemon is one running `cyberdrew serve`.
type Daemon struct {
	cfg   config.Serve
	log   *slog.Logger
	clock clockwork.Clock

	store     store.Store
	engine    *engine.Engine
	workers   *engine.WorkerPool
	scheduler *engine.Scheduler
	retention *Retention
	closing   chan struct{} // closed when Stop begins: ends open streams
	listener  net.Listener
	http      *http.Server
	served    chan error
	died      chan error // the first part that died before Stop
	given     net.Listener
}

// The Redis store counts the site routes' rate limits for every daemon on it.
var _ site.RateCounter = (*redisstore.Store)(nil)

// Options are the daemon's parts that tests replace.
type Options struct {
	Clock clockwork.Clock // nil: the real clock
	// Functions to register; nil registers the site's (jobs.Functions).
	Functions []engine.Function
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers; zero takes DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// Listener, when set, is served instead of listening on cfg.Addr.
	Listener net.Listener
}

// The HTTP server's limits: a slow or idle client cannot hold a connection
// for longer, nor send larger headers. The stream lifts the write timeout
// for itself.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	readTimeout              = time.Minute
	writeTimeout             = 2 * time.Minute
	idleTimeout              = 2 * time.Minute
	maxHeaderBytes           = 64 << 10
)

// New opens the store and builds every part; nothing runs until Start.
func New(ctx context.Context, cfg config.Serve, logger *slog.Logger, opts Options) (*Daemon, error) {
	clock := opts.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	spec, err := config.ParseStore(cfg.Store, cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("daemon: store: %w", err)
	}
	var st store.Store
	switch spec.Kind {
	case config.StoreSQLite:
		st, err = sqlite.Open(ctx, spec.Path, sqlite.Options{Clock: clock, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
	case config.StoreRedis:
		if redisstore.IsClusterURL(spec.URL) && opts.Functions == nil {
			// The site's functions commit their key-value writes with their
			// steps, in one script, so in the engine's slot (or, with
			// partitions, ahead of the record in one slot of their own):
			// without the tag every such step would fail, so the daemon does
			// not start, and says so before anything is written to the
			// cluster.
			slot, ok := "the engine's hash slot (a prefix holding {engine})", redisstore.InEngineSlot(cfg.SitePrefix)
			if cfg.RedisPartitions > 1 {
				slot, ok = "one hash slot (a prefix holding a hash tag)", redisstore.InOneSlot(cfg.SitePrefix)
			}
			if !ok {
				return nil, fmt.Errorf("daemon: %w: on a Redis Cluster the site's keys must share %s: set --site-prefix (CYBERDREW_SITE_PREFIX), for example to 'site:{engine}:' (now %q)", store.ErrMisconfigured, slot, cfg.SitePrefix)
			}
		}
		rs, err := redisstore.Open(ctx, spec.URL, redisstore.Options{Clock: clock, Logger: logger,
			MinReplicas: cfg.RedisMinReplicas, ReplicaTimeout: cfg.RedisReplicaTimeout, Partitions: cfg.RedisPartitions})
		if err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
		st = rs
	default:
		return nil, fmt.Errorf("daemon: unknown store kind %q", spec.Kind)
	}
	fns := opts.Functions
	if fns == nil {
		deps, err := siteDeps(cfg, st, clock, logger)
		if err != nil {
			st.Close()
			return nil, err
		}
		fns = jobs.Functions(deps)
	}
	m := metrics.New(st.QueueDepth)
	ids := make([]string, len(fns))
	skips := map[string][]string{}
	for i, fn := range fns {
		ids[i] = fn.ID
		if reasons := skipReasons(fn); len(reasons) > 0 {
			skips[fn.ID] = reasons
		}
	}
	m.Declare(metrics.Series{
		Functions:        ids,
		FinishStatuses:   []string{string(store.StatusCompleted), string(store.StatusFailed), string(store.StatusCancelled)},
		RejectionReasons: api.RejectionReasons,
		Emails:           []string{jobs.EmailNotification, jobs.EmailConfirmation},
		DeliveryStatuses: jobs.DeliveryStatuses,
		Skips:            skips,
	})
	eng, err := engine.New(engine.Options{Store: st, Clock: clock, Logger: logger, Validate: jobs.Validate, Observer: m})
	if err == nil {
		err = eng.Register(fns...)
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d := &Daemon{
		cfg: cfg, log: logger.With("component", "daemon"), clock: clock,
		store: st, engine: eng,
		workers:   engine.NewWorkerPool(eng, engine.PoolOptions{Workers: cfg.Workers, LeaseTTL: cfg.Lease}),
		scheduler: engine.NewScheduler(eng),
		retention: NewRetention(st, clock, cfg.Retention, fns, logger),
		closing:   make(chan struct{}),
		died:      make(chan error, 1),
		given:     opts.Listener,
	}
	proxies, _ := cfg.TrustedProxyPrefixes() // checked by cfg.Validate
	if len(proxies) > 0 && (len(cfg.EventKeys) == 0 || cfg.SigningKey == "") {
		d.log.Warn("CYBERDREW_TRUSTED_PROXIES opens nothing: while a key is unset, its side refuses every request through a proxy with 401; set INNGEST_EVENT_KEY and INNGEST_SIGNING_KEY",
			"event_key", len(cfg.EventKeys) > 0, "signing_key", cfg.SigningKey != "")
	}
	siteCfg := site.Config{
		Origins: cfg.CORSOrigins, TrustedProxies: proxies, GitHubUser: cfg.GitHubUser, Prefix: cfg.SitePrefix,
		StoreTimeout: cfg.IntakeTimeout,
	}
	if cfg.AnalyticsPath != config.AnalyticsOff {
		siteCfg.AnalyticsPage = cfg.AnalyticsPath
	}
	if cfg.GitHubToken == "" {
		siteCfg.RefreshDisabled = jobs.ErrNoGitHubToken.Error()
	}
	// On Redis the site's rate limits are counted in the store (RateCounter).
	siteRoutes := site.New(siteCfg, eng, st, clock, logger)
	hooks := webhooks.New(webhooks.Config{
		ResendSecret: cfg.ResendWebhookSecret, GitHubSecret: cfg.GitHubWebhookSecret,
		RefreshDisabled: siteCfg.RefreshDisabled, Prefix: cfg.SitePrefix,
	}, eng, st, m, clock, logger)
	routes := siteRoutes.Routes()
	maps.Copy(routes, hooks.Routes())
	handler := api.New(api.Config{
		Routes:         routes,
		Deliveries:     hooks,
		Workers:        d.workers,
		EventKeys:      cfg.EventKeys,
		SigningKeys:    cfg.SigningKeys(),
		MaxEventSize:   int64(cfg.MaxEventSize),
		MaxRequestSize: int64(cfg.MaxRequestSize),
		MaxBatch:       cfg.MaxBatch,
		IntakeTimeout:  cfg.IntakeTimeout,
		Clock:          clock,
		MaxStreams:     cfg.MaxStreams,
		StreamStall:    cfg.StreamStall,
		Closing:        d.closing,
		Metrics:        m.Handler(),
		MetricsPublic:  cfg.MetricsPublic,
		Observer:       m,
	}, eng, st, logger)
	headerTimeout := opts.ReadHeaderTimeout
	if headerTimeout <= 0 {
		headerTimeout = DefaultReadHeaderTimeout
	}
	d.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return d, nil
}

// siteDeps builds the site functions' dependencies from the
// configuration: Resend when RESEND_API_KEY is set, else the dev outbox in
// the data dir; a GitHub client when GITHUB_TOKEN is set.
func siteDeps(cfg config.Serve, st store.Store, clock clockwork.Clock, logger *slog.Logger) (jobs.Deps, error) {
	deps := jobs.Deps{
		KV: st, Clock: clock, Logger: logger,
		Config: jobs.Config{
			ContactFrom: cfg.ContactFrom, ContactTo: cfg.ContactTo, GitHubUser: cfg.GitHubUser,
			MilestoneWebhook: cfg.MilestoneWebhook, Prefix: cfg.SitePrefix,
		},
	}
	log := logger.With("component", "daemon")
	tpl, err := jobs.LoadTemplates(cfg.Templates)
	if err != nil {
		return deps, fmt.Errorf("daemon: --templates: %w: %w", store.ErrMisconfigured, err)
	}
	if len(tpl.Overridden) > 0 {
		log.Info("email templates overridden", "files", tpl.Overridden)
	}
	deps.Templates = tpl
	if cfg.ResendAPIKey != "" {
		m, err := jobs.NewResendMailer(cfg.ResendAPIKey, cfg.ResendBaseURL, nil, clock)
		if err != nil {
			return deps, fmt.Errorf("daemon: %w", err)
		}
		deps.Mailer = m
	} else {
		dir := filepath.Join(cfg.DataDir, "outbox")
		deps.Mailer = jobs.Outbox{Dir: dir}
		log.Warn("RESEND_API_KEY is not set: emails go to the dev outbox, not delivered", "outbox", dir)
		if cfg.ContactTo == "" {
			log.Warn("CYBERDREW_CONTACT_TO is not set: in dev the owner's mail (contact notifications, milestones) goes to the From address, in the dev outbox; production (RESEND_API_KEY set) requires it",
				"owner", cfg.ContactFrom, "outbox", dir)
		}
	}
	if cfg.GitHubToken != "" {
		deps.GitHub = jobs.NewGitHubClient(cfg.GitHubToken, cfg.GitHubAPIURL, nil, clock)
	} else {
		log.Warn("GITHUB_TOKEN is not set: the GitHub contributions refresh is disabled")
	}
	return deps, nil
}

// Start starts every part, serving HTTP last. When a part fails to start,
// Start stops the parts it started and closes the store: the daemon is
// done with.
func (d *Daemon) Start(ctx context.Context) (err error) {
	var started []part
	defer func() {
		if err != nil {
			d.undo(started)
		}
	}()
	ln := d.given
	if ln == nil {
		if ln, err = net.Listen("tcp", d.cfg.Addr); err != nil {
			return listenError(d.cfg.Addr, err)
		}
	}
	d.listener = ln
	for _, p := range []part{d.engine, d.workers, d.scheduler, d.retention} {
		if err := p.Start(ctx); err != nil {
			return fmt.Errorf("daemon: start: %w", err)
		}
		started = append(started, p)
	}
	d.served = make(chan error, 1)
	go func() {
		err := d.http.Serve(ln)
		d.served <- err
		d.fail(fmt.Errorf("daemon: http server: %w", err))
	}()
	go func() {
		<-d.workers.Done()
		d.fail(errors.New("daemon: the worker pool stopped claiming runs"))
	}()
	d.log.Info("cyberdrew serving", "addr", ln.Addr().String(), "store", d.store.Kind(), "workers", d.workers.Size(), "functions", len(d.engine.Functions()))
	return nil
}

// part is a long-running part of the daemon.
type part interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// undo stops the started parts, last first, within the shutdown timeout,
// then closes the listener and the store.
func (d *Daemon) undo(started []part) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout+stopSlack)
	defer cancel()
	for i := len(started) - 1; i >= 0; i-- {
		if err := started[i].Stop(ctx); err != nil {
			d.log.Warn("stopping a part after a failed start", "err", err)
		}
	}
	if d.listener != nil {
		d.listener.Close()
	}
	if err := d.store.Close(); err != nil {
		d.log.Warn("closing the store after a failed start", "err", err)
	}
}

// fail reports a part that died, unless Stop has begun (parts end then).
func (d *Daemon) fail(err error) {
	select {
	case <-d.closing:
		return
	default:
	}
	select {
	case d.died <- err:
	default:
	}
}

// Addr is the address the HTTP server listens on.
func (d *Daemon) Addr() string { return d.listener.Addr().String() }

// Store returns the daemon's store.
func (d *Daemon) Store() store.Store { return d.store }

// closeStore closes the store within ctx: a store whose Close hangs (a
// writer stuck on a dead disk) is left behind with an error.
func (d *Daemon) closeStore(ctx context.Context) error {
	closed := make(chan error, 1)
	go func() { closed <- d.store.Close() }()
	select {
	case err := <-closed:
		return err
	case <-ctx.Done():
		return fmt.Errorf("daemon: close store: %w", ctx.Err())
	}
}

// Stop stops intake first, then the scheduler, drains the workers within
// the shutdown timeout, and closes the store.
func (d *Daemon) Stop(ctx context.Context) error {
	var errs []error
	close(d.closing)
	httpCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := d.http.Shutdown(httpCtx); err != nil {
		d.http.Close()
	}
	cancel()
	if err := <-d.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	errs = append(errs, d.scheduler.Stop(ctx), d.retention.Stop(ctx))
	drainCtx, cancel := context.WithTimeout(ctx, d.cfg.ShutdownTimeout)
	errs = append(errs, d.workers.Stop(drainCtx))
	cancel()
	errs = append(errs, d.engine.Stop(ctx), d.closeStore(ctx))
	d.log.Info("cyberdrew stopped")
	return errors.Join(errs...)
}

// skipReasons are the reasons fn's flow control can skip an event for
// (store.SkipReason), in the order the store applies them.
func skipReasons(fn engine.Function) []string {
	var out []string
	if fn.Idempotency != "" {
		out = append(out, string(store.SkipIdempotency))
	}
	if fn.RateLimit != nil {
		out = append(out, string(store.SkipRateLimit))
	}
	if fn.Singleton != nil {
		out = append(out, string(store.SkipSingleton))
	}
	if fn.Debounce != nil {
		out = append(out, string(store.SkipDebounce))
	}
	return out
}

// listenError explains a listen address that cannot be bound. Held by
// another process, it is unavailable (exit 4: the holder may be an old
// daemon still stopping, which a restart outlives); not an address of
// this machine, or a port this user may not bind, it is misconfigured
// (exit 3, not restarted).
func listenError(addr string, err error) error {
	why, kind := "", error(nil)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		why, kind = "the address is in use by another process (another cyberdrew serve, or one still stopping): stop it, or", store.ErrUnavailable
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		why, kind = "not an address of this machine:", store.ErrMisconfigured
	case errors.Is(err, syscall.EACCES):
		why, kind = "this user may not bind that port (below 1024 takes root or CAP_NET_BIND_SERVICE):", store.ErrMisconfigured
	default:
		return fmt.Errorf("daemon: listen on %s: %w", addr, err)
	}
	return fmt.Errorf("daemon: listen on %s: %s set --addr (CYBERDREW_ADDR): %w", addr, why, classed{err, kind})
}

// classed is err, which errors.Is also finds to be kind (a store
// sentinel the command line maps to its exit code), without kind's words.
type classed struct{ err, kind error }

func (c classed) Error() string   { return c.err.Error() }
func (c classed) Unwrap() []error { return []error{c.err, c.kind} }
