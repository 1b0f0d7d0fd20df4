// Package site serves the website's public routes (JOBS.md, "Site routes"):
// the contact form, view tracking, the GitHub contributions cache and the
// analytics reads, and the public analytics page built from those reads.
// Writes become events published through the engine; reads come from the
// same key-value data the jobs keep. Every /api answer is JSON; each route
// has its own rate-limit bucket; CORS follows an allow-list.
package site

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// Publisher is what the routes ask of the engine: store events and start
// their runs.
type Publisher interface {
	Publish(ctx context.Context, evs []engine.IncomingEvent) ([]engine.Accepted, error)
}

// Config configures the routes.
type Config struct {
	// Origins may call the routes from a browser; "*" allows any.
	Origins []string
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// GitHubUser is the only user whose contributions are served.
	GitHubUser string
	// RefreshDisabled says why no contributions refresh can run (no
	// GITHUB_TOKEN); empty when one can.
	RefreshDisabled string
	// Prefix is the data keys' prefix (CYBERDREW_SITE_PREFIX).
	Prefix string
	// AnalyticsPage is the path of the public analytics page; empty
	// serves none.
	AnalyticsPage string
	// StoreTimeout bounds the store's part of each request (the intake's
	// --intake-timeout): a store that does not answer in time gets a 503
	// with Retry-After, not a request held for as long as it is stuck.
	// Zero means the intake's default (config.DefaultIntakeTimeout).
	StoreTimeout time.Duration
}

// Server holds the routes' state.
type Server struct {
	cfg   Config
	pub   Publisher
	kv    store.KV
	keys  jobs.Keys
	clock clockwork.Clock
	log   *slog.Logger

	contactLimit, viewsLimit, githubLimit *limiter

	saltMu sync.Mutex
	salt   []byte
}

// RateCounter counts requests against fixed-window rate limits that every
// daemon on the same store shares: the Redis store.
type RateCounter interface {
	CountWindow(ctx context.Context, key string, limit int, window time.Duration) (store.RateCount, error)
}

// New returns the site routes. The rate limits are counted in kv when it
// is a RateCounter (Redis), so every daemon on one Redis enforces one
// limit; otherwise in memory, per daemon (SQLite serves one daemon).
func New(cfg Config, pub Publisher, kv store.KV, clock clockwork.Clock, logger *slog.Logger) *Server {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.GitHubUser == "" {
		cfg.GitHubUser = jobs.DefaultGitHubUser
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = config.DefaultIntakeTimeout
	}
	shared, _ := kv.(RateCounter)
	return &Server{
		cfg: cfg, pub: pub, kv: kv, keys: jobs.Keys{Prefix: cfg.Prefix}, clock: clock,
		log:          logger.With("component", "site"),
		contactLimit: newLimiter(clock, shared, "/api/contact", 3, time.Minute),
		viewsLimit:   newLimiter(clock, shared, "/api/views", 10, 5*time.Minute),
		githubLimit:  newLimiter(clock, shared, "/api/github-contributions", 10, time.Minute),
	}
}

// Routes returns the routes by ServeMux pattern, preflights included, to
// mount next to the rest of the HTTP surface.
func (s *Server) Routes() map[string]http.Handler {
	routes := map[string]http.Handler{}
	add := func(method, path string, h handlerFunc) {
		routes[method+" "+path] = s.cors(h)
		routes["OPTIONS "+path] = s.preflight(method)
	}
	add(http.MethodPost, "/api/contact", s.contact)
	add(http.MethodPost, "/api/views", s.views)
	add(http.MethodGet, "/api/views/{slug...}", s.postViews)
	add(http.MethodGet, "/api/github-contributions", s.contributions)
	add(http.MethodGet, "/api/analytics", s.analytics)
	add(http.MethodGet, "/api/analytics/daily", s.daily)
	add(http.MethodGet, "/api/analytics/site", s.siteTraffic)
	if p := s.cfg.AnalyticsPage; p != "" {
		routes["GET "+p] = http.HandlerFunc(s.page)
	}
	return routes
}

// handlerFunc writes its answer, or returns an error for serve to render.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// answer is a failure with its status and a message safe to show.
type answer struct {
	status int
	msg    string
}

func (a *answer) Error() string { return a.msg }

func fail(status int, msg string) error { return &answer{status: status, msg: msg} }

// cors adds the CORS headers for an allowed origin, refuses a write that a
// page of another site makes a browser send, and renders failures.
func (s *Server) cors(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" {
			w.Header().Add("Vary", "Origin")
			if s.allowed(origin) {
				w.Header().Set("Access-Control-Allow-Origin", origin)
				w.Header().Set("Access-Control-Expose-Headers", exposedHeaders)
			}
		}
		if r.Method == http.MethodPost && s.foreignPage(r) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "Origin not allowed"})
			return
		}
		bounded, cancel := s.storeBound(r)
		err := h(w, bounded)
		cancel()
		var a *answer
		switch {
		case err == nil, errors.Is(err, errLimited):
		case errors.As(err, &a):
			writeJSON(w, a.status, map[string]string{"error": a.msg})
		case r.Context().Err() != nil:
			// The client is gone: nobody reads an answer.
		case s.unavailable(r, err):
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "Service unavailable, retry later"})
		default:
			s.log.Error("site request failed", "route", r.Pattern, "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "Internal server error"})
		}
	})
}

// storeBound is r with its context bounded by StoreTimeout, for a route
// or the page to call the store with.
func (s *Server) storeBound(r *http.Request) (*http.Request, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	return r.WithContext(ctx), cancel
}

// unavailable reports whether err, from serving r (its client still
// there), means the store failed or did not answer within StoreTimeout:
// a 503 with Retry-After.
func (s *Server) unavailable(r *http.Request, err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("site request: the store did not answer in time", "route", r.Pattern, "timeout", s.cfg.StoreTimeout)
		return true
	}
	return errors.Is(err, store.ErrUnavailable)
}

// preflight answers a CORS preflight: 204 with the allowed method for an
// allowed origin, 403 otherwise.
func (s *Server) preflight(method string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		w.Header().Add("Vary", "Origin")
		if origin == "" || !s.allowed(origin) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "Origin not allowed"})
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Methods", method+", OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Content-Type")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
	})
}

// exposedHeaders are the answer's headers a page of an allowed origin may
// read: when to retry after a 429 or 503, and the limit's state.
const exposedHeaders = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"

// foreignPage reports whether a browser sends r for a page of a site the
// routes do not serve: an Origin neither allowed nor the request's own
// host, or, without an Origin, Sec-Fetch-Site: cross-site. The CORS
// allow-list alone only keeps such a page from reading the answer, and a
// POST without a preflight (sendBeacon, a no-cors fetch of text/plain)
// would still record a view or send a contact form's emails, from each
// visitor's own address, past the per-address limits. A request without
// either header (curl, a server's own call) is not a browser's.
func (s *Server) foreignPage(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return r.Header.Get("Sec-Fetch-Site") == "cross-site"
	}
	if s.allowed(origin) {
		return false
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return true // "null": a sandboxed frame, a file
	}
	host := r.Host
	if p := peer(r); p.IsValid() && s.trusted(p) {
		if fwd := r.Header.Get("X-Forwarded-Host"); fwd != "" {
			host = fwd
		}
	}
	return !strings.EqualFold(u.Host, host)
}

func (s *Server) allowed(origin string) bool {
	return slices.Contains(s.cfg.Origins, "*") || slices.Contains(s.cfg.Origins, strings.TrimSuffix(origin, "/"))
}

// clientIP is the socket peer, or, when the peer is a trusted proxy, the
// rightmost X-Forwarded-For address that is not itself a trusted proxy.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	ip := peer(r)
	if !ip.IsValid() || !s.trusted(ip) {
		return ip
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		ip = a.Unmap()
		if !s.trusted(ip) {
			break
		}
	}
	return ip
}

func (s *Server) trusted(ip netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// visitor is an opaque daily hash of IP and user agent: keyed with a secret
// kept in the store, so it identifies a visitor within a day across daemons
// and never reveals the IP.
func (s *Server) visitor(ctx context.Context, ip netip.Addr, ua, date string) (string, error) {
	salt, err := s.visitorSalt(ctx)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(date + "\x00" + ip.String() + "\x00" + ua))
	return hex.EncodeToString(m.Sum(nil)[:16]), nil
}

func (s *Server) visitorSalt(ctx context.Context) ([]byte, error) {
	s.saltMu.Lock()
	defer s.saltMu.Unlock()
	if s.salt != nil {
		return s.salt, nil
	}
	key := s.cfg.Prefix + "site:visitor-salt"
	fresh := make([]byte, 32)
	rand.Read(fresh)
	if _, err := s.kv.SetNX(ctx, key, hex.EncodeToString(fresh), 0); err != nil {
		return nil, err
	}
	v, err := s.kv.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	s.salt = []byte(v)
	return s.salt, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// limiter is one route's fixed-window rate limit per key: a window opens
// at a key's first request and admits limit requests. It is counted in the
// store when shared is set (the same rule, lua/window.lua), otherwise in
// memory.
type limiter struct {
	clock  clockwork.Clock
	shared RateCounter
	route  string // names the limit in the store
	limit  int
	window time.Duration

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

// sweepAbove is how many buckets the limiter keeps before it drops the
// expired ones, at most once a window so that many live keys cost no sweep
// per request.
const sweepAbove = 10000

type bucket struct {
	count int
	reset time.Time
}

func newLimiter(clock clockwork.Clock, shared RateCounter, route string, limit int, window time.Duration) *limiter {
	return &limiter{clock: clock, shared: shared, route: route, limit: limit, window: window, buckets: map[string]*bucket{}}
}

// allow counts a request for key, sets the X-RateLimit headers, and
// answers 429 with Retry-After when the limit is spent.
func (l *limiter) allow(w http.ResponseWriter, r *http.Request, key string) error {
	c, err := l.count(r.Context(), key)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(l.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(c.Remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(c.Reset.Unix(), 10))
	if c.Allowed {
		return nil
	}
	secs := int((c.RetryAfter + time.Second - 1) / time.Second)
	h.Set("Retry-After", strconv.Itoa(secs))
	writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": "Too many requests. Please try again later.", "retryAfter": secs})
	return errLimited
}

// count counts a request for key in the store, or in memory.
func (l *limiter) count(ctx context.Context, key string) (store.RateCount, error) {
	if l.shared != nil {
		return l.shared.CountWindow(ctx, "site:"+l.route+":"+key, l.limit, l.window)
	}
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) > sweepAbove && now.Sub(l.lastSweep) >= l.window {
		l.lastSweep = now
		for k, b := range l.buckets {
			if !now.Before(b.reset) {
				delete(l.buckets, k)
			}
		}
	}
	b := l.buckets[key]
	if b == nil || !now.Before(b.reset) {
		b = &bucket{reset: now.Add(l.window)}
		l.buckets[key] = b
	}
	c := store.RateCount{Allowed: b.count < l.limit, Reset: b.reset}
	if c.Allowed {
		b.count++
	} else {
		c.RetryAfter = b.reset.Sub(now)
	}
	c.Remaining = l.limit - b.count
	return c, nil
}

// errLimited says the limiter already answered.
var errLimited = errors.New("rate limited")

// peer is the socket peer's address.
func peer(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// firstHeader is the first non-empty of the named headers.
func firstHeader(r *http.Request, names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(r.Header.Get(n)); v != "" {
			return v
		}
	}
	return ""
}
