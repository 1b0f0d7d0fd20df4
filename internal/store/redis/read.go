package redis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// maxQueueList is the longest queue whose runs a listing of unfinished
// statuses reads (ListRuns); past it, the listing walks the function
// indexes. A variable for the tests.
var maxQueueList int64 = 20000

// maxListScan bounds how many index entries one listing call reads when
// filters drop most of them; the page then ends early, with a cursor.
const maxListScan = 20000

// Listing indexes are sorted sets whose members, all of score 0, are
// "<unix ms, 13 digits>:<id>" (lua/common.lua: member), so lexicographic
// order is time then id. A cursor is the last member returned.

// member is the index member of the item id made at ms.
func member(ms int64, id string) string {
	if ms < 0 {
		return fmt.Sprintf("%013d:%s", ms, id)
	}
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], ms, 10)
	b := make([]byte, 0, max(13, len(d))+1+len(id))
	for range 13 - len(d) {
		b = append(b, '0')
	}
	b = append(b, d...)
	b = append(b, ':')
	return string(append(b, id...))
}

func memberID(m string) string {
	if len(m) < 15 {
		return ""
	}
	return m[14:]
}

// encodeCursor makes the cursor continuing a listing of kind ("event",
// "run") after member; a cursor of one kind is refused by the other.
func encodeCursor(kind, member string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + "/" + member))
}

func decodeCursor(kind, c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	m, ok := strings.CutPrefix(string(b), kind+"/")
	if err != nil || !ok || len(m) < 15 || m[13] != ':' {
		return "", fmt.Errorf("%w: malformed cursor", store.ErrInvalid)
	}
	if _, err := strconv.ParseUint(m[:13], 10, 64); err != nil {
		return "", fmt.Errorf("%w: malformed cursor", store.ErrInvalid)
	}
	return m, nil
}

// bounds gives the ZRANGEBYLEX bounds of a newest-first listing.
func bounds(kind, cursor string, since, until time.Time) (lo, hi string, err error) {
	lo, hi = "-", "+"
	if !since.IsZero() {
		lo = "[" + fmt.Sprintf("%013d", since.UnixMilli())
	}
	if !until.IsZero() {
		hi = "(" + fmt.Sprintf("%013d", until.UnixMilli())
	}
	if cursor != "" {
		m, err := decodeCursor(kind, cursor)
		if err != nil {
			return "", "", err
		}
		if hi == "+" || "("+m < hi {
			hi = "(" + m
		}
	}
	return lo, hi, nil
}

// list walks indexes newest first, merged, from the bounds and returns up
// to limit items that load and keep accept, and the cursor of the next
// page. Each round reads up to count members of every index and takes the
// newest count of them all; the rest are read again in a later round.
// With exact the indexes hold what the listing wants (keep drops only what
// changed since the index was read), so a round reads no more than the
// page needs; otherwise it reads ahead, as keep may drop most.
func list[T any](ctx context.Context, rdb goredis.UniversalClient, kind string, indexes []string, exact bool, cursor string, since, until time.Time,
	limit int, load func(goredis.Pipeliner, string) func() (T, bool, error), keep func(T) bool) (store.Page[T], error) {
	lo, hi, err := bounds(kind, cursor, since, until)
	if err != nil {
		return store.Page[T]{}, err
	}
	page := store.Page[T]{Items: []T{}}
	var members []string // of page.Items
	scanned := 0
	for len(indexes) > 0 {
		want := limit + 1 - len(page.Items)
		count := int64(want)
		if !exact {
			count = int64(max(want, min(4*want, 1000)))
		}
		ms, more, err := newest(ctx, rdb, indexes, lo, hi, count)
		if err != nil {
			return store.Page[T]{}, err
		}
		if len(ms) == 0 {
			break
		}
		pipe := rdb.Pipeline()
		reads := make([]func() (T, bool, error), len(ms))
		for i, m := range ms {
			reads[i] = load(pipe, memberID(m))
		}
		// Each read reports its own error: one may be recovered (eventFrom).
		pipe.Exec(ctx)
		for i, read := range reads {
			item, ok, err := read()
			if err != nil {
				return store.Page[T]{}, err
			}
			if ok && keep(item) {
				page.Items = append(page.Items, item)
				members = append(members, ms[i])
				if len(page.Items) > limit {
					break
				}
			}
		}
		scanned += len(ms)
		hi = "(" + ms[len(ms)-1]
		if len(page.Items) > limit || !more {
			break
		}
		if scanned >= maxListScan {
			// Filters dropped most entries: end this page early.
			page.Cursor = encodeCursor(kind, ms[len(ms)-1])
			return page, nil
		}
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		page.Cursor = encodeCursor(kind, members[limit-1])
	}
	return page, nil
}

// newest returns the newest count members below hi and from lo of the
// indexes together, newest first, without repeats, and whether any index
// may hold more below the last.
func newest(ctx context.Context, rdb goredis.UniversalClient, indexes []string, lo, hi string, count int64) ([]string, bool, error) {
	by := &goredis.ZRangeBy{Min: lo, Max: hi, Count: count}
	if len(indexes) == 1 {
		ms, err := rdb.ZRevRangeByLex(ctx, indexes[0], by).Result()
		return ms, int64(len(ms)) == count, err
	}
	pipe := rdb.Pipeline()
	cmds := make([]*goredis.StringSliceCmd, len(indexes))
	for i, index := range indexes {
		cmds[i] = pipe.ZRevRangeByLex(ctx, index, by)
	}
	if _, err := pipe.Exec(ctx); err != nil && err != goredis.Nil {
		return nil, false, err
	}
	var all []string
	more := false
	for _, c := range cmds {
		all = append(all, c.Val()...)
		more = more || int64(len(c.Val())) == count
	}
	slices.SortFunc(all, func(a, b string) int { return strings.Compare(b, a) })
	all = slices.Compact(all)
	if int64(len(all)) > count {
		all, more = all[:count], true
	}
	return all, more, nil
}

// GetEvent reads one event.
func (s *Store) GetEvent(ctx context.Context, id string) (store.Event, error) {
	ev, ok, err := s.eventFrom(ctx, id, s.rdb.Get(ctx, s.keys.event(id)))
	if err == nil && !ok {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Event{}, s.wrap("get event", err)
	}
	return ev, nil
}

// EventByClientID returns the event the live client id maps to (cid,
// cidexp: live_entry in lua/common.lua).
func (s *Store) EventByClientID(ctx context.Context, clientID string) (store.Event, error) {
	p := s.rdb.Pipeline()
	id := p.HGet(ctx, s.keys.registry("cid"), clientID)
	exp := p.ZScore(ctx, s.keys.registry("cidexp"), clientID)
	if _, err := p.Exec(ctx); err != nil && err != goredis.Nil {
		return store.Event{}, s.wrap("get event", err)
	}
	if id.Err() == goredis.Nil || (exp.Err() == nil && int64(exp.Val()) <= s.nowMS()) {
		return store.Event{}, s.wrap("get event", store.ErrNotFound)
	}
	return s.GetEvent(ctx, id.Val())
}

func (s *Store) loadEvent(p goredis.Pipeliner, id string) func() (store.Event, bool, error) {
	cmd := p.Get(context.Background(), s.keys.event(id))
	return func() (store.Event, bool, error) { return s.eventFrom(context.Background(), id, cmd) }
}

// eventFrom decodes the event GET read (keys.go: event); an event an
// earlier version stored as a hash {doc, name} is read again with HGET.
func (s *Store) eventFrom(ctx context.Context, id string, get *goredis.StringCmd) (store.Event, bool, error) {
	doc, err := get.Result()
	if err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE") {
		doc, err = s.rdb.HGet(ctx, s.keys.event(id), "doc").Result()
	}
	if err == goredis.Nil {
		return store.Event{}, false, nil
	}
	if err != nil {
		return store.Event{}, false, err
	}
	doc, _ = splitEvent(id, doc)
	ev, err := decodeEvent(id, doc)
	return ev, err == nil, err
}

// ListEvents lists events newest first: from the name's index, or all
// names' indexes merged.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) (store.Page[store.Event], error) {
	indexes, err := s.indexes(ctx, "names", f.Name, keys.eventsByName)
	if err != nil {
		return store.Page[store.Event]{}, s.wrap("list events", err)
	}
	p, err := list(ctx, s.rdb, "event", indexes, true, f.Cursor, f.Since, f.Until, store.PageLimit(f.Limit), s.loadEvent,
		func(store.Event) bool { return true })
	if err != nil {
		return store.Page[store.Event]{}, s.wrap("list events", err)
	}
	return p, nil
}

// indexes returns index(k, v) for the keys k of every partition, or with
// v empty index(k, w) for every w in k's registry ("fns", "names";
// keys.go), after bringing an earlier layout up to date.
func (s *Store) indexes(ctx context.Context, registry, v string, index func(k keys, v string) string) ([]string, error) {
	if v != "" {
		out := make([]string, s.Partitions())
		for p := range out {
			out[p] = index(s.keys.in(p), v)
		}
		return out, nil
	}
	if err := s.ensureLayout(ctx); err != nil {
		return nil, err
	}
	members, err := fromEachPartition(ctx, s, func(p goredis.Pipeliner, k keys) *goredis.StringSliceCmd {
		return p.SMembers(ctx, k.registry(registry))
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for p, m := range members {
		for _, w := range m.Val() {
			out = append(out, index(s.keys.in(p), w))
		}
	}
	return out, nil
}

// GetRun reads one run.
func (s *Store) GetRun(ctx context.Context, id string) (store.Run, error) {
	ms, err := s.runsFields(ctx, []string{id})
	if err != nil {
		return store.Run{}, s.wrap("get run", err)
	}
	m := ms[id]
	if len(m) == 0 {
		return store.Run{}, s.wrap("get run", store.ErrNotFound)
	}
	r, err := parseRun(id, m)
	if err != nil {
		return store.Run{}, s.wrap("get run", err)
	}
	return r, nil
}

// runLoader returns a load function for list and listRunIDs: it reads
// each run's hash in the caller's pipeline, with its queue score (a few
// bytes). A run whose hash is missing but which is queued may be kept in
// its event (in_event in lua/common.lua): the first read that finds one
// reads every such run of the pipeline again at once (runsFields), so a
// page of queued runs costs one round trip more, not one per run.
func (s *Store) runLoader() func(p goredis.Pipeliner, id string) func() (store.Run, bool, error) {
	type pending struct {
		id    string
		hash  *goredis.MapStringStringCmd
		avail *goredis.FloatCmd
	}
	var (
		all     []pending
		done    int // all[:done] have been read again when they needed it
		kept    = map[string]map[string]string{}
		keptErr error
	)
	missing := func(r pending) bool {
		return r.hash.Err() == nil && len(r.hash.Val()) == 0 && r.avail.Err() == nil
	}
	return func(p goredis.Pipeliner, id string) func() (store.Run, bool, error) {
		ctx := context.Background()
		r := pending{id, p.HGetAll(ctx, s.keys.run(id)), p.ZScore(ctx, s.keys.queueOf(id), id)}
		all = append(all, r)
		at := len(all)
		return func() (store.Run, bool, error) {
			m, err := r.hash.Result()
			if missing(r) {
				if at > done {
					var ids []string
					for _, q := range all[done:] {
						if missing(q) {
							ids = append(ids, q.id)
						}
					}
					done = len(all)
					var more map[string]map[string]string
					if more, keptErr = s.runsFields(ctx, ids); keptErr == nil {
						maps.Copy(kept, more)
					}
				}
				m, err = kept[id], keptErr
			}
			if err != nil || len(m) == 0 {
				return store.Run{}, false, err
			}
			run, err := parseRun(id, m)
			return run, err == nil, err
		}
	}
}

// runsFields reads the runs ids (runRead): the fields of each that
// exists, by id. The runs of one partition are read in one MULTI, one
// round trip (a MULTI stays in one Cluster slot).
func (s *Store) runsFields(ctx context.Context, ids []string) (map[string]map[string]string, error) {
	out := make(map[string]map[string]string, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	byPart := map[string][]string{}
	for _, id := range ids {
		byPart[s.keys.at(id)] = append(byPart[s.keys.at(id)], id)
	}
	reads := make(map[string]runRead, len(ids))
	for _, part := range byPart {
		_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			for _, id := range part {
				reads[id] = s.readRun(ctx, p, id)
			}
			return nil
		})
		if err != nil && err != goredis.Nil && !strings.HasPrefix(err.Error(), "WRONGTYPE") {
			return nil, err
		}
	}
	for _, id := range ids {
		m, err := reads[id].fields(id)
		if err != nil {
			return nil, err
		}
		if len(m) > 0 {
			out[id] = m
		}
	}
	return out, nil
}

// statusIndexed reports whether runs of status st have a status index,
// runs:fnst:<fn>:<st> (layout 4): only the rare finished statuses do.
// Completed runs are most of runs:fn:<fn>, and every unfinished run is in
// the queue.
func statusIndexed(st store.Status) bool {
	return st == store.StatusFailed || st == store.StatusCancelled || st == store.StatusSkipped
}

// ListRuns lists runs newest first. It walks the narrowest index the
// filter allows and checks the rest on each run.
func (s *Store) ListRuns(ctx context.Context, f store.RunFilter) (store.Page[store.Run], error) {
	fail := func(err error) (store.Page[store.Run], error) {
		return store.Page[store.Run]{}, s.wrap("list runs", err)
	}
	indexed, unfinished := len(f.Statuses) > 0, len(f.Statuses) > 0
	for _, st := range f.Statuses {
		indexed = indexed && statusIndexed(st)
		unfinished = unfinished && !st.Finished()
	}
	var indexes []string
	switch {
	case f.EventID != "":
		return s.listEventRuns(ctx, f)
	case unfinished:
		ids, err := s.queued(ctx)
		if err != nil {
			return fail(err)
		}
		if int64(len(ids)) <= maxQueueList {
			return s.listRunIDs(ctx, ids, f)
		}
		// A backlog this long is the newest runs: the function indexes
		// below find them first.
	case indexed:
		// Each status's index of the function, or of every function, merged.
		for _, st := range f.Statuses {
			more, err := s.indexes(ctx, "fns", f.FunctionID, func(k keys, fn string) string { return k.runsByFunctionStatus(fn, string(st)) })
			if err != nil {
				return fail(err)
			}
			indexes = append(indexes, more...)
		}
	}
	exact := len(f.Statuses) == 0 || indexed
	if indexes == nil {
		var err error
		if indexes, err = s.indexes(ctx, "fns", f.FunctionID, keys.runsByFunction); err != nil {
			return fail(err)
		}
	}
	p, err := list(ctx, s.rdb, "run", indexes, exact, f.Cursor, f.Since, f.Until, store.PageLimit(f.Limit), s.runLoader(),
		func(r store.Run) bool { return matches(f, r) })
	if err != nil {
		return fail(err)
	}
	return p, nil
}

// queued returns the ids in every partition's queue, up to
// maxQueueList+1 from each: more than maxQueueList in all when there are.
func (s *Store) queued(ctx context.Context) ([]string, error) {
	heads, err := fromEachPartition(ctx, s, func(p goredis.Pipeliner, k keys) *goredis.StringSliceCmd {
		return p.ZRange(ctx, k.queue(), 0, maxQueueList)
	})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, h := range heads {
		ids = append(ids, h.Val()...)
	}
	return ids, nil
}

// matches reports whether r has f's function and one of its statuses,
// the filters ListRuns checks on each run.
func matches(f store.RunFilter, r store.Run) bool {
	return (f.FunctionID == "" || r.FunctionID == f.FunctionID) && (len(f.Statuses) == 0 || slices.Contains(f.Statuses, r.Status))
}

// listEventRuns lists the runs of f.EventID, newest first: the ids its
// event string holds, and an earlier layout's runs:ev:<event> (keys.go).
func (s *Store) listEventRuns(ctx context.Context, f store.RunFilter) (store.Page[store.Run], error) {
	var (
		value  *goredis.StringCmd
		legacy *goredis.StringSliceCmd
	)
	if _, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		value = p.Get(ctx, s.keys.event(f.EventID))
		legacy = p.ZRange(ctx, s.keys.runsByEvent(f.EventID), 0, -1)
		return nil
	}); err != nil && err != goredis.Nil && !strings.HasPrefix(err.Error(), "WRONGTYPE") {
		return store.Page[store.Run]{}, s.wrap("list runs", err)
	}
	var ids []string
	if v, err := value.Result(); err == nil {
		_, ids = splitEvent(f.EventID, v)
	}
	for _, m := range legacy.Val() {
		ids = append(ids, memberID(m))
	}
	return s.listRunIDs(ctx, ids, f)
}

// listRunIDs lists, newest first, the runs among ids (which may repeat or
// name runs that are gone) that f accepts: ids is short enough to read the
// function, status and creation of each, and then the page's runs.
func (s *Store) listRunIDs(ctx context.Context, ids []string, f store.RunFilter) (store.Page[store.Run], error) {
	fail := func(err error) (store.Page[store.Run], error) {
		return store.Page[store.Run]{}, s.wrap("list runs", err)
	}
	lo, hi, err := bounds("run", f.Cursor, f.Since, f.Until)
	if err != nil {
		return fail(err)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	pipe := s.rdb.Pipeline()
	heads := make([]*goredis.SliceCmd, len(ids))
	for i, id := range ids {
		heads[i] = pipe.HMGet(ctx, s.keys.run(id), "fn", "status", "created")
	}
	if _, err := pipe.Exec(ctx); err != nil && err != goredis.Nil {
		return fail(err)
	}
	var absent []string // no hash: gone, or kept in its event
	for i, id := range ids {
		if v := heads[i].Val(); v[0] == nil && v[1] == nil && v[2] == nil {
			absent = append(absent, id)
		}
	}
	kept, err := s.runsFields(ctx, absent)
	if err != nil {
		return fail(err)
	}
	var members []string // "<created>:<id>", as the indexes' members
	for i, id := range ids {
		v := heads[i].Val()
		fn, _ := v[0].(string)
		st, _ := v[1].(string)
		created, _ := v[2].(string)
		if m, ok := kept[id]; ok {
			fn, st, created = m["fn"], m["status"], m["created"]
		}
		ms, err := parseMS(created)
		if err != nil || created == "" || !matches(f, store.Run{FunctionID: fn, Status: store.Status(st)}) {
			continue
		}
		m := member(ms, id)
		if (lo == "-" || m >= lo[1:]) && (hi == "+" || m < hi[1:]) {
			members = append(members, m)
		}
	}
	slices.SortFunc(members, func(a, b string) int { return strings.Compare(b, a) })
	limit := store.PageLimit(f.Limit)
	page := store.Page[store.Run]{Items: []store.Run{}}
	if len(members) > limit {
		members = members[:limit]
		page.Cursor = encodeCursor("run", members[limit-1])
	}
	// The page's kept runs were read whole above; the others are read
	// again, whole.
	pipe = s.rdb.Pipeline()
	reads := make([]func() (store.Run, bool, error), len(members))
	load := s.runLoader()
	for i, m := range members {
		id := memberID(m)
		if fields, ok := kept[id]; ok {
			reads[i] = func() (store.Run, bool, error) {
				r, err := parseRun(id, fields)
				return r, err == nil, err
			}
			continue
		}
		reads[i] = load(pipe, id)
	}
	pipe.Exec(ctx) // each read reports its own error
	for _, read := range reads {
		r, ok, err := read()
		if err != nil {
			return fail(err)
		}
		if ok && matches(f, r) { // it may have moved on since
			page.Items = append(page.Items, r)
		}
	}
	return page, nil
}

// Steps lists a run's steps in the order they were first recorded.
func (s *Store) Steps(ctx context.Context, runID string) ([]store.Step, error) {
	var (
		run     runRead
		log     *goredis.StringCmd
		order   *goredis.StringSliceCmd
		docs    *goredis.MapStringStringCmd
		matched *goredis.MapStringStringCmd
	)
	_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		run = s.readRun(ctx, p, runID)
		log = p.Get(ctx, s.keys.stepLog(runID))
		order = p.LRange(ctx, s.keys.stepOrder(runID), 0, -1)
		docs = p.HGetAll(ctx, s.keys.steps(runID))
		matched = p.HGetAll(ctx, s.keys.matched(runID))
		return nil
	})
	if err != nil && err != goredis.Nil && !strings.HasPrefix(err.Error(), "WRONGTYPE") {
		return nil, s.wrap("steps", err)
	}
	// A run its event keeps has recorded no step, and reads as one with
	// none.
	if m, _ := run.fields(runID); len(m) == 0 {
		return nil, s.wrap("steps", store.ErrNotFound)
	}
	// A run recorded in the earlier layout has its records in steps:<run>
	// and their order in steporder:<run> (keys.go).
	records := logRecords(log.Val())
	if ids := order.Val(); len(ids) > 0 {
		records = make([]string, len(ids))
		for i, id := range ids {
			records[i] = docs.Val()[id]
		}
	}
	steps, err := parseSteps(runID, records, matched.Val())
	if err != nil {
		return nil, s.wrap("steps", err)
	}
	return steps, nil
}

// sinceCreated reads a time of a run hash m: unix ms in the field abs (a
// hash written before), else ms after its creation in the field lag; 0
// when neither is set (since_created in lua/common.lua).
func sinceCreated(m map[string]string, abs, lag string) int64 {
	if v := m[abs]; v != "" {
		t, _ := parseMS(v)
		return t
	}
	v, ok := m[lag]
	if !ok {
		return 0
	}
	d, _ := parseMS(v)
	c, _ := parseMS(m["created"])
	return c + d
}

// parseRun reads a run hash (fields written by lua/common.lua).
func parseRun(id string, m map[string]string) (store.Run, error) {
	i := func(k string) int64 { n, _ := parseMS(m[k]); return n }
	r := store.Run{
		ID:               id,
		FunctionID:       m["fn"],
		EventID:          m["ev"],
		Status:           store.Status(m["status"]),
		Attempt:          int(i("attempt")),
		CreatedAt:        fromMS(i("created")),
		StartedAt:        fromMS(sinceCreated(m, "started", "s")),
		EndedAt:          fromMS(sinceCreated(m, "ended", "d")),
		AvailableAt:      fromMS(i("avail")),
		Error:            joined(m, "error", "e"),
		IdempotencyKey:   m["idem"],
		SingletonKey:     m["single"],
		DebounceKey:      m["deb"],
		ConcurrencyKey:   m["ckey"],
		ConcurrencyLimit: int(i("climit")),
		FinishTimeout:    time.Duration(i("ftimeout")) * time.Millisecond,
		FinishBy:         fromMS(i("finish_by")),
		LeaseOwner:       m["owner"],
	}
	if r.ID == "" {
		return store.Run{}, fmt.Errorf("%w: run without id", store.ErrNotFound)
	}
	if o := joined(m, "output", "o"); o != "" {
		r.Output = json.RawMessage(o)
	}
	if evs := m["evs"]; evs != "" {
		if err := json.Unmarshal([]byte(evs), &r.EventIDs); err != nil {
			return store.Run{}, fmt.Errorf("run %s: event ids: %w", r.ID, err)
		}
	} else if r.EventID != "" {
		r.EventIDs = []string{r.EventID} // evs is written once a second event feeds the run
	}
	return r, nil
}

// joined is the field name of a run hash, or when it is stored in parts
// (put_long in lua/common.lua) the parts prefix+"1", prefix+"2", … joined.
func joined(m map[string]string, name, prefix string) string {
	if v, ok := m[name]; ok {
		return v
	}
	var b strings.Builder
	for i := 1; ; i++ {
		part, ok := m[prefix+strconv.Itoa(i)]
		if !ok {
			return b.String()
		}
		b.WriteString(part)
	}
}

// parseStep reads a step record and, when an event completed its wait
// (matched, step id -> match: see complete_wait in lua/common.lua), the
// match.
func parseStep(runID, doc string, matched map[string]string) (store.Step, error) {
	var rec stepRecord
	if err := json.Unmarshal([]byte(doc), &rec); err != nil {
		return store.Step{}, fmt.Errorf("step of run %s: %w", runID, err)
	}
	st := rec.step(runID)
	if match := matched[rec.ID]; match != "" {
		var m struct {
			EndedAt int64           `json:"ended_at"`
			Event   string          `json:"event"` // the id of the event in output, stored (complete_wait)
			Output  json.RawMessage `json:"output"`
		}
		if err := json.Unmarshal([]byte(match), &m); err != nil {
			return store.Step{}, fmt.Errorf("step %s of run %s: %w", rec.ID, runID, err)
		}
		if m.Event != "" {
			// The step's output is the event as every store gives it.
			ev, err := decodeEvent(m.Event, string(m.Output))
			if err == nil {
				m.Output, err = json.Marshal(ev)
			}
			if err != nil {
				return store.Step{}, fmt.Errorf("step %s of run %s: %w", rec.ID, runID, err)
			}
		}
		st.Status, st.Output, st.EndedAt, st.WakeAt = store.StatusCompleted, m.Output, fromMS(m.EndedAt), time.Time{}
	}
	return st, nil
}
