package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// layoutVersion is the layout of the engine keyspace (keys.go) this
// version writes; a keyspace marked with a later one is refused
// (errNewerLayout).
//
//   - Layout 8 writes a kept run's line without its id, and its creation
//     after the id's time (kept_fields in lua/common.lua), and leaves the
//     line once the run has its hash: layout 7 cut it back to the id at
//     the claim, and reads a line without an id as a run whose id is
//     empty. Layout 7's lines are read as they are (the upgrade only marks
//     the keyspace).
//   - Layout 7 keeps a queued run that shares its event's id, without flow
//     control, in its event until a script loads it (in_event in
//     lua/common.lua): run:<id> is written then. An earlier version would
//     find no such run at its claim, so it refuses the keyspace; layout 6's
//     records are read as they are (the upgrade only marks the keyspace).
//   - Layout 6 marks a run that has ever waited for an event (w in its
//     hash), and looks for its waits only then: a step recorded and a run
//     ended took three commands more without. The upgrade from 4 or 5
//     marks the runs that hold waits (markWaitingRuns).
//   - Layout 5 stores a run's start and end as ms after its creation (s, d),
//     a step's duration and its start after its run's id's time, and no ts
//     an event's id already holds. It reads layout 4's records as they are,
//     so the upgrade from 4 only marks the keyspace.
//   - Layout 4 keeps an event's runs in its own string, not in a sorted set
//     runs:ev:<event> (still read for the events an earlier layout stored),
//     and keeps status indexes only for Failed, Cancelled and Skipped runs
//     (statusIndexed).
//   - Layout 3 prunes finished runs through their status indexes; layout 2
//     kept them in a sorted set by end time as well (ended), one sorted-set
//     entry more per finished run.
//   - Layout 2 lists runs and events by merging the per-function and
//     per-name indexes through the registries fns and names; layout 1 kept
//     global indexes as well (runs, events and runs:st:<status>), three
//     entries more per run.
const layoutVersion = 8

// errNewerLayout is a keyspace a later version wrote, whose records this
// version may misread: a run whose start is stored under a name it does
// not know would look as if it never started, and its steps run again.
var errNewerLayout = errors.New("the engine keyspace has a later layout than this version knows")

// errOtherPartitions is a keyspace spread over another number of
// partitions than the store's: the partition of an id depends on it.
var errOtherPartitions = errors.New("the engine keyspace has another number of partitions")

// checkPartitions compares the keyspace's partitions (stored, nil for
// none: 1) with the store's, and records them in a new keyspace spread
// over several, which it marks with this layout (done: there is nothing
// to upgrade). A keyspace spread over several partitions was created by
// this layout or a later one. A keyspace keeps the partitions it was
// first opened with.
func (s *Store) checkPartitions(ctx context.Context, hasLayout bool, stored any) (done bool, err error) {
	n := strconv.Itoa(s.Partitions())
	have, ok := stored.(string)
	if !ok && !hasLayout && s.Partitions() > 1 {
		// A new keyspace: the first daemon records its partitions.
		set, err := s.rdb.SetNX(ctx, s.keys.partitions(), n, 0).Result()
		if err != nil {
			return false, err
		}
		if set {
			return true, s.rdb.Set(ctx, s.keys.layout(), layoutVersion, 0).Err()
		}
		if have, err = s.rdb.Get(ctx, s.keys.partitions()).Result(); err != nil {
			return false, err
		}
		ok = true
	}
	if !ok && !hasLayout && s.cluster != nil {
		// A keyspace created in one slot keeps it: say so while it is new.
		s.log.Warn("a new engine keyspace on a Redis Cluster in one hash slot: every record will live on one master; " +
			"to spread them over the masters, create the keyspace with --redis-partitions (12 for three masters; docs/engine.md)")
	}
	if !ok {
		have = "1"
	}
	if have != n {
		return false, fmt.Errorf("%w: %s, where this store is opened with %s; open it with %s "+
			"(the partitions of a keyspace cannot change: the partition of an id depends on them)",
			errOtherPartitions, have, n, have)
	}
	return false, nil
}

// ensureLayout brings a keyspace an earlier version wrote up to this
// layout, once per store: the listings that merge the registries need
// them (upgradeLayout).
func (s *Store) ensureLayout(ctx context.Context) error {
	if s.layoutDone.Load() {
		return nil
	}
	if err := s.upgradeLayout(ctx); err != nil {
		return err
	}
	s.layoutDone.Store(true)
	return nil
}

// upgradeLayout refuses a keyspace of a later layout and marks one of
// layout 4 as this layout. A keyspace of layout 3 or before has every
// function and event name that has an index registered, layout 1's global
// indexes, layout 2's ended index and layout 3's indexes of Completed and
// unfinished runs dropped, and is then marked. It may run twice at once
// (two daemons starting): each step can be repeated. A new keyspace skips
// the scan.
func (s *Store) upgradeLayout(ctx context.Context) error {
	got, err := s.rdb.MGet(ctx, s.keys.layout(), s.keys.partitions()).Result()
	if err != nil {
		return err
	}
	v, hasLayout := got[0].(string)
	if done, err := s.checkPartitions(ctx, hasLayout, got[1]); done || err != nil {
		return err
	}
	if hasLayout {
		n, perr := strconv.Atoi(v)
		switch {
		case perr == nil && n > layoutVersion:
			return fmt.Errorf("%w: layout %d, this version writes %d; run the later cyberdrew", errNewerLayout, n, layoutVersion)
		case n == layoutVersion:
			return nil
		case n == 6 || n == 7:
			return s.rdb.Set(ctx, s.keys.layout(), layoutVersion, 0).Err()
		case n == 4 || n == 5:
			// Layouts 5 and later read layout 4's records as they are;
			// runs that hold waits are marked.
			if err := s.markWaitingRuns(ctx); err != nil {
				return err
			}
			return s.rdb.Set(ctx, s.keys.layout(), layoutVersion, 0).Err()
		}
	}
	if err := s.rdb.Unlink(ctx, s.keys.engine+"ended").Err(); err != nil {
		return err
	}
	stale := []string{s.keys.engine + "runs", s.keys.engine + "events"}
	// A keyspace holds data of an earlier layout when one wrote its
	// version, or (layout 1 did not) when it has indexes.
	earlier := err == nil
	if !earlier {
		n, err := s.rdb.Exists(ctx, s.keys.registry("fns"), s.keys.registry("names"), stale[0], stale[1]).Result()
		if err != nil {
			return err
		}
		earlier = n > 0
	}
	if earlier {
		var fns, names []any
		err := s.eachMaster(ctx, func(ctx context.Context, c goredis.Cmdable) error {
			iter := c.Scan(ctx, 0, globEscape(s.keys.engine)+"*", scanBatch).Iterator()
			for iter.Next(ctx) {
				name := strings.TrimPrefix(iter.Val(), s.keys.engine)
				if fn, ok := strings.CutPrefix(name, "runs:fn:"); ok {
					fns = append(fns, fn)
				} else if ev, ok := strings.CutPrefix(name, "events:name:"); ok {
					names = append(names, ev)
				} else if strings.HasPrefix(name, "runs:st:") || unindexedStatus(name) {
					stale = append(stale, iter.Val())
				}
			}
			return iter.Err()
		})
		if err != nil {
			return err
		}
		_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i := 0; i < len(fns); i += 1000 {
				p.SAdd(ctx, s.keys.registry("fns"), fns[i:min(i+1000, len(fns))]...)
			}
			for i := 0; i < len(names); i += 1000 {
				p.SAdd(ctx, s.keys.registry("names"), names[i:min(i+1000, len(names))]...)
			}
			p.Unlink(ctx, stale...)
			return nil
		})
		if err != nil {
			return err
		}
		if err := s.markWaitingRuns(ctx); err != nil {
			return err
		}
		s.log.Info("redis: upgraded the engine keyspace's layout", "to", layoutVersion, "functions", len(fns), "event names", len(names))
	}
	return s.rdb.Set(ctx, s.keys.layout(), layoutVersion, 0).Err()
}

// unindexedStatus reports whether name (an engine key without the engine
// prefix) is a status index layout 4 does not keep (statusIndexed).
func unindexedStatus(name string) bool {
	rest, ok := strings.CutPrefix(name, "runs:fnst:")
	if !ok {
		return false
	}
	i := strings.LastIndexByte(rest, ':')
	return i >= 0 && !statusIndexed(store.Status(rest[i+1:]))
}

// markWaitingRuns marks, for layout 6, the runs an earlier layout left
// holding pending or completed waits (runwaits:<run>, matched:<run>): the
// scripts look for a run's waits only when it is marked (mark_waiting in
// lua/common.lua). A run that is gone is not created by its mark.
func (s *Store) markWaitingRuns(ctx context.Context) error {
	seen := map[string]bool{}
	var runs []string
	err := s.eachMaster(ctx, func(ctx context.Context, c goredis.Cmdable) error {
		for _, kind := range []string{"runwaits:", "matched:"} {
			iter := c.Scan(ctx, 0, globEscape(s.keys.engine+kind)+"*", scanBatch).Iterator()
			for iter.Next(ctx) {
				id := strings.TrimPrefix(iter.Val(), s.keys.engine+kind)
				if !seen[id] {
					seen[id] = true
					runs = append(runs, s.keys.run(id))
				}
			}
			if err := iter.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := 0; i < len(runs); i += scanBatch {
		if err := scriptMarkWaiting.Run(ctx, s.rdb, runs[i:min(i+scanBatch, len(runs))]).Err(); err != nil && err != goredis.Nil {
			return fmt.Errorf("mark the runs that wait: %w", err)
		}
	}
	if len(runs) > 0 {
		s.log.Info("redis: marked the runs that wait for events", "runs", len(runs))
	}
	return nil
}

// scriptMarkWaiting sets w on each run hash of KEYS that exists. It runs
// once per upgrade, so it is not among the scripts loaded at open.
var scriptMarkWaiting = goredis.NewScript(`for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then redis.call('HSET', k, 'w', '1') end
end`)
