package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// errWrongType is Redis's WRONGTYPE: a string command on a set or the
// other way round.
var errWrongType = fmt.Errorf("%w: key holds the wrong kind of value", store.ErrInvalid)

// live is the condition of an unexpired kv row; its argument is now in ms.
const live = `(expires_at IS NULL OR expires_at > ?)`

// Get returns the string at key.
func (s *Store) Get(ctx context.Context, key string) (string, error) {
	if err := s.open("get"); err != nil {
		return "", err
	}
	var (
		kind  string
		value sql.NullString
	)
	err := s.readRow(ctx, `SELECT kind, value FROM kv WHERE key = ? AND `+live,
		key, s.clock.Now().UnixMilli()).Scan(&kind, &value)
	if err != nil {
		return "", wrap("get", err)
	}
	if kind != "string" {
		return "", wrap("get", errWrongType)
	}
	return value.String, nil
}

// Set stores a string, replacing whatever key held; ttl 0 keeps it forever.
func (s *Store) Set(ctx context.Context, key, value string, ttl time.Duration) error {
	ttlMS, err := store.KeyTTL(ttl)
	if err != nil {
		return wrap("set", err)
	}
	return s.write(ctx, "set", true, func(t *txn) error { return t.kvSet(key, value, ttlMS) })
}

// kvSet is Set inside a transaction.
func (t *txn) kvSet(key, value string, ttlMS int64) error {
	if _, err := t.exec(`DELETE FROM kv_sets WHERE key = ?`, key); err != nil {
		return err
	}
	_, err := t.exec(`INSERT INTO kv (key, kind, value, expires_at) VALUES (?, 'string', ?, ?)
ON CONFLICT (key) DO UPDATE SET kind = 'string', value = excluded.value, expires_at = excluded.expires_at`,
		key, value, keyExpiry(t.now, ttlMS))
	return err
}

// SetNX stores a string only when key is absent.
func (s *Store) SetNX(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	ttlMS, err := store.KeyTTL(ttl)
	if err != nil {
		return false, wrap("setnx", err)
	}
	var set bool
	err = s.write(ctx, "setnx", true, func(t *txn) error {
		if err := t.dropExpired(key); err != nil {
			return err
		}
		n, err := t.exec(`INSERT INTO kv (key, kind, value, expires_at) VALUES (?, 'string', ?, ?)
ON CONFLICT (key) DO NOTHING`, key, value, keyExpiry(t.now, ttlMS))
		set = n == 1
		return err
	})
	return set, err
}

// Delete removes the keys, strings and sets alike.
func (s *Store) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return s.open("delete")
	}
	return s.write(ctx, "delete", true, func(t *txn) error {
		for _, k := range keys {
			if err := t.kvDelete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// kvDelete is Delete of one key inside a transaction.
func (t *txn) kvDelete(key string) error {
	_, err := t.exec(`DELETE FROM kv WHERE key = ?`, key)
	return err
}

// IncrBy adds delta to the integer at key, creating it (with ttl) at 0.
func (s *Store) IncrBy(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	ttlMS, err := store.KeyTTL(ttl)
	if err != nil {
		return 0, wrap("incrby", err)
	}
	var result int64
	err = s.write(ctx, "incrby", true, func(t *txn) error {
		var err error
		result, err = t.kvIncrBy(key, delta, ttlMS)
		return err
	})
	if err != nil {
		return 0, err
	}
	return result, nil
}

// kvIncrBy is IncrBy inside a transaction.
func (t *txn) kvIncrBy(key string, delta, ttlMS int64) (int64, error) {
	if err := t.dropExpired(key); err != nil {
		return 0, err
	}
	var (
		kind  string
		value sql.NullString
	)
	err := t.queryRow(`SELECT kind, value FROM kv WHERE key = ?`, key).Scan(&kind, &value)
	if errors.Is(err, sql.ErrNoRows) {
		_, err = t.exec(`INSERT INTO kv (key, kind, value, expires_at) VALUES (?, 'string', ?, ?)`,
			key, strconv.FormatInt(delta, 10), keyExpiry(t.now, ttlMS))
		return delta, err
	}
	if err != nil {
		return 0, err
	}
	if kind != "string" {
		return 0, errWrongType
	}
	cur, err := strconv.ParseInt(value.String, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: value is not an integer", store.ErrInvalid)
	}
	if (delta > 0 && cur > math.MaxInt64-delta) || (delta < 0 && cur < math.MinInt64-delta) {
		return 0, fmt.Errorf("%w: increment would overflow", store.ErrInvalid)
	}
	_, err = t.exec(`UPDATE kv SET value = ? WHERE key = ?`, strconv.FormatInt(cur+delta, 10), key)
	return cur + delta, err
}

// SetAdd adds members to the set at key, creating it (with ttl), and
// returns how many were new.
func (s *Store) SetAdd(ctx context.Context, key string, ttl time.Duration, members ...string) (int, error) {
	ttlMS, err := store.KeyTTL(ttl)
	if err != nil {
		return 0, wrap("sadd", err)
	}
	if len(members) == 0 {
		return 0, s.open("sadd")
	}
	var added int
	err = s.write(ctx, "sadd", true, func(t *txn) error {
		var err error
		added, err = t.kvSetAdd(key, ttlMS, members)
		return err
	})
	if err != nil {
		return 0, err
	}
	return added, nil
}

// kvSetAdd is SetAdd inside a transaction.
func (t *txn) kvSetAdd(key string, ttlMS int64, members []string) (int, error) {
	if err := t.dropExpired(key); err != nil {
		return 0, err
	}
	var kind string
	err := t.queryRow(`SELECT kind FROM kv WHERE key = ?`, key).Scan(&kind)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := t.exec(`INSERT INTO kv (key, kind, expires_at) VALUES (?, 'set', ?)`,
			key, keyExpiry(t.now, ttlMS)); err != nil {
			return 0, err
		}
	case err != nil:
		return 0, err
	case kind != "set":
		return 0, errWrongType
	}
	added := 0
	for _, m := range members {
		n, err := t.exec(`INSERT INTO kv_sets (key, member) VALUES (?, ?) ON CONFLICT DO NOTHING`, key, m)
		if err != nil {
			return 0, err
		}
		added += int(n)
	}
	return added, nil
}

// SetHas reports which members the set at key holds.
func (s *Store) SetHas(ctx context.Context, key string, members ...string) ([]bool, error) {
	if err := s.open("sismember"); err != nil {
		return nil, err
	}
	in := make([]bool, len(members))
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, wrap("sismember", err)
	}
	defer tx.Rollback()
	var kind string
	err = tx.QueryRowContext(ctx, `SELECT kind FROM kv WHERE key = ? AND `+live, key, s.clock.Now().UnixMilli()).Scan(&kind)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return in, nil
	case err != nil:
		return nil, wrap("sismember", err)
	case kind != "set":
		return nil, wrap("sismember", errWrongType)
	}
	for i, m := range members {
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM kv_sets WHERE key = ? AND member = ?`, key, m).Scan(new(int))
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return nil, wrap("sismember", err)
		default:
			in[i] = true
		}
	}
	return in, nil
}

// SetCard returns the number of members of the set at key (0 when absent).
func (s *Store) SetCard(ctx context.Context, key string) (int64, error) {
	if err := s.open("scard"); err != nil {
		return 0, err
	}
	var n int64
	var kind sql.NullString
	err := s.readRow(ctx, `SELECT (SELECT kind FROM kv WHERE key = ?1 AND `+live+`),
(SELECT COUNT(*) FROM kv_sets WHERE key = ?1)`, key, s.clock.Now().UnixMilli()).Scan(&kind, &n)
	switch {
	case err != nil:
		return 0, wrap("scard", err)
	case !kind.Valid:
		return 0, nil
	case kind.String != "set":
		return 0, wrap("scard", errWrongType)
	}
	return n, nil
}

// SetMembers returns the members of the set at key, sorted.
func (s *Store) SetMembers(ctx context.Context, key string) ([]string, error) {
	if err := s.open("smembers"); err != nil {
		return nil, err
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, wrap("smembers", err)
	}
	defer tx.Rollback()
	var kind string
	err = tx.QueryRowContext(ctx, `SELECT kind FROM kv WHERE key = ? AND `+live, key, s.clock.Now().UnixMilli()).Scan(&kind)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return []string{}, nil
	case err != nil:
		return nil, wrap("smembers", err)
	case kind != "set":
		return nil, wrap("smembers", errWrongType)
	}
	rows, err := tx.QueryContext(ctx, `SELECT member FROM kv_sets WHERE key = ? ORDER BY member`, key)
	if err != nil {
		return nil, wrap("smembers", err)
	}
	defer rows.Close()
	members := []string{}
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return nil, wrap("smembers", err)
		}
		members = append(members, m)
	}
	return members, wrap("smembers", rows.Err())
}

// Scan returns up to count live keys starting with prefix and sorting after
// cursor; next is the last key returned when more may follow.
func (s *Store) Scan(ctx context.Context, prefix, cursor string, count int) ([]string, string, error) {
	if err := s.open("scan"); err != nil {
		return nil, "", err
	}
	count = store.ScanCount(count)
	q := `SELECT key FROM kv WHERE key >= ? AND key > ? AND ` + live
	args := []any{prefix, cursor, s.clock.Now().UnixMilli()}
	if end, ok := prefixEnd(prefix); ok {
		q, args = q+` AND key < ?`, append(args, end)
	}
	rows, err := s.rdb.QueryContext(ctx, q+` ORDER BY key LIMIT ?`, append(args, count+1)...)
	if err != nil {
		return nil, "", wrap("scan", err)
	}
	defer rows.Close()
	keys := []string{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, "", wrap("scan", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, "", wrap("scan", err)
	}
	if len(keys) > count {
		keys = keys[:count]
		return keys, keys[count-1], nil
	}
	return keys, "", nil
}

// prefixEnd is the smallest string greater than every string starting with
// prefix, in byte order; ok is false when there is none (no upper bound).
func prefixEnd(prefix string) (string, bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// TTL returns how long key still lives: 0 for no expiry.
func (s *Store) TTL(ctx context.Context, key string) (time.Duration, error) {
	if err := s.open("ttl"); err != nil {
		return 0, err
	}
	now := s.clock.Now()
	var exp sql.NullInt64
	err := s.readRow(ctx, `SELECT expires_at FROM kv WHERE key = ? AND `+live,
		key, now.UnixMilli()).Scan(&exp)
	if err != nil {
		return 0, wrap("ttl", err)
	}
	if !exp.Valid {
		return 0, nil
	}
	return time.UnixMilli(exp.Int64).Sub(now), nil
}

// keyExpiry is the expires_at of a key written now with a ttl in ms (0:
// none, NULL).
func keyExpiry(now time.Time, ttlMS int64) any {
	if ttlMS == 0 {
		return nil
	}
	return now.UnixMilli() + ttlMS
}

// dropExpired deletes key when it has expired, so a write finds it absent.
func (t *txn) dropExpired(key string) error {
	_, err := t.exec(`DELETE FROM kv WHERE key = ? AND expires_at IS NOT NULL AND expires_at <= ?`,
		key, t.now.UnixMilli())
	return err
}

// applyEffects checks every read of fx against the transaction's view of
// the keys (store.ErrConflict when one changed), then applies its writes.
// It returns the value the last write left when that is an increment
// (store.Store.CommitStepsCount), else 0.
func (t *txn) applyEffects(fx store.Effects) (int64, error) {
	for _, r := range fx.Reads {
		ok, err := t.holds(r)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, fmt.Errorf("%w: %q", store.ErrConflict, r.Key)
		}
	}
	var counted int64
	for _, w := range fx.Writes {
		ttlMS, err := store.KeyTTL(w.TTL)
		if err != nil {
			return 0, err
		}
		counted = 0
		switch w.Op {
		case store.OpSet:
			err = t.kvSet(w.Key, w.Value, ttlMS)
		case store.OpIncrBy:
			counted, err = t.kvIncrBy(w.Key, w.Delta, ttlMS)
		case store.OpSetAdd:
			_, err = t.kvSetAdd(w.Key, ttlMS, w.Members)
		case store.OpDelete:
			err = t.kvDelete(w.Key)
		default:
			err = fmt.Errorf("%w: unknown write %q", store.ErrInvalid, w.Op)
		}
		if err != nil {
			return 0, fmt.Errorf("%s %q: %w", w.Op, w.Key, err)
		}
	}
	return counted, nil
}

// holds reports whether the read r still holds.
func (t *txn) holds(r store.Read) (bool, error) {
	var (
		kind  string
		value sql.NullString
	)
	err := t.queryRow(`SELECT kind, value FROM kv WHERE key = ? AND `+live, r.Key, t.now.UnixMilli()).Scan(&kind, &value)
	exists := true
	switch {
	case errors.Is(err, sql.ErrNoRows):
		exists = false
	case err != nil:
		return false, err
	}
	switch r.Kind {
	case store.ReadString:
		if !r.Exists || !exists {
			return r.Exists == exists, nil
		}
		return kind == "string" && value.String == r.Value, nil
	case store.ReadMember:
		if !exists || kind != "set" {
			return !r.Exists && (!exists || kind == "set"), nil
		}
		err := t.queryRow(`SELECT 1 FROM kv_sets WHERE key = ? AND member = ?`, r.Key, r.Member).Scan(new(int))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return !r.Exists, nil
		case err != nil:
			return false, err
		}
		return r.Exists, nil
	case store.ReadCard:
		if !exists {
			return r.Card == 0, nil
		}
		if kind != "set" {
			return false, nil
		}
		var n int64
		if err := t.queryRow(`SELECT COUNT(*) FROM kv_sets WHERE key = ?`, r.Key).Scan(&n); err != nil {
			return false, err
		}
		return n == r.Card, nil
	}
	return false, fmt.Errorf("%w: unknown read %q", store.ErrInvalid, r.Kind)
}
