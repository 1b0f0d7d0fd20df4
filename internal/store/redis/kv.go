package redis

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// The site's key-value data: native strings and sets named SitePrefix+key,
// with native TTLs. On the real clock a key's native TTL is its expiry, so
// the reads, Set, SetNX and TTL are plain commands sent in the pipeline
// (pipeline.go); what must test and write at once (IncrBy and SetAdd give
// a ttl only to a key they create), and every call on an injected clock
// (the conformance suite's), is one script over the key and its deadline
// key (lua/kv.lua).

// kvNow is ARGV[1] of the key-value scripts (lua/kv.lua): now in unix ms,
// followed by "n" on the real clock, where the keys' native TTLs are
// their expiry and no deadline key is read or written (lua/kvfn.lua).
func (s *Store) kvNow() string {
	now := strconv.FormatInt(s.nowMS(), 10)
	if s.nativeTTL {
		return now + "n"
	}
	return now
}

func (s *Store) kvKeys(key string) []string {
	k := s.keys.siteKey(key)
	return []string{k, s.keys.kvDeadlineKey(k)}
}

// kvRead reads key: on the real clock, where a key's native TTL is its
// expiry, with the plain command cmd sent in the pipeline (it reads what
// the script would, without the script's cost),
// else with script, which honours the injected clock's deadline.
func (s *Store) kvRead(ctx context.Context, script *goredis.Script, cmd, key string) *goredis.Cmd {
	if s.nativeTTL {
		return s.command(ctx, cmd, s.keys.siteKey(key))
	}
	return script.Run(ctx, s.rdb, s.kvKeys(key), s.kvNow())
}

// Get reads a string; ErrNotFound when absent.
func (s *Store) Get(ctx context.Context, key string) (string, error) {
	v, err := s.kvRead(ctx, scriptKVGet, "GET", key).Text()
	if err != nil {
		return "", s.wrap("get", err)
	}
	return v, nil
}

// Set writes a string, replacing its ttl (none when ttl is 0).
func (s *Store) Set(ctx context.Context, key, value string, ttl time.Duration) error {
	ttlMS, err := store.KeyTTL(ttl)
	if err != nil {
		return s.wrap("set", err)
	}
	if s.nativeTTL { // as in kvRead: SET drops the key's ttl, PX gives it one
		return s.wrap("set", s.command(ctx, withTTL([]any{"SET", s.keys.siteKey(key), value}, ttlMS)...).Err())
	}
	return s.wrap("set", scriptKVSet.Run(ctx, s.rdb, s.kvKeys(key), s.kvNow(), value, ttlMS).Err())
}

// withTTL adds a SET's PX option for ttl ms, none for 0.
func withTTL(args []any, ttlMS int64) []any {
	if ttlMS > 0 {
		return append(args, "PX", ttlMS)
	}
	return args
}

// SetNX writes a string only when the key is absent.
func (s *Store) SetNX(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	ttlMS, err := store.KeyTTL(ttl)
	if err != nil {
		return false, s.wrap("setnx", err)
	}
	if s.nativeTTL { // as in kvRead: SET NX is the script's test and write in one
		err := s.command(ctx, withTTL([]any{"SET", s.keys.siteKey(key), value, "NX"}, ttlMS)...).Err()
		if errors.Is(err, goredis.Nil) {
			return false, nil
		}
		return err == nil, s.wrap("setnx", err)
	}
	n, err := scriptKVSetNX.Run(ctx, s.rdb, s.kvKeys(key), s.kvNow(), value, ttlMS).Int()
	if err != nil {
		return false, s.wrap("setnx", err)
	}
	return n == 1, nil
}

// Delete removes keys of any type.
func (s *Store) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, key := range keys {
			p.Del(ctx, s.kvKeys(key)...) // one slot: see kvDeadlineKey
		}
		return nil
	})
	return s.wrap("delete", err)
}

// IncrBy adds delta to the integer at key; ttl applies when it creates it.
func (s *Store) IncrBy(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	ttlMS, err := store.KeyTTL(ttl)
	if err != nil {
		return 0, s.wrap("incrby", err)
	}
	n, err := scriptKVIncrBy.Run(ctx, s.rdb, s.kvKeys(key), s.kvNow(), delta, ttlMS).Int64()
	if err != nil {
		return 0, s.wrap("incrby", err)
	}
	return n, nil
}

// SetAdd adds members to a set; ttl applies when it creates it.
func (s *Store) SetAdd(ctx context.Context, key string, ttl time.Duration, members ...string) (int, error) {
	ttlMS, err := store.KeyTTL(ttl)
	if err != nil {
		return 0, s.wrap("sadd", err)
	}
	if len(members) == 0 {
		return 0, nil
	}
	args := make([]any, 0, 2+len(members))
	args = append(args, s.kvNow(), ttlMS)
	for _, m := range members {
		args = append(args, m)
	}
	n, err := scriptKVSAdd.Run(ctx, s.rdb, s.kvKeys(key), args...).Int()
	if err != nil {
		return 0, s.wrap("sadd", err)
	}
	return n, nil
}

// SetCard counts a set's members (0 when absent).
func (s *Store) SetCard(ctx context.Context, key string) (int64, error) {
	n, err := s.kvRead(ctx, scriptKVSCard, "SCARD", key).Int64()
	if err != nil {
		return 0, s.wrap("scard", err)
	}
	return n, nil
}

// SetHas reports which members the set holds (none when absent).
func (s *Store) SetHas(ctx context.Context, key string, members ...string) ([]bool, error) {
	in := make([]bool, len(members))
	if len(members) == 0 {
		return in, nil
	}
	args := make([]any, 0, 1+len(members))
	args = append(args, s.kvNow())
	for _, m := range members {
		args = append(args, m)
	}
	got, err := scriptKVSIsMember.Run(ctx, s.rdb, s.kvKeys(key), args...).Int64Slice()
	if err != nil {
		return nil, s.wrap("sismember", err)
	}
	for i := range in {
		in[i] = i < len(got) && got[i] == 1
	}
	return in, nil
}

// SetMembers lists a set's members (none when absent).
func (s *Store) SetMembers(ctx context.Context, key string) ([]string, error) {
	m, err := s.kvRead(ctx, scriptKVSMembers, "SMEMBERS", key).StringSlice()
	if err != nil {
		return nil, s.wrap("smembers", err)
	}
	return m, nil
}

// TTL returns the remaining time to live, 0 for none.
func (s *Store) TTL(ctx context.Context, key string) (time.Duration, error) {
	n, err := s.kvRead(ctx, scriptKVTTL, "PTTL", key).Int64() // PTTL answers as the script does
	if err != nil {
		return 0, s.wrap("ttl", err)
	}
	switch {
	case n == -2:
		return 0, s.wrap("ttl", store.ErrNotFound)
	case n < 0:
		return 0, nil
	}
	return time.Duration(n) * time.Millisecond, nil
}

// scanBatch is the COUNT hint of each SCAN round trip.
const scanBatch = 1000

// Scan lists live keys starting with prefix after cursor, in key order.
// It is the site's explicit prefix scan, not a hot path: SCAN MATCH (on
// every master of a cluster) gathers every matching key, which are then
// sorted and checked against the engine clock.
func (s *Store) Scan(ctx context.Context, prefix, cursor string, count int) ([]string, string, error) {
	count = store.ScanCount(count)
	pattern := globEscape(s.keys.siteKey(prefix)) + "*"
	var (
		mu    sync.Mutex
		names []string
	)
	// Every master holds some of the keys on a cluster.
	err := s.eachMaster(ctx, func(ctx context.Context, c goredis.Cmdable) error {
		iter := c.Scan(ctx, 0, pattern, scanBatch).Iterator()
		for iter.Next(ctx) {
			name := iter.Val()
			if s.keys.isEngineKey(name) {
				continue
			}
			key := strings.TrimPrefix(name, s.keys.site)
			if key > cursor {
				mu.Lock()
				names = append(names, key)
				mu.Unlock()
			}
		}
		return iter.Err()
	})
	if err != nil {
		return nil, "", s.wrap("scan", err)
	}
	slices.Sort(names)
	names = slices.Compact(names) // SCAN may return a key twice

	now := s.kvNow()
	var out []string
	for len(names) > 0 && len(out) <= count {
		chunk := names[:min(len(names), count+1-len(out))]
		names = names[len(chunk):]
		pipe := s.rdb.Pipeline()
		cmds := make([]*goredis.Cmd, len(chunk))
		for i, k := range chunk {
			cmds[i] = scriptKVTTL.EvalSha(ctx, pipe, s.kvKeys(k), now)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			if !strings.HasPrefix(err.Error(), "NOSCRIPT") {
				return nil, "", s.wrap("scan", err)
			}
			if err := scriptKVTTL.Load(ctx, s.rdb).Err(); err != nil {
				return nil, "", s.wrap("scan", err)
			}
			names = append(chunk, names...)
			continue
		}
		for i, k := range chunk {
			if n, _ := cmds[i].Int64(); n != -2 {
				out = append(out, k)
			}
		}
	}
	if len(out) > count {
		return out[:count], out[count-1], nil
	}
	return out, "", nil
}

// globEscape quotes the characters SCAN MATCH treats as a pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
