// Package config holds the daemon's configuration: its values, their
// defaults, the store location parser and the one Validate that reports
// every problem at once. The CLI fills it from defaults, then the
// environment, then flags; the daemon wiring reads it.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
	redisstore "github.com/dcyfr/cyberdrew/internal/store/redis"
)

// Defaults.
const (
	DefaultAddr            = "127.0.0.1:8288"
	DefaultWorkers         = 16
	DefaultRetention       = 30 * 24 * time.Hour
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultIntakeTimeout bounds how long intake waits for the store.
	DefaultIntakeTimeout = 2 * time.Second
	DefaultLease         = 5 * time.Second
	// DefaultRedisReplicaTimeout is how long an acknowledging write waits
	// for --redis-min-replicas replicas.
	DefaultRedisReplicaTimeout = time.Second
	// MinLease is the shortest lease accepted: it is renewed every third
	// of it, and each renewal must reach the store in time.
	MinLease              = time.Second
	DefaultMaxEventSize   = 256 * KiB
	DefaultMaxRequestSize = 10 * MiB
	DefaultMaxBatch       = 5000
	DefaultMaxStreams     = 256
	// DefaultStreamStall is how long a /v1/stream subscriber may read
	// nothing while changes wait for it before it is dropped.
	DefaultStreamStall = 30 * time.Second
	DefaultLogFormat   = LogAuto
	DefaultContactFrom = "contact@cyberdrew.dev"
	DefaultGitHubUser  = "dcyfr"
	// DefaultAnalyticsPath serves the public analytics page; AnalyticsOff
	// as the path turns it off.
	DefaultAnalyticsPath = "/analytics"
	AnalyticsOff         = "off"
	// DBFile is the embedded store's file name inside the data dir.
	DBFile = "cyberdrew.db"
)

// Log formats.
const (
	LogAuto = "auto" // text on a terminal, JSON otherwise
	LogText = "text"
	LogJSON = "json"
)

// Serve configures `cyberdrew serve`.
type Serve struct {
	// Addr is the HTTP listen address, host:port.
	Addr string
	// DataDir holds the embedded store.
	DataDir string
	// Store selects the backend: empty for SQLite in DataDir,
	// "sqlite:///path" or a plain path for SQLite elsewhere,
	// "redis://…", "rediss://…" or "redis+sentinel://…" for Redis. See ParseStore.
	Store   string
	Workers int
	// Lease is how long a worker holds a run without renewing it (renewed
	// every third of it): a crashed daemon's runs are taken over by the
	// others this long after its last renewal.
	Lease time.Duration
	// Retention keeps finished runs and events this long; 0 keeps them
	// forever.
	Retention time.Duration
	LogFormat string
	LogLevel  slog.Level
	// EventKeys guard the event API; SigningKey and SigningKeyFallback
	// guard the admin API. An unset side is in dev mode: it answers only
	// requests straight from this machine (internal/api).
	EventKeys          []string
	SigningKey         string
	SigningKeyFallback string
	ShutdownTimeout    time.Duration
	// IntakeTimeout bounds how long the event API waits for the store
	// before it answers 503 (the events may have been stored).
	IntakeTimeout time.Duration
	// RedisMinReplicas > 0 makes every acknowledging Redis write wait
	// (WAIT) for that many replicas, at most RedisReplicaTimeout; fewer
	// confirmations answer 503 (the write may have been stored).
	RedisMinReplicas int
	// RedisPartitions > 1 spreads the engine's records over that many
	// partitions, each a Redis Cluster hash slot of its own
	// (redis.Options.Partitions); a keyspace keeps the number it was
	// created with.
	RedisPartitions     int
	RedisReplicaTimeout time.Duration
	MaxEventSize        ByteSize
	MaxRequestSize      ByteSize
	MaxBatch            int
	// MaxStreams bounds the /v1/stream subscribers connected at once.
	MaxStreams int
	// StreamStall is how long a /v1/stream subscriber may read nothing
	// while changes wait for it before it is dropped.
	StreamStall time.Duration
	// MetricsPublic serves /metrics without the bearer signing key.
	MetricsPublic bool

	// The site (JOBS.md). ResendAPIKey and GitHubToken are secrets.
	ResendAPIKey     string
	ResendBaseURL    string
	ContactFrom      string
	ContactTo        string
	GitHubToken      string
	GitHubUser       string
	GitHubAPIURL     string
	MilestoneWebhook string // may hold a token: never logged
	// ResendWebhookSecret (whsec_…) and GitHubWebhookSecret turn on
	// POST /webhooks/resend and POST /webhooks/github; both are secrets.
	ResendWebhookSecret string
	GitHubWebhookSecret string
	SitePrefix          string
	CORSOrigins         []string
	// Templates is a directory whose email templates replace the embedded
	// ones of the same name; empty uses the embedded ones.
	Templates string
	// AnalyticsPath serves the public analytics page; AnalyticsOff turns
	// it off.
	AnalyticsPath string
	// TrustedProxies (CIDRs or single addresses) are the proxies whose
	// X-Forwarded-For the site routes take as the client's address. They
	// open nothing: a request through any proxy needs the keys.
	TrustedProxies []string
}

// DefaultServe returns the defaults. getenv reads XDG_DATA_HOME and HOME for
// the data dir.
func DefaultServe(getenv func(string) string) Serve {
	return Serve{
		Addr:                DefaultAddr,
		DataDir:             DefaultDataDir(getenv),
		Workers:             DefaultWorkers,
		Lease:               DefaultLease,
		Retention:           DefaultRetention,
		LogFormat:           DefaultLogFormat,
		LogLevel:            slog.LevelInfo,
		ShutdownTimeout:     DefaultShutdownTimeout,
		IntakeTimeout:       DefaultIntakeTimeout,
		RedisReplicaTimeout: DefaultRedisReplicaTimeout,
		RedisPartitions:     1,
		MaxEventSize:        DefaultMaxEventSize,
		MaxRequestSize:      DefaultMaxRequestSize,
		MaxBatch:            DefaultMaxBatch,
		MaxStreams:          DefaultMaxStreams,
		ContactFrom:         DefaultContactFrom,
		GitHubUser:          DefaultGitHubUser,
		AnalyticsPath:       DefaultAnalyticsPath,
		StreamStall:         DefaultStreamStall,
	}
}

// DefaultDataDir is $XDG_DATA_HOME/cyberdrew, else
// ~/.local/share/cyberdrew; empty when neither XDG_DATA_HOME nor a home
// directory (HOME, or USERPROFILE on Windows) is set. A relative
// XDG_DATA_HOME is ignored, as the XDG spec says.
func DefaultDataDir(getenv func(string) string) string {
	if d := getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "cyberdrew")
	}
	home := getenv("HOME")
	if home == "" {
		home = getenv("USERPROFILE")
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".local", "share", "cyberdrew")
}

// Validate reports every problem of the configuration at once, joined; nil
// when there is none.
func (c Serve) Validate() error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	loopback, err := checkAddr(c.Addr)
	if err != nil {
		fail("--addr %q: %v", c.Addr, err)
	}
	if err == nil && !loopback {
		if len(c.EventKeys) == 0 {
			fail("--addr %s is not a loopback address: set INNGEST_EVENT_KEY (--event-key) to guard the event API", c.Addr)
		}
		if c.SigningKey == "" {
			fail("--addr %s is not a loopback address: set INNGEST_SIGNING_KEY (--signing-key) to guard the admin API", c.Addr)
		}
	}
	for _, k := range []struct{ flag, value string }{{"--signing-key", c.SigningKey}, {"--signing-key-fallback", c.SigningKeyFallback}} {
		switch {
		case k.value != "" && strings.TrimSpace(k.value) == "":
			fail("%s: is blank, which guards nothing; unset it or set a key", k.flag)
		case k.value != strings.TrimSpace(k.value):
			fail("%s: has spaces or a line break around it, which no client sends", k.flag)
		}
	}
	if c.SigningKeyFallback != "" && c.SigningKey == "" {
		fail("--signing-key-fallback is set without --signing-key")
	}

	spec, err := ParseStore(c.Store, c.DataDir)
	if err != nil {
		fail("--store: %v", err)
	}
	if spec.Kind == StoreSQLite && c.Store == "" && c.DataDir == "" {
		fail("--data-dir: not set and no home directory to default to")
	}
	if c.Workers < 1 {
		fail("--workers: must be at least 1, got %d", c.Workers)
	}
	if c.Lease < MinLease {
		fail("--lease: must be at least %s, got %s", MinLease, c.Lease)
	}
	if c.Retention < 0 {
		fail("--retention: must not be negative, got %s", c.Retention)
	}
	if c.ShutdownTimeout < 0 {
		fail("--shutdown-timeout: must not be negative, got %s", c.ShutdownTimeout)
	}
	if c.IntakeTimeout <= 0 {
		fail("--intake-timeout: must be positive, got %s", c.IntakeTimeout)
	}
	switch {
	case c.RedisPartitions < 1 || c.RedisPartitions > store.MaxPartitions:
		fail("--redis-partitions: must be 1 to %d, got %d", store.MaxPartitions, c.RedisPartitions)
	case c.RedisPartitions > 1 && err == nil && spec.Kind != StoreRedis:
		fail("--redis-partitions: needs a Redis store (--store redis://…)")
	case c.RedisMinReplicas < 0:
		fail("--redis-min-replicas: must not be negative, got %d", c.RedisMinReplicas)
	case c.RedisMinReplicas > 0 && err == nil && spec.Kind != StoreRedis:
		fail("--redis-min-replicas: needs a Redis store (--store redis://… or redis+sentinel://…)")
	case c.RedisMinReplicas > 0 && (c.RedisReplicaTimeout < time.Millisecond || c.RedisReplicaTimeout >= c.IntakeTimeout):
		fail("--redis-replica-timeout: must be at least 1ms and shorter than --intake-timeout (%s), got %s", c.IntakeTimeout, c.RedisReplicaTimeout)
	}
	switch c.LogFormat {
	case LogAuto, LogText, LogJSON:
	default:
		fail("--log-format: must be auto, text or json, got %q", c.LogFormat)
	}
	if c.MaxEventSize < 1 {
		fail("--max-event-size: must be positive, got %s", c.MaxEventSize)
	}
	if c.MaxRequestSize < c.MaxEventSize {
		fail("--max-request-size (%s) must be at least --max-event-size (%s)", c.MaxRequestSize, c.MaxEventSize)
	}
	if c.MaxBatch < 1 {
		fail("--max-batch: must be at least 1, got %d", c.MaxBatch)
	}
	if c.StreamStall <= 0 {
		fail("--stream-stall-timeout: must be positive, got %s", c.StreamStall)
	}
	if c.MaxStreams < 1 {
		fail("--stream-max-subscribers: must be at least 1, got %d", c.MaxStreams)
	}
	for _, u := range []struct{ flag, value string }{
		{"--resend-base-url", c.ResendBaseURL}, {"--github-api-url", c.GitHubAPIURL},
	} {
		if u.value != "" && !httpURL(u.value) {
			fail("%s %q: must be an http(s) URL", u.flag, u.value)
		}
	}
	if c.MilestoneWebhook != "" && !httpURL(c.MilestoneWebhook) {
		fail("--milestone-webhook: must be an http(s) URL")
	}
	if !plainAddress(c.ContactFrom) {
		fail("--contact-from %q: must be an email address", c.ContactFrom)
	}
	if c.ContactTo != "" && !plainAddress(c.ContactTo) {
		fail("--contact-to %q: must be an email address", c.ContactTo)
	}
	if c.ResendAPIKey != "" && c.ContactTo == "" {
		fail("--contact-to (CYBERDREW_CONTACT_TO): required when RESEND_API_KEY is set (the owner receives the contact form and milestone news)")
	}
	if c.GitHubUser == "" {
		fail("--github-user: must not be empty")
	}
	if c.ResendWebhookSecret != "" && !svixSecret(c.ResendWebhookSecret) {
		fail("--resend-webhook-secret: must be the endpoint's signing secret as Resend shows it, whsec_ then base64")
	}
	if p := c.AnalyticsPath; p != AnalyticsOff && !sitePagePath(p) {
		fail("--analytics-path %q: want a path such as /analytics, outside the API routes, or off", p)
	}
	if strings.ContainsAny(c.SitePrefix, " \t\r\n") {
		fail("--site-prefix %q: must not contain spaces", c.SitePrefix)
	}
	for _, o := range c.CORSOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			fail("--cors-origins %q: want an origin such as https://cyberdrew.dev, or *", o)
		}
	}
	if _, err := c.TrustedProxyPrefixes(); err != nil {
		fail("--trusted-proxies: %v", err)
	}
	return errors.Join(errs...)
}

// TrustedProxyPrefixes parses TrustedProxies: CIDRs, or single addresses.
func (c Serve) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range c.TrustedProxies {
		if pre, err := netip.ParsePrefix(p); err == nil {
			out = append(out, pre.Masked())
			continue
		}
		a, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", p)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// svixSecret reports whether s is a Svix signing secret: whsec_ and the
// base64 of the key.
func svixSecret(s string) bool {
	key, ok := strings.CutPrefix(s, "whsec_")
	if !ok || key == "" {
		return false
	}
	_, err := base64.StdEncoding.DecodeString(key)
	return err == nil
}

// sitePagePath reports whether p can serve a site page: an absolute,
// clean path of its own, clear of the JSON routes, the admin API and the
// event API.
func sitePagePath(p string) bool {
	if p == "/" || !strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.ContainsAny(p, " \t\r\n{}?#") {
		return false
	}
	for _, taken := range []string{"/api", "/v1", "/e", "/metrics", "/health", "/healthz", "/readyz", "/webhooks"} {
		if p == taken || strings.HasPrefix(p, taken+"/") {
			return false
		}
	}
	return true
}

// httpURL reports whether s is an absolute http(s) URL.
func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// plainAddress reports whether s is one bare email address.
func plainAddress(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s
}

// checkAddr checks host:port and reports whether the host is a loopback
// address. An empty host listens on every interface, so it is not.
func checkAddr(addr string) (loopback bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, errors.New("must be host:port")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return false, errors.New("the port must be a number from 0 to 65535")
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// SigningKeys are the admin API's bearer keys, primary first.
func (c Serve) SigningKeys() []string {
	var keys []string
	for _, k := range []string{c.SigningKey, c.SigningKeyFallback} {
		if k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// LogValue shows the configuration without its secrets.
func (c Serve) LogValue() slog.Value {
	spec, _ := ParseStore(c.Store, c.DataDir)
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("data_dir", c.DataDir),
		slog.String("store", spec.String()),
		slog.Int("workers", c.Workers),
		slog.Duration("lease", c.Lease),
		slog.Duration("retention", c.Retention),
		slog.String("log_format", c.LogFormat),
		slog.String("log_level", c.LogLevel.String()),
		slog.Int("event_keys", len(c.EventKeys)),
		slog.Bool("signing_key", c.SigningKey != ""),
		slog.Bool("signing_key_fallback", c.SigningKeyFallback != ""),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.Duration("intake_timeout", c.IntakeTimeout),
		slog.Int("redis_min_replicas", c.RedisMinReplicas),
		slog.Int("redis_partitions", c.RedisPartitions),
		slog.Duration("redis_replica_timeout", c.RedisReplicaTimeout),
		slog.String("max_event_size", c.MaxEventSize.String()),
		slog.String("max_request_size", c.MaxRequestSize.String()),
		slog.Int("max_batch", c.MaxBatch),
		slog.Int("stream_max_subscribers", c.MaxStreams),
		slog.Duration("stream_stall_timeout", c.StreamStall),
		slog.Bool("resend_api_key", c.ResendAPIKey != ""),
		slog.String("resend_base_url", c.ResendBaseURL),
		slog.String("contact_from", c.ContactFrom),
		slog.String("contact_to", c.ContactTo),
		slog.Bool("github_token", c.GitHubToken != ""),
		slog.String("github_user", c.GitHubUser),
		slog.String("github_api_url", c.GitHubAPIURL),
		slog.Bool("milestone_webhook", c.MilestoneWebhook != ""),
		slog.Bool("resend_webhook_secret", c.ResendWebhookSecret != ""),
		slog.Bool("github_webhook_secret", c.GitHubWebhookSecret != ""),
		slog.String("site_prefix", c.SitePrefix),
		slog.String("templates", c.Templates),
		slog.String("analytics_path", c.AnalyticsPath),
		slog.Any("cors_origins", c.CORSOrigins),
		slog.Any("trusted_proxies", c.TrustedProxies),
	)
}

// Store kinds.
const (
	StoreSQLite = "sqlite"
	StoreRedis  = "redis"
)

// StoreSpec is a parsed store location.
type StoreSpec struct {
	Kind string // StoreSQLite or StoreRedis
	// Path is the SQLite file.
	Path string
	// URL is the Redis URL, with its password.
	URL string
}

// String names the store without secrets.
func (s StoreSpec) String() string {
	if s.Kind == StoreRedis {
		if u, err := url.Parse(s.URL); err == nil {
			return u.Redacted()
		}
		return "redis"
	}
	return "sqlite:" + s.Path
}

// ParseStore reads a store location: empty for DBFile in dataDir,
// "sqlite:///abs/path", "sqlite://rel/path" or a plain path for SQLite,
// "redis://…", "rediss://…" (one server or a Redis Cluster) or "redis+sentinel://…" for Redis.
// Errors never repeat the location,
// which may hold a password.
func ParseStore(raw, dataDir string) (StoreSpec, error) {
	switch {
	case raw == "":
		return StoreSpec{Kind: StoreSQLite, Path: filepath.Join(dataDir, DBFile)}, nil
	case strings.HasPrefix(raw, "sqlite://"):
		p := strings.TrimPrefix(raw, "sqlite://")
		if p == "" {
			return StoreSpec{}, errors.New("sqlite:// needs a file path, as in sqlite:///var/lib/cyberdrew/cyberdrew.db")
		}
		// A URL's path: %20 is a space (a plain path takes it as is).
		path, err := url.PathUnescape(p)
		if err != nil {
			return StoreSpec{}, fmt.Errorf("sqlite:// path %q: %v (write %% as %%25, or give the plain path)", p, err)
		}
		return StoreSpec{Kind: StoreSQLite, Path: path}, nil
	case strings.HasPrefix(raw, "redis://"), strings.HasPrefix(raw, "rediss://"):
		// A Redis Cluster URL lists several hosts, which url.Parse may
		// refuse; the store's own parser reads every form.
		u, err := url.Parse(raw)
		if (err != nil && !strings.Contains(raw, ",")) || (err == nil && u.Host == "") {
			return StoreSpec{}, errors.New("malformed Redis URL: want redis://[user:password@]host:port[/db], or host:port,host:port… for a cluster")
		}
		if err := redisstore.CheckURL(raw); err != nil {
			return StoreSpec{}, fmt.Errorf("malformed Redis URL: %w", err)
		}
		return StoreSpec{Kind: StoreRedis, URL: raw}, nil
	case strings.HasPrefix(raw, "redis+sentinel://"):
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return StoreSpec{}, errors.New("malformed Redis Sentinel URL: want redis+sentinel://[[user]:password@]host:port[,host:port…]/master[/db]")
		}
		if err := redisstore.CheckURL(raw); err != nil {
			return StoreSpec{}, fmt.Errorf("malformed Redis Sentinel URL: %w", err)
		}
		return StoreSpec{Kind: StoreRedis, URL: raw}, nil
	case strings.Contains(raw, "://"):
		scheme, _, _ := strings.Cut(raw, "://")
		return StoreSpec{}, fmt.Errorf("unsupported scheme %q: use sqlite://, redis://, rediss:// or redis+sentinel://", scheme)
	default:
		if host, port, err := net.SplitHostPort(raw); err == nil && !strings.ContainsAny(raw, `/\`) {
			if _, err := strconv.Atoi(port); err == nil {
				return StoreSpec{}, fmt.Errorf("%q is an address, not a SQLite file: write redis://%s for a Redis", raw, net.JoinHostPort(host, port))
			}
		}
		return StoreSpec{Kind: StoreSQLite, Path: raw}, nil
	}
}

// IsRedisURL reports whether raw names a Redis store by its scheme.
func IsRedisURL(raw string) bool {
	for _, scheme := range []string{"redis://", "rediss://", "redis+sentinel://"} {
		if strings.HasPrefix(raw, scheme) {
			return true
		}
	}
	return false
}
