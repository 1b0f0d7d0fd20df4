// Package redis is the Redis backend of cyberdrew's store, on
// github.com/redis/go-redis/v9.
//
// Every transition that touches more than one key is one Lua script
// (lua/*.lua, each with its KEYS, ARGV and return values beside it), loaded
// when the store opens. Engine keys live under a configurable prefix with
// one hash tag, so Redis Cluster keeps them in one slot; keys.go lists them.
// Time comes from the injected clock, passed to every script as ARGV[1],
// never from Redis TIME. Committed changes are published on a pub/sub
// channel and fanned out to in-process subscribers, so several daemons on
// one Redis wake each other without polling.
//
// The site's key-value data keeps its exact names (under an optional site
// prefix) as native Redis strings and sets with native TTLs, so the website
// reads them with plain GET and SCARD.
//
// Durability is Redis's: run it with appendonly yes and appendfsync always
// when acknowledged events must survive a crash (everysec may lose about
// the last second).
package redis

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var _ store.Store = (*Store)(nil)

// DefaultPrefix is the engine key prefix when Options.Prefix is empty.
const DefaultPrefix = "cyberdrew:"

// Options configure a Store.
type Options struct {
	// Clock gives every "now" the store uses; nil means the real clock.
	Clock clockwork.Clock
	// Logger receives the store's few log lines; nil discards them.
	Logger *slog.Logger
	// Prefix comes before every engine key; "" means DefaultPrefix.
	Prefix string
	// SitePrefix comes before every key-value key of the site; default none.
	SitePrefix string
	// MinReplicas > 0 makes every acknowledging write (Publish,
	// CreateRuns, SaveStep, Finish, CancelRun) wait for that many replicas
	// to confirm it (WAIT), at most ReplicaTimeout (under 5 s); fewer fail the call
	// with store.ErrNotReplicated (the write was done on the master).
	MinReplicas    int
	ReplicaTimeout time.Duration
	// Scripts runs the engine's code as scripts (EVALSHA) even on a
	// server that has functions (Redis 7 and later), where it otherwise
	// runs as the functions of one library (FCALL, functions.go): for
	// tests of the path servers without functions take.
	Scripts bool
	// Partitions > 1 spreads the engine's records over that many
	// partitions by id (store.Store.Partitions; docs/engine.md,
	// "Spreading the engine over slots"), at most store.MaxPartitions. A
	// keyspace keeps the partitions it was first opened with; another
	// number is refused (store.ErrMisconfigured). On a Redis Cluster,
	// whose scripts must stay in one slot, a step's effects on site keys
	// then commit ahead of its record (ahead.go).
	Partitions int
	// PublishScriptOnly sends every publication through the publish
	// script, also those the store would otherwise store as a
	// transaction (publishtx.go): for tests of the script's path.
	PublishScriptOnly bool
}

// Timeouts: an unreachable Redis makes calls fail within a few seconds
// rather than hang; a call whose context has a nearer deadline fails at
// that deadline (ContextTimeoutEnabled).
const (
	dialTimeout = 2 * time.Second
	ioTimeout   = 5 * time.Second
	// healthTTL is how long the readiness write's key lives.
	healthTTL = time.Minute
)

// Store is the Redis backend of store.Store.
type Store struct {
	rdb goredis.UniversalClient
	// cluster is rdb on a Redis Cluster, nil otherwise (cluster.go).
	cluster *goredis.ClusterClient
	keys    keys
	clock   clockwork.Clock
	log     *slog.Logger
	subs    *store.Fanout[store.Change]
	ps      *listener

	// publishes and finishes coalesce concurrent calls (batch.go).
	publishes *batcher[pubItem, store.Published]
	finishes  *batcher[finishItem, any]
	// calls pipelines the other calls of concurrent callers (pipeline.go).
	calls *batcher[call, *goredis.Cmd]

	entropyMu sync.Mutex
	entropy   io.Reader

	minReplicas    int
	replicaTimeout time.Duration
	// effectsAhead: a step's KV effects commit ahead of its record
	// (ahead.go); recorded holds the receipts to make tombstones of.
	effectsAhead bool
	recorded     recordedReceipts

	// nativeTTL is set on the real clock: site keys expire by their
	// native TTLs alone, without deadline keys (kvNow).
	nativeTTL bool

	// functions is set while the engine's code may run as the functions
	// of its library (functions.go); library counts this store's loads of
	// it, one at a time.
	functions atomic.Bool
	library   struct {
		sync.Mutex
		loads atomic.Int64
	}

	// publishScriptOnly is Options.PublishScriptOnly; publishTxHook,
	// for tests, runs between publishTx's check and its EXEC.
	publishScriptOnly bool
	publishTxHook     func()

	// layoutDone is set once the keyspace is known to be in this
	// version's layout (layout.go).
	layoutDone atomic.Bool
}

// Open connects to the Redis at url (redis:// or rediss:// for TLS, with
// an optional user, password and database number; SentinelScheme for the
// master a set of sentinels names; or a cluster URL, see clusterOption),
// loads the scripts and
// starts listening for changes. A Redis that cannot be reached yet is not
// an error: calls fail with store.ErrUnavailable until it answers.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.MinReplicas < 0 || (opts.MinReplicas > 0 && (opts.ReplicaTimeout < time.Millisecond || opts.ReplicaTimeout >= ioTimeout)) {
		return nil, fmt.Errorf("redis: open: %w: %d replicas within %s", store.ErrInvalid, opts.MinReplicas, opts.ReplicaTimeout)
	}
	if opts.Partitions < 0 || opts.Partitions > store.MaxPartitions {
		return nil, fmt.Errorf("redis: open: %w: %d partitions (1 to %d)", store.ErrMisconfigured, opts.Partitions, store.MaxPartitions)
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("redis: open: prefix %q must not contain braces", opts.Prefix)
	}
	clientLogOnce.Do(func() { goredis.SetLogger(clientLog{opts.Logger.With("component", "redis-client")}) })
	o, err := clientOptions(url)
	if err != nil {
		return nil, fmt.Errorf("redis: open: %w", err)
	}
	o.ClientName = "cyberdrew"
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = dialTimeout, ioTimeout, ioTimeout, ioTimeout
	o.MaxRetries = 1
	// A frozen Redis must not hold a caller past its own deadline (intake's
	// bound, the readiness probe's timeout).
	o.ContextTimeoutEnabled = true
	// One server, the master the sentinels name (a failover client) or a
	// cluster.
	rdb := goredis.NewUniversalClient(o)
	cluster, _ := rdb.(*goredis.ClusterClient)
	s := &Store{
		rdb:     rdb,
		cluster: cluster,
		keys:    newKeys(opts.Prefix, opts.SitePrefix, opts.Partitions),
		clock:   opts.Clock,
		log:     opts.Logger.With("component", "store", "store", "redis"),
		subs:    store.NewChangeFanout(),
		entropy: ulid.Monotonic(rand.Reader, 0),

		nativeTTL:      isRealClock(opts.Clock),
		minReplicas:    opts.MinReplicas,
		replicaTimeout: opts.ReplicaTimeout,

		publishScriptOnly: opts.PublishScriptOnly,
	}
	// A partitioned store on a cluster keeps the site keys in other slots
	// than the runs' (ahead.go).
	s.effectsAhead = cluster != nil && s.Partitions() > 1
	s.calls = newBatcher(s.pipelineGroup)
	s.publishes = newBatcher(s.publishGroup)
	s.finishes = newBatcher(s.finishGroup)
	// fail gives up the store being opened.
	fail := func(err error) (*Store, error) {
		s.publishes.stop()
		s.finishes.stop()
		s.calls.stop()
		rdb.Close()
		return nil, err
	}
	// The first calls tell a wrong setting from an outage, within
	// openProbeTimeout: a server that does not answer (its sentinels dead,
	// a black hole) must not hold the daemon's start for the client's own
	// retries; what they could not do the store does on first use.
	probe, cancelProbe := context.WithTimeout(ctx, openProbeTimeout)
	defer cancelProbe()
	reachable := true
	if err := loadScripts(probe, rdb); err != nil {
		if why := settingProblem(o, err); why != "" {
			return fail(fmt.Errorf("redis: open: %w: %s", store.ErrMisconfigured, why))
		}
		err = s.wrap("open", err)
		if !errors.Is(err, store.ErrUnavailable) {
			return fail(err)
		}
		if addr, plain := plainServer(ctx, o); plain {
			return fail(fmt.Errorf("redis: open: %w: the URL asks for TLS (rediss://), but %s answers without TLS, "+
				"where a TLS hello gets no answer at all: use redis:// for a server without TLS", store.ErrMisconfigured, addr))
		}
		s.log.Warn("redis is unreachable; retrying", "err", err)
		reachable = false
	} else if cluster == nil && o.MasterName == "" {
		// One node of a cluster, named without ?cluster=true: every keyed
		// command would be answered MOVED (or work until the slot moves).
		if info, err := rdb.Info(probe, "cluster").Result(); err == nil && strings.Contains(info, "cluster_enabled:1") {
			return fail(fmt.Errorf("redis: open: %w: %s", store.ErrMisconfigured, settingProblem(o, errors.New("MOVED"))))
		}
	}
	if !opts.Scripts {
		// On a server that cannot be reached yet the first call loads it.
		s.functions.Store(true)
		if reachable && s.loadLibrary(probe) {
			s.log.Info("redis: the engine's code runs as a function library", "library", libraryName)
		}
	}
	if !reachable {
		// The listings and Prune check the layout once Redis answers.
	} else if err := s.ensureLayout(probe); err != nil {
		if errors.Is(err, errNewerLayout) || errors.Is(err, errOtherPartitions) {
			// Misconfigured: no wait makes this version read the keys (a
			// supervisor must not restart it in a loop).
			return fail(fmt.Errorf("redis: open: %w: %w", store.ErrMisconfigured, err))
		}
		// Unreachable now: the listings and Prune try again.
		s.log.Debug("redis: the keyspace's layout is not checked yet", "err", err)
	}
	s.ps = s.listen(ctx, reachable)
	return s, nil
}

// openProbeTimeout bounds Open's first calls (see Open).
const openProbeTimeout = 5 * time.Second

// settingProblem says which setting of the URL err, the first call's
// error, shows to be wrong, or "" when err is not about one: what no wait
// can fix, so that serve stops (exit 3) instead of retrying forever.
func settingProblem(o *goredis.UniversalOptions, err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "DB index is out of range"):
		return "the URL's database number: " + msg
	case strings.HasPrefix(msg, "WRONGPASS"), strings.Contains(msg, "invalid username-password pair"):
		return "the server refused the URL's user or password: " + msg
	case strings.HasPrefix(msg, "NOAUTH"):
		return "the server requires a password, and the URL gives none (redis://:password@host:port): " + msg
	case strings.Contains(msg, "called without any password configured"):
		return "the URL gives a password, and the server has none: " + msg
	case strings.Contains(msg, "cluster support disabled"):
		return fmt.Sprintf("the URL names a Redis Cluster (several hosts, or ?cluster=true), but %s is not a cluster node: "+
			"give one server as redis://host:port[/db]", strings.Join(o.Addrs, ","))
	case strings.HasPrefix(msg, "MOVED") && len(o.Addrs) == 1 && o.MasterName == "":
		return fmt.Sprintf("%s is a node of a Redis Cluster, which the URL does not say: add ?cluster=true, or list several nodes", o.Addrs[0])
	case o.MasterName != "" && errors.Is(err, goredis.Nil):
		return fmt.Sprintf("no sentinel of the URL monitors a master named %q (see SENTINEL MASTERS)", o.MasterName)
	}
	return ""
}

// plainServer tells, once a TLS connection failed, whether the server
// behind o speaks Redis without TLS: a rediss:// URL given for a plain
// server. Such a server takes the TLS hello for the start of an inline
// command and waits for its end, so the handshake only times out, like a
// network outage, and the store would retry forever. A plain PING on a
// connection of its own tells them apart: a server without TLS answers it
// in RESP ("+PONG", or an error such as "-NOAUTH"), a TLS server answers
// with an alert or closes. It returns the first such address. Sentinel
// URLs are left out: their sentinels and master may differ.
func plainServer(ctx context.Context, o *goredis.UniversalOptions) (string, bool) {
	if o.TLSConfig == nil || o.MasterName != "" {
		return "", false
	}
	for _, addr := range o.Addrs {
		if answersPlainPing(ctx, addr) {
			return addr, true
		}
	}
	return "", false
}

func answersPlainPing(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && len(line) > 2 && (line[0] == '+' || line[0] == '-') && strings.HasSuffix(line, "\r\n")
}

// clientLog sends go-redis's own log lines (dial retries while Redis is
// down) to slog at debug level; the store reports outages through its
// errors and the listener's warnings. go-redis's logger is process-wide,
// so the first Open sets it.
type clientLog struct{ l *slog.Logger }

func (c clientLog) Printf(ctx context.Context, format string, v ...any) {
	c.l.DebugContext(ctx, fmt.Sprintf(format, v...))
}

var clientLogOnce sync.Once

// Kind names the backend.
func (s *Store) Kind() string { return "redis" }

// Partitions is how many partitions the engine's records are spread over
// (store.Store).
func (s *Store) Partitions() int { return len(s.keys.parts) }

// Ping reports whether Redis answers and takes a write: a PING and a SET
// of the health key, in one round trip, within ctx's deadline.
//
// With MinReplicas the write must also reach that many replicas (WAIT), as
// every acknowledging write must: a daemon whose writes are all refused for
// want of replicas is not ready.
func (s *Store) Ping(ctx context.Context) error {
	if s.minReplicas == 0 {
		_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			p.Ping(ctx)
			p.Set(ctx, s.keys.health(), s.nowMS(), healthTTL)
			return nil
		})
		return s.wrap("ping", err)
	}
	node, err := s.nodeOf(ctx, s.keys.health())
	if err != nil {
		return s.wrap("ping", err)
	}
	var wait *goredis.Cmd
	_, err = node.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.Set(ctx, s.keys.health(), s.nowMS(), healthTTL)
		wait = p.Do(ctx, "WAIT", s.minReplicas, s.replicaTimeout.Milliseconds())
		return nil
	})
	if err != nil {
		s.movedOrGone(ctx, err)
		return s.wrap("ping", err)
	}
	if err := s.replicated(wait); err != nil {
		return fmt.Errorf("redis: ping: %w, so every write is refused", err)
	}
	return nil
}

// Close ends every subscription and closes the connections.
func (s *Store) Close() error {
	// At once: each waits for its groups in flight, at most batchStopWait
	// when Redis does not answer them.
	var wg sync.WaitGroup
	for _, stop := range []func(){s.publishes.stop, s.finishes.stop, s.calls.stop, s.ps.stop} {
		wg.Go(stop)
	}
	wg.Wait()
	s.subs.Close()
	return s.rdb.Close()
}

func (s *Store) nowMS() int64 { return s.clock.Now().UnixMilli() }

// isRealClock reports whether c is clockwork's real clock, which Redis's
// own expiry agrees with; an injected clock (a test's fake one) needs the
// deadline keys of lua/kvfn.lua.
func isRealClock(c clockwork.Clock) bool {
	return reflect.TypeOf(c) == reflect.TypeOf(clockwork.NewRealClock())
}

// newULID returns a ULID for time t, monotonic within the process.
func (s *Store) newULID(t time.Time) string {
	s.entropyMu.Lock()
	defer s.entropyMu.Unlock()
	return ulid.MustNew(ulid.Timestamp(t), s.entropy).String()
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Script errors (redis.error_reply in lua/) and the sentinels they mean.
var scriptErrors = map[string]error{
	"LEASE_LOST": store.ErrLeaseLost,
	"NOT_FOUND":  store.ErrNotFound,
	"FINISHED":   store.ErrFinished,
	"CONFLICT":   store.ErrConflict,
}

// wrap prefixes err with the operation and maps Redis errors onto the
// store's sentinels: redis.Nil is ErrNotFound, a wrong type, a value that
// is not an integer or an increment that would overflow is ErrInvalid, and
// anything that is not an answer from Redis (a network error, a timeout, a
// server still loading, a cluster node that no longer serves the slot) is
// ErrUnavailable.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, goredis.Nil) {
		return fmt.Errorf("redis: %s: %w", op, store.ErrNotFound)
	}
	for _, sentinel := range []error{store.ErrNotFound, store.ErrInvalid, store.ErrLeaseLost, store.ErrFinished, store.ErrUnavailable, store.ErrConflict, store.ErrSuperseded} {
		if errors.Is(err, sentinel) {
			return fmt.Errorf("redis: %s: %w", op, err)
		}
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		// Redis prefixes script error replies with "ERR ".
		msg := strings.TrimPrefix(rerr.Error(), "ERR ")
		for code, sentinel := range scriptErrors {
			if strings.HasPrefix(msg, code) {
				return fmt.Errorf("redis: %s: %w", op, sentinel)
			}
		}
		switch {
		case strings.HasPrefix(msg, "WRONGTYPE"), strings.Contains(msg, "not an integer"), strings.Contains(msg, "would overflow"):
			return fmt.Errorf("redis: %s: %w: %s", op, store.ErrInvalid, msg)
		case strings.HasPrefix(msg, "LOADING"), strings.HasPrefix(msg, "MASTERDOWN"),
			strings.HasPrefix(msg, "CLUSTERDOWN"), strings.HasPrefix(msg, "TRYAGAIN"),
			strings.HasPrefix(msg, "MOVED "), strings.HasPrefix(msg, "ASK "),
			strings.HasPrefix(msg, "READONLY"), strings.HasPrefix(msg, "BUSY"):
		default:
			return fmt.Errorf("redis: %s: %w", op, err)
		}
	}
	return fmt.Errorf("redis: %s: %w: %w", op, store.ErrUnavailable, err)
}

// ms converts a time to unix ms, 0 for the zero time.
func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMS converts unix ms back, the zero time for 0.
func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
