package redis

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// pubArg is a publication as the scripts read it (publish_one in
// lua/common.lua).
type pubArg struct {
	At       int64     `json:"at"` // ms: the time the publication is stored at
	ID       string    `json:"id"`
	ClientID string    `json:"cid,omitempty"`
	CIDTTL   int64     `json:"cid_ttl,omitempty"` // ms, 0: forever
	Name     string    `json:"name"`
	Doc      string    `json:"doc,omitempty"` // the event as stored (storedEvent); for the publish script an argument of its own
	TS       int64     `json:"ts,omitempty"`  // the event's ts when Doc leaves it out, for the waits it may match
	Runs     []specArg `json:"runs"`
}

// specArg is a run spec as the scripts read it (create_run). Durations
// and times are ms. What a spec does not use is left out: most of its
// JSON for the usual run, which the script decodes for every event.
type specArg struct {
	ID        string `json:"id"`
	Function  string `json:"fn"`
	Avail     int64  `json:"avail,omitempty"`
	Idem      string `json:"idem,omitempty"`
	IdemTTL   int64  `json:"idem_ttl,omitempty"`
	RLKey     string `json:"rl_key,omitempty"`
	RLLimit   int    `json:"rl_limit,omitempty"`
	RLPeriod  int64  `json:"rl_period,omitempty"`
	Single    string `json:"single,omitempty"`
	Deb       string `json:"deb,omitempty"`
	DebPeriod int64  `json:"deb_period,omitempty"`
	DebMax    int64  `json:"deb_max,omitempty"`
	CKey      string `json:"ckey,omitempty"`
	CLimit    int    `json:"climit,omitempty"`
	FTimeout  int64  `json:"ftimeout,omitempty"`
	// The lease the spec asks for (RunSpec.LeaseTo): its owner, its token
	// and its expiry.
	LeaseOwner string `json:"lo,omitempty"`
	LeaseToken string `json:"lt,omitempty"`
	LeaseUntil int64  `json:"lu,omitempty"`
}

// waitArg is a pending WaitForEvent as the scripts read it (match_waits).
type waitArg struct {
	Run     string `json:"run"`
	Step    string `json:"step"`
	Event   string `json:"event"`
	Path    string `json:"path"`
	Value   string `json:"value"`   // compact JSON
	Expires int64  `json:"expires"` // ms, 0: never
}

// stepRecord is a step as stored in steplog:<run> (keys.go), which
// save_record (lua/common.lua) finds by its start: the id must stay the
// first field. A record leaves out what the usual step has: its name when
// it is the id, its kind when "run", its status when "Completed".
//
// A step that started and ended stores its duration ("d") and its start as
// ms after the time of its run's id ("s", 0 left out; absolute when the id
// is not a ULID), and then its attempts only when they are not the usual
// one, without error, from its start to its end: "att" lists them, "na"
// says there were none. A step without a start or an end stores the times
// it has ("s", "e") as unix ms, and "once" for the usual attempt.
//
// Earlier records are still read: those written before durations store
// "e" and "once" for every step, and leave out the start when it is the
// end; those of the first layout (steps:<run>) have Attempts and always a
// name; those written before the short field names have kind, status,
// output, error, wake_at, started_at and ended_at, always with their kind,
// status and start.
type stepRecord struct {
	ID    string          `json:"id"`
	Name  *string         `json:"name,omitempty"` // nil: the id
	K     string          `json:"k,omitempty"`    // kind; "": run
	St    string          `json:"st,omitempty"`   // status; "": Completed
	Att   []attemptRecord `json:"att,omitempty"`
	NoAtt bool            `json:"na,omitempty"`   // with Dur: no attempts
	Once  bool            `json:"once,omitempty"` // without Dur: one attempt, from the start to the end, without error
	Out   json.RawMessage `json:"o,omitempty"`
	Err   string          `json:"err,omitempty"`
	Wake  int64           `json:"w,omitempty"`
	Start int64           `json:"s,omitempty"` // with Dur: after runBase; without, 0: the end
	Dur   *int64          `json:"d,omitempty"` // the end minus the start
	End   int64           `json:"e,omitempty"` // without Dur
	Wait  *store.Wait     `json:"wait,omitempty"`

	// Earlier records' fields, read only.
	Kind      string          `json:"kind,omitempty"`
	Status    string          `json:"status,omitempty"`
	Attempts  []store.Attempt `json:"attempts,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
	Error     string          `json:"error,omitempty"`
	WakeAt    int64           `json:"wake_at,omitempty"`
	StartedAt int64           `json:"started_at,omitempty"`
	EndedAt   int64           `json:"ended_at,omitempty"`
}

// attemptRecord is a store.Attempt with its times in unix ms: a third of
// the bytes of two RFC 3339 times.
type attemptRecord struct {
	Start int64  `json:"s,omitempty"`
	End   int64  `json:"e,omitempty"`
	Error string `json:"err,omitempty"`
}

// runBase is the time step records of run runID count their start from
// (with Dur): the time of its id, or 0 for an id that is not a ULID.
func runBase(runID string) int64 {
	t, _ := idTime(runID)
	return t
}

// newStepRecord encodes st, a step of run runID, for steplog:<run>.
func newStepRecord(runID string, st store.Step) stepRecord {
	start, end := ms(st.StartedAt), ms(st.EndedAt)
	rec := stepRecord{ID: st.ID, Out: st.Output, Err: st.Error, Wake: ms(st.WakeAt), Wait: st.Wait}
	if st.Kind != store.StepRun {
		rec.K = string(st.Kind)
	}
	if st.Status != store.StatusCompleted {
		rec.St = string(st.Status)
	}
	if st.Name != st.ID {
		rec.Name = &st.Name
	}
	a := st.Attempts
	once := len(a) == 1 && a[0].Error == "" && start != 0 && ms(a[0].StartedAt) == start && ms(a[0].EndedAt) == end
	if start != 0 && end != 0 {
		d := end - start
		rec.Start, rec.Dur = start-runBase(runID), &d
		switch {
		case once:
			return rec
		case len(a) == 0:
			rec.NoAtt = true
			return rec
		}
	} else {
		rec.End = end
		if start != end {
			rec.Start = start
		}
		if once {
			rec.Once = true
			return rec
		}
	}
	for _, at := range a {
		rec.Att = append(rec.Att, attemptRecord{Start: ms(at.StartedAt), End: ms(at.EndedAt), Error: at.Error})
	}
	return rec
}

// step decodes the record of a step of run runID.
func (rec stepRecord) step(runID string) store.Step {
	switch {
	case rec.Kind != "" || rec.Status != "":
		// A record with the long field names.
		rec.K, rec.St, rec.Out, rec.Err, rec.Wake = rec.Kind, rec.Status, rec.Output, rec.Error, rec.WakeAt
		rec.Start, rec.End = rec.StartedAt, rec.EndedAt
	case rec.Dur != nil:
		rec.Start += runBase(runID)
		rec.End = rec.Start + *rec.Dur
		rec.Once = rec.Att == nil && !rec.NoAtt
	case rec.Start == 0:
		rec.Start = rec.End
	}
	if rec.K == "" {
		rec.K = string(store.StepRun)
	}
	if rec.St == "" {
		rec.St = string(store.StatusCompleted)
	}
	st := store.Step{
		RunID: runID, ID: rec.ID, Name: rec.ID, Kind: store.StepKind(rec.K), Status: store.Status(rec.St),
		Attempts: rec.Attempts, Output: rec.Out, Error: rec.Err, WakeAt: fromMS(rec.Wake),
		StartedAt: fromMS(rec.Start), EndedAt: fromMS(rec.End), Wait: rec.Wait,
	}
	if rec.Name != nil {
		st.Name = *rec.Name
	}
	if rec.Once {
		st.Attempts = []store.Attempt{{StartedAt: st.StartedAt, EndedAt: st.EndedAt}}
	}
	for _, a := range rec.Att {
		st.Attempts = append(st.Attempts, store.Attempt{StartedAt: fromMS(a.Start), EndedAt: fromMS(a.End), Error: a.Error})
	}
	if st.Attempts == nil {
		st.Attempts = []store.Attempt{}
	}
	return st
}

func specArgs(specs []store.RunSpec, now time.Time) []specArg {
	out := make([]specArg, len(specs))
	for i, r := range specs {
		out[i] = specArg{
			ID: r.ID, Function: r.FunctionID, Avail: ms(r.AvailableAt),
			Idem: r.IdempotencyKey, IdemTTL: r.IdempotencyTTL.Milliseconds(),
			RLKey: r.RateLimitKey, RLLimit: r.RateLimit, RLPeriod: r.RateLimitPeriod.Milliseconds(),
			Single: r.SingletonKey,
			Deb:    r.DebounceKey, DebPeriod: r.DebouncePeriod.Milliseconds(), DebMax: r.DebounceMaxWait.Milliseconds(),
			CKey: r.ConcurrencyKey, CLimit: r.ConcurrencyLimit, FTimeout: r.FinishTimeout.Milliseconds(),
		}
		if r.LeaseNow(now) {
			out[i].LeaseOwner, out[i].LeaseToken, out[i].LeaseUntil = r.LeaseTo.Owner, newToken(), now.Add(r.LeaseTo.TTL).UnixMilli()
		}
	}
	return out
}

// pubItem is one publication for the publish script or the transaction
// (publishtx.go): its pubArg without the event (arg), and the event as
// stored (doc), which the script gets as an argument of its own so that
// neither side escapes and unescapes it as a JSON string.
type pubItem struct {
	arg  pubArg
	doc  string
	part int // the partition it is stored in (store.Publication.Partition)
}

// pubItems validates pubs and encodes each event as stored, stamping it
// with now and giving an id to those without: in the partition of their
// runs, else in home's (a step's emits: their run's), or partition 0's
// for one with a client id.
func (s *Store) pubItems(pubs []store.Publication, now time.Time, home int) ([]pubItem, error) {
	items := make([]pubItem, len(pubs))
	for i, p := range pubs {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		ev := p.StoredEvent()
		n := s.Partitions()
		if ev.ID == "" {
			part := home
			switch {
			case len(p.Runs) > 0:
				part = store.PartitionOf(p.Runs[0].ID, n)
			case p.Pinned():
				part = 0
			}
			ev.ID, _ = store.MintIn(part, n, func() string { return s.newULID(now) })
		}
		p.Event.ID = ev.ID
		part, ok := p.Partition(n)
		if !ok {
			return nil, fmt.Errorf("%w: event %q: its runs are not all in its partition of %d (store.Publication.Partition)", store.ErrInvalid, ev.Name, n)
		}
		if part != 0 && p.Pinned() {
			return nil, fmt.Errorf("%w: event %q: a publication with a client id or flow control belongs in partition 0, where its keys are, not %d of %d (store.Publication.Pinned)",
				store.ErrInvalid, ev.Name, part, n)
		}
		ev.ReceivedAt = now
		doc, noTS, err := encodeEvent(ev)
		if err != nil {
			return nil, fmt.Errorf("%w: event %q: %w", store.ErrInvalid, ev.Name, err)
		}
		items[i] = pubItem{doc: string(doc), part: part, arg: pubArg{At: now.UnixMilli(), ID: ev.ID,
			ClientID: ev.ClientID, CIDTTL: p.ClientIDTTL.Milliseconds(), Name: ev.Name, Runs: specArgs(p.Runs, now)}}
		if noTS {
			items[i].arg.TS = ev.TS
		}
	}
	return items, nil
}

// emitArgs validates the publications a run in runID's partition emits
// with a step or its end, and encodes those stored in that partition, each
// event inside it, for the script that publishes them with its own writes
// (savestep's and finish's emits). On a keyspace of several partitions it
// first publishes the others (a publication with flow control or a client
// id, which the engine puts in partition 0) and has the waits of the other
// partitions matched by the rest (matchElsewhere): a commit touches its
// own partition alone. Both are idempotent, as the engine derives an
// emit's id from its run and step there, so a step executed again after a
// failed commit repeats them without effect.
func (s *Store) emitArgs(ctx context.Context, pubs []store.Publication, now time.Time, runID string) ([]json.RawMessage, error) {
	home := store.PartitionOf(runID, s.Partitions())
	items, err := s.pubItems(pubs, now, home)
	if err != nil {
		return nil, err
	}
	if s.Partitions() > 1 && len(items) > 0 {
		var local []pubItem
		var elsewhere []store.Publication
		for i := range items {
			if items[i].part == home {
				local = append(local, items[i])
				continue
			}
			p := pubs[i]
			p.Event.ID = items[i].arg.ID // as pubItems gave it one
			elsewhere = append(elsewhere, p)
		}
		if len(elsewhere) > 0 {
			if _, err := s.Publish(ctx, elsewhere); err != nil {
				return nil, err
			}
		}
		if err := s.matchElsewhere(ctx, local, nil); err != nil {
			return nil, err
		}
		items = local
	}
	args := make([]json.RawMessage, len(items))
	for i := range items {
		a := items[i].arg
		a.Doc = items[i].doc
		if args[i], err = json.Marshal(a); err != nil {
			return nil, err
		}
	}
	return args, nil
}

// matchArg is an event for the match script (lua/match.lua).
type matchArg struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	TS   int64  `json:"ts,omitempty"`
}

// matchElsewhere has the waits that items satisfy completed in every
// partition but each item's own (its publication's: the match script):
// one round trip finds the partitions holding waits for any of their
// names, and each of those gets one call with the items of the others. ids, when set, are the ids the events
// were stored under (a duplicate's first). On a keyspace of one
// partition it does nothing.
func (s *Store) matchElsewhere(ctx context.Context, items []pubItem, ids []string) error {
	n := s.Partitions()
	if n == 1 || len(items) == 0 {
		return nil
	}
	var names []string
	for i := range items {
		names = appendOnce(names, items[i].arg.Name)
	}
	found, err := fromEachPartition(ctx, s, func(p goredis.Pipeliner, k keys) *goredis.IntCmd {
		ws := make([]string, len(names))
		for j, name := range names {
			ws[j] = k.waits(name)
		}
		return p.Exists(ctx, ws...)
	})
	if err != nil {
		return err
	}
	for q, c := range found {
		if c.Val() == 0 {
			continue
		}
		var evs []matchArg
		args := []any{s.nowMS(), ""}
		for i := range items {
			a := &items[i].arg
			if items[i].part == q {
				continue
			}
			id := a.ID
			if ids != nil {
				id = ids[i]
			}
			evs = append(evs, matchArg{ID: id, Name: a.Name, TS: a.TS})
			args = append(args, items[i].doc)
		}
		if len(evs) == 0 {
			continue
		}
		b, err := json.Marshal(evs)
		if err != nil {
			return err
		}
		args[1] = string(b)
		if err := s.acked(ctx, scriptMatch, []string{s.keys.parts[q]}, args...).Err(); err != nil {
			return err
		}
	}
	return nil
}

// jsonArray joins encoded values into one JSON array.
func jsonArray(items []json.RawMessage) string {
	n := 2
	for _, it := range items {
		n += len(it) + 1
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it)
	}
	b.WriteByte(']')
	return b.String()
}

// Publish stores events and the runs they trigger. Concurrent calls share
// one script call (see batch.go); each call's publications stay together
// and in order.
func (s *Store) Publish(ctx context.Context, pubs []store.Publication) ([]store.Published, error) {
	items, err := s.pubItems(pubs, s.clock.Now(), 0)
	if err != nil {
		return nil, s.wrap("publish", err)
	}
	if len(items) == 0 {
		return []store.Published{}, nil
	}
	out, err := s.publishes.do(ctx, items)
	if err != nil {
		return nil, s.wrap("publish", err)
	}
	for i := range out {
		var ev *store.Event // the event as stored, decoded once for the runs leased with it
		for _, ref := range out[i].Runs {
			if ref.Lease == nil {
				continue
			}
			if ev == nil {
				e, err := decodeEvent(out[i].EventID, items[i].doc)
				if err != nil {
					return nil, s.wrap("publish", err)
				}
				ev = &e
			}
			ref.Lease.Event = *ev
		}
	}
	return out, nil
}

// publishGroup runs the publish script over the publications of a group
// of callers, once per partition they are in, and then has them complete
// the other partitions' waits: for duplicates too, as a resend after a
// failure between the two must still complete them.
func (s *Store) publishGroup(ctx context.Context, items []pubItem) ([]store.Published, error) {
	res, err := byPartition(ctx, s.Partitions(), items, func(it *pubItem) int { return it.part },
		func(ctx context.Context, p int, items []pubItem) ([]store.Published, error) {
			k := s.keys.in(p)
			if s.txPublishable(items) {
				res, err := s.publishTx(ctx, k, items)
				if !errors.Is(err, errTxDeclined) {
					return res, err
				}
			}
			replies, err := s.publishScript(ctx, k, items)
			if err != nil {
				return nil, err
			}
			return publishedOf(replies)
		})
	if err != nil || s.Partitions() == 1 {
		return res, err
	}
	ids := make([]string, len(res))
	for i, r := range res {
		ids[i] = r.EventID
	}
	return res, s.matchElsewhere(ctx, items, ids)
}

// publishedOf reads the publish script's replies, one per publication.
func publishedOf(replies []any) ([]store.Published, error) {
	out := make([]store.Published, len(replies))
	for i, r := range replies {
		t, _ := r.([]any)
		if len(t) != 3 {
			return nil, fmt.Errorf("unexpected reply %v", r)
		}
		rs, err := refs(t[2])
		if err != nil {
			return nil, err
		}
		out[i] = store.Published{EventID: str(t[0]), Duplicate: num(t[1]) == 1, Runs: rs}
	}
	return out, nil
}

// byPartition applies apply to the items of each partition in turn (part
// tells an item's), keeping their order, and returns the results in the
// order of items; an error fails them all. With one partition it is
// apply(ctx, 0, items).
func byPartition[T, R any](ctx context.Context, n int, items []T, part func(*T) int,
	apply func(ctx context.Context, p int, items []T) ([]R, error)) ([]R, error) {
	if n <= 1 {
		return apply(ctx, 0, items)
	}
	out := make([]R, len(items))
	for p := range n {
		var group []T
		var at []int
		for i := range items {
			if part(&items[i]) == p {
				group = append(group, items[i])
				at = append(at, i)
			}
		}
		if len(group) == 0 {
			continue
		}
		res, err := apply(ctx, p, group)
		if err != nil {
			return nil, err
		}
		if len(res) != len(group) {
			return nil, fmt.Errorf("unexpected reply: %d results for %d items", len(res), len(group))
		}
		for j, i := range at {
			out[i] = res[j]
		}
	}
	return out, nil
}

// publishScript runs the publish script over items, in k's partition.
func (s *Store) publishScript(ctx context.Context, k keys, items []pubItem) ([]any, error) {
	heads := make([]json.RawMessage, len(items))
	args := make([]any, 2, 2+len(items))
	for i := range items {
		var err error
		if heads[i], err = json.Marshal(items[i].arg); err != nil {
			return nil, err
		}
		args = append(args, items[i].doc)
	}
	args[0], args[1] = s.nowMS(), jsonArray(heads)
	return s.acked(ctx, scriptPublish, []string{k.engine}, args...).Slice()
}

// CreateRuns creates runs for an event already stored.
func (s *Store) CreateRuns(ctx context.Context, eventID string, specs []store.RunSpec) ([]store.RunRef, error) {
	if err := store.ValidateRunSpecs(specs); err != nil {
		return nil, s.wrap("create runs", err)
	}
	// The runs share a partition, which may not be their event's (the
	// engine puts a run flow control decides on in partition 0).
	prefix := s.keys.at(specs[0].ID)
	for _, sp := range specs {
		if s.keys.at(sp.ID) != prefix {
			return nil, s.wrap("create runs", fmt.Errorf("%w: runs %s and %s are in two partitions", store.ErrInvalid, specs[0].ID, sp.ID))
		}
		if sp.FlowControlled() && store.PartitionOf(sp.ID, s.Partitions()) != 0 {
			return nil, s.wrap("create runs", fmt.Errorf("%w: run %s has flow control and belongs in partition 0, where its keys are (store.Publication.Pinned)",
				store.ErrInvalid, sp.ID))
		}
	}
	// On a cluster a script cannot reach another partition's slot for the
	// event its runs append themselves to.
	if s.cluster != nil && s.keys.at(eventID) != prefix {
		return nil, s.wrap("create runs", fmt.Errorf("%w: run %s is not in event %s's partition: on a partitioned Redis Cluster "+
			"a run flow control decides on cannot be created for an event of another partition than 0", store.ErrInvalid, specs[0].ID, eventID))
	}
	now := s.clock.Now()
	arg, err := json.Marshal(specArgs(specs, now))
	if err != nil {
		return nil, s.wrap("create runs", err)
	}
	res, err := s.acked(ctx, scriptCreateRuns, []string{prefix}, now.UnixMilli(), eventID, string(arg)).Result()
	if err != nil {
		return nil, s.wrap("create runs", err)
	}
	rs, err := refs(res)
	return rs, s.wrap("create runs", err)
}

// Claim leases up to n claimable runs in one script. On a partitioned
// keyspace it first reads the n earliest claimable entries of every
// partition's queue (one round trip), and then leases in each partition
// as many as it holds of the n earliest of them all, in their order: runs
// start in the order they became claimable, whichever partition holds
// them, and a partition with nothing claimable costs no script. Entries a
// partition's claim skips (a concurrency limit reached) leave room that
// the partitions with claimable entries fill, in the same order.
func (s *Store) Claim(ctx context.Context, owner string, n int, ttl time.Duration) ([]store.Lease, error) {
	if err := store.ValidateLeaseTTL(ttl); err != nil {
		return nil, s.wrap("claim", err)
	}
	if n <= 0 {
		return nil, nil
	}
	if s.Partitions() == 1 {
		return s.claimIn(ctx, s.keys.engine, owner, n, ttl)
	}
	by := &goredis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(s.nowMS(), 10), Count: int64(n)}
	heads, err := fromEachPartition(ctx, s, func(p goredis.Pipeliner, k keys) *goredis.ZSliceCmd {
		return p.ZRangeByScoreWithScores(ctx, k.queue(), by)
	})
	if err != nil {
		return nil, s.wrap("claim", err)
	}
	type head struct {
		at   float64
		id   string
		part int
	}
	var all []head
	for p, h := range heads {
		for _, z := range h.Val() {
			id, _ := z.Member.(string)
			all = append(all, head{z.Score, id, p})
		}
	}
	slices.SortFunc(all, func(a, b head) int {
		if a.at != b.at {
			return cmp.Compare(a.at, b.at)
		}
		return strings.Compare(a.id, b.id)
	})
	counts := make([]int, s.Partitions())
	var order []int // partitions by their earliest entry among the first n
	for _, h := range all[:min(n, len(all))] {
		if counts[h.part] == 0 {
			order = append(order, h.part)
		}
		counts[h.part]++
	}
	var leases []store.Lease
	claim := func(p, want int) error {
		got, err := s.claimIn(ctx, s.keys.parts[p], owner, want, ttl)
		leases = append(leases, got...)
		return err
	}
	err = func() error {
		for _, p := range order {
			if err := claim(p, counts[p]); err != nil {
				return err
			}
		}
		tried := make([]bool, s.Partitions())
		for _, h := range all {
			if len(leases) >= n {
				break
			}
			if !tried[h.part] {
				tried[h.part] = true
				if err := claim(h.part, n-len(leases)); err != nil {
					return err
				}
			}
		}
		return nil
	}()
	if err != nil && len(leases) == 0 {
		return nil, err
	}
	if err != nil {
		// Those granted are the caller's: the next claim tries the
		// partition that failed again.
		s.log.Warn("redis: claim: a partition failed", "err", err)
	}
	return leases, nil
}

// claimIn leases up to n claimable runs of the partition prefix names.
func (s *Store) claimIn(ctx context.Context, prefix, owner string, n int, ttl time.Duration) ([]store.Lease, error) {
	now := s.clock.Now()
	until := now.Add(ttl)
	res, err := s.run(ctx, scriptClaim, []string{prefix}, now.UnixMilli(), owner, n,
		until.UnixMilli(), newToken()).Slice()
	if err != nil {
		return nil, s.wrap("claim", err)
	}
	leases := make([]store.Lease, 0, len(res))
	for _, r := range res {
		t, _ := r.([]any)
		if len(t) != 6 {
			return nil, s.wrap("claim", fmt.Errorf("unexpected reply %v", r))
		}
		run, err := parseRun(str(t[0]), flatMap(t[2]))
		if err != nil {
			return nil, s.wrap("claim", err)
		}
		// The hash as read, before the claim wrote these (see claim.lua).
		run.Status, run.LeaseOwner, run.AvailableAt = store.StatusRunning, owner, fromMS(until.UnixMilli())
		steps, err := parseRunSteps(run.ID, t[3])
		if err != nil {
			return nil, s.wrap("claim", err)
		}
		var ev store.Event
		if doc := str(t[5]); doc != "" {
			if ev, err = decodeEvent(run.EventID, doc); err != nil {
				return nil, s.wrap("claim", err)
			}
		}
		leases = append(leases, store.Lease{RunID: run.ID, Token: str(t[1]), Owner: owner,
			Until: fromMS(until.UnixMilli()), Run: run, Steps: steps, TakenOver: t[4] == int64(1), Event: ev})
	}
	return leases, nil
}

// RenewLeases extends each lease to now+ttl, in one script.
func (s *Store) RenewLeases(ctx context.Context, ls []*store.Lease, ttl time.Duration) ([]error, error) {
	if err := store.ValidateLeaseTTL(ttl); err != nil {
		return nil, s.wrap("renew leases", err)
	}
	if len(ls) == 0 {
		return []error{}, nil
	}
	now := s.clock.Now()
	until := fromMS(now.Add(ttl).UnixMilli())
	n := s.Partitions()
	res, err := byPartition(ctx, n, ls, func(l **store.Lease) int { return store.PartitionOf((*l).RunID, n) },
		func(ctx context.Context, p int, ls []*store.Lease) ([]any, error) {
			pairs := make([][2]string, len(ls))
			for i, l := range ls {
				pairs[i] = [2]string{l.RunID, l.Token}
			}
			arg, err := json.Marshal(pairs)
			if err != nil {
				return nil, err
			}
			return s.run(ctx, scriptRenew, []string{s.keys.parts[p]}, now.UnixMilli(), until.UnixMilli(), string(arg)).Slice()
		})
	if err != nil {
		return nil, s.wrap("renew leases", err)
	}
	if len(res) != len(ls) {
		return nil, s.wrap("renew leases", fmt.Errorf("unexpected reply %v", res))
	}
	errs := make([]error, len(ls))
	for i, l := range ls {
		if num(res[i]) != 1 {
			errs[i] = s.wrap("renew lease", store.ErrLeaseLost)
			continue
		}
		l.Until = until
		l.Run.AvailableAt = until
	}
	return errs, nil
}

// SaveStep records a step under the lease and publishes emit with it.
func (s *Store) SaveStep(ctx context.Context, l *store.Lease, st store.Step, emit []store.Publication) error {
	return s.CommitStep(ctx, l, st, emit, store.Effects{})
}

// CommitStep records a step with its KV effects in one script. On Redis
// Cluster every key of a script must share a slot, so a step with effects
// needs its site keys in the engine's slot: others are refused with
// store.ErrInvalid (see cluster.go).
func (s *Store) CommitStep(ctx context.Context, l *store.Lease, st store.Step, emit []store.Publication, fx store.Effects) error {
	return s.CommitSteps(ctx, l, []store.StepCommit{{Step: st, Emit: emit, Effects: fx}})
}

// CommitSteps records steps with their KV effects in one script, as
// CommitStep records one.
func (s *Store) CommitSteps(ctx context.Context, l *store.Lease, steps []store.StepCommit) error {
	if s.ahead(steps) {
		_, err := s.commitAhead(ctx, l, steps, nil, false)
		return s.wrap("save step", err)
	}
	return s.wrap("save step", s.saveSteps(ctx, l, steps, ""))
}

// countMark is the output the last step of a counted commit is encoded
// with (the engine writes a counted step's output itself); the savestep
// script finds it as the record's output field and puts the value the
// increment left in its place (COUNT_MARK in lua/savestep.lua).
const countMark = `"\u0000count"`

// CommitStepsCount commits steps as CommitSteps does, the last of them
// counted (store.CheckCounted): the savestep script keeps the value of
// the increment it applies last and writes it into that step's record in
// place of countMark, then answers with it.
func (s *Store) CommitStepsCount(ctx context.Context, l *store.Lease, steps []store.StepCommit) (int64, error) {
	if err := store.CheckCounted(steps); err != nil {
		return 0, s.wrap("save step", err)
	}
	steps = slices.Clone(steps)
	steps[len(steps)-1].Step.Output = json.RawMessage(countMark)
	if s.ahead(steps) {
		n, err := s.commitAhead(ctx, l, steps, nil, true)
		return n, s.wrap("save step", err)
	}
	keys, args, err := s.saveStepsArgs(ctx, l, steps, "", true)
	if err != nil {
		return 0, s.wrap("save step", err)
	}
	n, err := s.acked(ctx, scriptSaveStep, keys, args...).Int64()
	return n, s.wrap("save step", err)
}

// saveSteps runs the savestep script: steps, then the finish when finish
// (a finishArg without its run, token and time) is not "".
func (s *Store) saveSteps(ctx context.Context, l *store.Lease, steps []store.StepCommit, finish string) error {
	keys, args, err := s.saveStepsArgs(ctx, l, steps, finish, false)
	if err != nil {
		return err
	}
	return s.acked(ctx, scriptSaveStep, keys, args...).Err()
}

// saveStepsArgs are the keys and arguments of the savestep script;
// counted marks the last step's output as the value of the last write
// (CommitStepsCount).
func (s *Store) saveStepsArgs(ctx context.Context, l *store.Lease, steps []store.StepCommit, finish string, counted bool) ([]string, []any, error) {
	now := s.clock.Now()
	fx, err := store.MergeEffects(steps)
	if err != nil {
		return nil, nil, err
	}
	keys, fxDoc, err := s.effectsArg(s.keys.at(l.RunID), fx)
	if err != nil {
		return nil, nil, err
	}
	if counted {
		fxDoc = `{"c":1,` + fxDoc[1:]
	}
	if err := s.inEngineSlot(keys[1:]); err != nil {
		return nil, nil, err
	}
	args := make([]any, 0, 6+7*len(steps))
	args = append(args, now.UnixMilli(), l.RunID, l.Token, fxDoc, finish, len(steps))
	for _, sc := range steps {
		if args, err = s.appendStepArgs(ctx, args, l, sc, now); err != nil {
			return nil, nil, err
		}
	}
	return keys, args, nil
}

// CommitStepsGet commits steps as CommitSteps does and reads key after
// them in the same round trip (store.CommitReader): the function and a
// GET pipelined on one connection, which Redis runs in order. Where a
// pipeline would not do (replicas to wait for, the engine's code running
// as scripts, a key the script cannot read the same way), the commit and
// the read are two calls.
func (s *Store) CommitStepsGet(ctx context.Context, l *store.Lease, steps []store.StepCommit, key string) (string, error, error) {
	twoCalls := func() (string, error, error) {
		if err := s.CommitSteps(ctx, l, steps); err != nil {
			return "", nil, err
		}
		v, err := s.Get(ctx, key)
		return v, err, nil
	}
	if s.minReplicas > 0 || !s.nativeTTL || !s.functions.Load() || s.ahead(steps) {
		return twoCalls()
	}
	keys, args, err := s.saveStepsArgs(ctx, l, steps, "", false)
	if err != nil {
		return "", nil, s.wrap("save step", err)
	}
	cmds, err := s.pipelined(ctx, call{function: scriptSaveStep.function, keys: keys, args: args},
		call{cmd: []any{"GET", s.keys.siteKey(key)}})
	if err != nil {
		return "", nil, s.wrap("save step", err)
	}
	commit, get := cmds[0], cmds[1]
	if libraryMissing(commit.Err()) {
		return twoCalls() // the function did not run
	}
	if err := commit.Err(); err != nil {
		return "", nil, s.wrap("save step", err)
	}
	v, err := get.Text()
	if err != nil {
		return "", s.wrap("get", err), nil
	}
	return v, nil, nil
}

// appendStepArgs appends one step's arguments of the savestep script.
func (s *Store) appendStepArgs(ctx context.Context, args []any, l *store.Lease, sc store.StepCommit, now time.Time) ([]any, error) {
	st, err := sc.Step.Normalized()
	if err != nil {
		return nil, err
	}
	var waitEvent, waitDoc string
	if st.Status == store.StatusWaiting && st.Wait != nil {
		w := waitArg{Run: l.RunID, Step: st.ID, Event: st.Wait.Event, Path: st.Wait.MatchPath,
			Value: string(st.Wait.MatchValue), Expires: ms(st.WakeAt)}
		b, err := json.Marshal(w)
		if err != nil {
			return nil, err
		}
		waitEvent, waitDoc = w.Event, string(b)
	}
	rec, err := json.Marshal(newStepRecord(l.RunID, st))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	// The record's start up to the end of its id, as the encoder wrote it:
	// what save_record looks for in the run's log.
	id, _ := json.Marshal(st.ID)
	head := `{"id":` + string(id)
	pubs, err := s.emitArgs(ctx, sc.Emit, now, l.RunID)
	if err != nil {
		return nil, err
	}
	return append(args, st.ID, string(rec), string(st.Status), waitEvent, waitDoc, head, jsonArray(pubs)), nil
}

// Suspend ends the lease; the run is claimable at sus.AvailableAt.
func (s *Store) Suspend(ctx context.Context, l *store.Lease, sus store.Suspension) error {
	if err := sus.Validate(); err != nil {
		return s.wrap("suspend", err)
	}
	now := s.clock.Now()
	at := sus.AvailableAt
	if at.IsZero() {
		at = now
	}
	err := s.run(ctx, scriptSuspend, []string{s.keys.at(l.RunID)}, now.UnixMilli(), l.RunID, l.Token,
		string(sus.Status), at.UnixMilli(), sus.Attempt).Err()
	return s.wrap("suspend", err)
}

// finishArg is one Finish as the finish script reads it.
type finishArg struct {
	At     int64             `json:"at"` // ms
	Run    string            `json:"run"`
	Token  string            `json:"token"`
	Status string            `json:"status"`
	Output string            `json:"output"` // JSON or ""
	Error  string            `json:"error"`
	Pubs   []json.RawMessage `json:"pubs"` // pubArg each
}

// Finish ends the run under the lease and publishes o.Emit with it.
// Concurrent calls share one script call (see batch.go), in which each
// run's transition is checked and applied on its own.
func (s *Store) Finish(ctx context.Context, l *store.Lease, o store.Outcome) error {
	if err := o.Validate(); err != nil {
		return s.wrap("finish", err)
	}
	now := s.clock.Now()
	if len(o.Steps) > 0 {
		// The steps' effects need their own keys: this finish takes the
		// step script, not the shared finish group. Its emits for other
		// partitions are published (emitArgs) once its steps' effects
		// applied: ahead of their record, a finish that finds them
		// applied already is dropped, and so must be its failure event.
		finish := func() (string, error) {
			pubs, err := s.emitArgs(ctx, o.Emit, now, l.RunID)
			if err != nil {
				return "", err
			}
			f, err := json.Marshal(finishArg{Status: string(o.Status), Output: string(o.Output), Error: o.Error, Pubs: pubs})
			return string(f), err
		}
		if s.ahead(o.Steps) {
			_, err := s.commitAhead(ctx, l, o.Steps, finish, false)
			return s.wrap("finish", err)
		}
		f, err := finish()
		if err != nil {
			return s.wrap("finish", err)
		}
		return s.wrap("finish", s.saveSteps(ctx, l, o.Steps, f))
	}
	pubs, err := s.emitArgs(ctx, o.Emit, now, l.RunID)
	if err != nil {
		return s.wrap("finish", err)
	}
	arg, err := json.Marshal(finishArg{At: now.UnixMilli(), Run: l.RunID, Token: l.Token, Status: string(o.Status),
		Output: string(o.Output), Error: o.Error, Pubs: pubs})
	if err != nil {
		return s.wrap("finish", err)
	}
	res, err := s.finishes.do(ctx, []finishItem{{part: store.PartitionOf(l.RunID, s.Partitions()), arg: arg}})
	if err != nil {
		return s.wrap("finish", err)
	}
	if num(res[0]) != 1 {
		return s.wrap("finish", store.ErrLeaseLost)
	}
	return nil
}

// finishItem is a finishArg, encoded, and the partition of its run.
type finishItem struct {
	part int
	arg  json.RawMessage
}

// finishGroup runs the finish script over the finishes of a group of
// callers, once per partition their runs are in.
func (s *Store) finishGroup(ctx context.Context, items []finishItem) ([]any, error) {
	return byPartition(ctx, s.Partitions(), items, func(f *finishItem) int { return f.part },
		func(ctx context.Context, p int, items []finishItem) ([]any, error) {
			args := make([]json.RawMessage, len(items))
			for i := range items {
				args[i] = items[i].arg
			}
			return s.acked(ctx, scriptFinish, []string{s.keys.parts[p]}, s.nowMS(), jsonArray(args)).Slice()
		})
}

// Release hands a leased run back at once.
func (s *Store) Release(ctx context.Context, l *store.Lease) error {
	err := s.run(ctx, scriptRelease, []string{s.keys.at(l.RunID)}, s.nowMS(), l.RunID, l.Token).Err()
	return s.wrap("release", err)
}

// CancelRun cancels an unfinished run.
func (s *Store) CancelRun(ctx context.Context, id, reason string) (store.Run, error) {
	res, err := s.acked(ctx, scriptCancel, []string{s.keys.at(id)}, s.nowMS(), id, reason).Result()
	if err != nil {
		return store.Run{}, s.wrap("cancel run", err)
	}
	r, err := parseRun(id, flatMap(res))
	if err != nil {
		return store.Run{}, s.wrap("cancel run", err)
	}
	return r, nil
}

// NextWake is the earliest time an unfinished run becomes claimable: the
// head of every partition's queue, read in one round trip.
func (s *Store) NextWake(ctx context.Context) (time.Time, bool, error) {
	heads, err := fromEachPartition(ctx, s, func(p goredis.Pipeliner, k keys) *goredis.ZSliceCmd {
		return p.ZRangeWithScores(ctx, k.queue(), 0, 0)
	})
	if err != nil {
		return time.Time{}, false, s.wrap("next wake", err)
	}
	var at float64
	found := false
	for _, h := range heads {
		if zs := h.Val(); len(zs) > 0 && (!found || zs[0].Score < at) {
			at, found = zs[0].Score, true
		}
	}
	if !found {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(int64(at)).UTC(), true, nil
}

// QueueDepth counts the runs claimable now, in every partition.
func (s *Store) QueueDepth(ctx context.Context) (int, error) {
	now := strconv.FormatInt(s.nowMS(), 10)
	counts, err := fromEachPartition(ctx, s, func(p goredis.Pipeliner, k keys) *goredis.IntCmd {
		return p.ZCount(ctx, k.queue(), "-inf", now)
	})
	if err != nil {
		return 0, s.wrap("queue depth", err)
	}
	n := 0
	for _, c := range counts {
		n += int(c.Val())
	}
	return n, nil
}

// PruneFunction deletes old completed runs of one function and the events
// they leave without a run.
func (s *Store) PruneFunction(ctx context.Context, functionID string, cutoff time.Time, batch int) (int, error) {
	if batch <= 0 {
		batch = 1000
	}
	return s.eachPartition(batch, func(p, batch int) (int, error) {
		n, err := s.run(ctx, scriptPruneFn, []string{s.keys.parts[p]}, s.nowMS(), functionID, cutoff.UnixMilli(), batch).Int()
		return n, s.wrap("prune function", err)
	})
}

// Prune deletes old finished runs and events and expired flow-control
// state. Site keys expire natively in Redis.
func (s *Store) Prune(ctx context.Context, cutoff time.Time, batch int) (int, error) {
	if batch <= 0 {
		batch = 1000
	}
	// Prune walks the event names' registry, which an earlier layout lacks.
	if err := s.ensureLayout(ctx); err != nil {
		return 0, s.wrap("prune", err)
	}
	return s.eachPartition(batch, func(p, batch int) (int, error) {
		n, err := s.run(ctx, scriptPrune, []string{s.keys.parts[p]}, s.nowMS(), cutoff.UnixMilli(), batch).Int()
		return n, s.wrap("prune", err)
	})
}

// fromEachPartition sends cmd's command for every partition (k: its
// keys) in one pipeline and returns them, in the partitions' order.
func fromEachPartition[C goredis.Cmder](ctx context.Context, s *Store, cmd func(p goredis.Pipeliner, k keys) C) ([]C, error) {
	out := make([]C, s.Partitions())
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i := range out {
			out[i] = cmd(p, s.keys.in(i))
		}
		return nil
	})
	return out, err
}

// eachPartition runs prune in each partition with what is left of batch,
// until it is spent, and returns how many were deleted in all.
func (s *Store) eachPartition(batch int, prune func(p, batch int) (int, error)) (int, error) {
	total := 0
	for p := range s.Partitions() {
		n, err := prune(p, batch-total)
		if total += n; err != nil {
			return total, err
		}
		if total >= batch {
			break
		}
	}
	return total, nil
}

// Reply helpers.

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any) int64 {
	n, _ := v.(int64)
	return n
}

// refs reads create_run's replies: {id, function id, status, existing,
// skip reason}, and for a run created leased its token and its hash as a
// flat list.
func refs(v any) ([]store.RunRef, error) {
	list, _ := v.([]any)
	out := make([]store.RunRef, 0, len(list))
	for _, r := range list {
		t, _ := r.([]any)
		if len(t) != 5 && len(t) != 7 {
			continue
		}
		ref := store.RunRef{ID: str(t[0]), FunctionID: str(t[1]), Status: store.Status(str(t[2])),
			Existing: num(t[3]) == 1, Skip: store.SkipReason(str(t[4]))}
		if len(t) == 7 {
			fields, _ := t[6].([]any)
			if ref.Lease = leaseOf(ref.ID, str(t[5]), fields); ref.Lease == nil {
				return nil, fmt.Errorf("run %s: unreadable lease %v", ref.ID, t[6])
			}
		}
		out = append(out, ref)
	}
	return out, nil
}

// leaseOf is the lease of the run id, leased with token, whose hash
// fields (a flat list, as a script returns it) were written with it; nil
// when they do not read as a run.
func leaseOf(id, token string, fields []any) *store.Lease {
	run, err := parseRun(id, flatMap(fields))
	if err != nil {
		return nil
	}
	return &store.Lease{RunID: run.ID, Token: token, Owner: run.LeaseOwner, Until: run.AvailableAt, Run: run}
}

// flatMap reads a hash returned by a script as a flat list.
func flatMap(v any) map[string]string {
	list, _ := v.([]any)
	m := make(map[string]string, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		m[str(list[i])] = str(list[i+1])
	}
	return m
}

// parseRunSteps reads run_steps's reply: {{record, ...}, {step id,
// match, ...}}, or {log, {step id, match, ...}} for a run whose records
// are one log (keys.go: steplog).
func parseRunSteps(runID string, v any) ([]store.Step, error) {
	t, _ := v.([]any)
	if len(t) != 2 {
		return nil, fmt.Errorf("unexpected steps reply %v", v)
	}
	var docs []string
	switch d := t[0].(type) {
	case string:
		docs = logRecords(d)
	case []any:
		for _, doc := range d {
			docs = append(docs, str(doc))
		}
	}
	return parseSteps(runID, docs, flatMap(t[1]))
}

// logRecords splits a run's step log ("\n" before each record).
func logRecords(log string) []string {
	if log == "" {
		return nil
	}
	return strings.Split(log[1:], "\n")
}

// parseSteps reads step records in order, with the run's completed waits.
func parseSteps(runID string, docs []string, matched map[string]string) ([]store.Step, error) {
	steps := make([]store.Step, 0, len(docs))
	for _, doc := range docs {
		st, err := parseStep(runID, doc, matched)
		if err != nil {
			return nil, err
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// effectsArg is the KEYS and the effects argument of the savestep script
// (lua/savestep.lua): the engine prefix, then each site key with its
// deadline key, and the reads and writes naming keys by their index. The
// argument is written by hand: it is built for every step commit, and
// encoding/json's reflection over rows of any cost more than the rest of
// the commit's arguments together.
func (s *Store) effectsArg(prefix string, fx store.Effects) ([]string, string, error) {
	keys := []string{prefix}
	if fx.Empty() {
		return keys, `{"r":[],"w":[]}`, nil
	}
	index := map[string]int{}
	for i, k := range fx.Keys() {
		index[k] = i + 1
		keys = append(keys, s.kvKeys(k)...)
	}
	flag := func(b bool) string {
		if b {
			return `"1"`
		}
		return `"0"`
	}
	b := make([]byte, 0, 64+64*(len(fx.Reads)+len(fx.Writes)))
	b = append(b, '{')
	if s.nativeTTL {
		b = append(b, `"n":1,`...) // native TTLs (kvNow)
	}
	b = append(b, `"r":[`...)
	for i, r := range fx.Reads {
		arg := readArg(r)
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(index[r.Key]), 10)
		b = append(b, ',')
		b = appendJSONString(b, string(r.Kind))
		b = append(b, ',')
		b = append(b, flag(r.Exists)...)
		b = append(b, ',')
		b = appendJSONString(b, arg)
		b = append(b, ']')
	}
	b = append(b, `],"w":[`...)
	first := true
	for _, w := range fx.Writes {
		ttlMS, err := store.KeyTTL(w.TTL)
		if err != nil {
			return nil, "", err
		}
		arg, ok := writeArg(w)
		if !ok {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(index[w.Key]), 10)
		b = append(b, ',')
		b = appendJSONString(b, string(w.Op))
		b = append(b, ',')
		b = appendJSONString(b, arg)
		b = append(b, ',', '"')
		b = strconv.AppendInt(b, ttlMS, 10)
		b = append(b, '"', ',')
		b = append(b, flag(w.Blind)...)
		for _, m := range w.Members {
			b = append(b, ',')
			b = appendJSONString(b, m)
		}
		b = append(b, ']')
	}
	b = append(b, "]}"...)
	return keys, string(b), nil
}

// readArg is what the savestep script compares a read with: the string
// read, the member asked about, or the set's size.
func readArg(r store.Read) string {
	switch r.Kind {
	case store.ReadMember:
		return r.Member
	case store.ReadCard:
		return strconv.FormatInt(r.Card, 10)
	}
	return r.Value
}

// writeArg is a write's value for the savestep script (the value set, the
// increment), and false for a write that writes nothing (an add of no
// members).
func writeArg(w store.Write) (string, bool) {
	switch w.Op {
	case store.OpIncrBy:
		return strconv.FormatInt(w.Delta, 10), true
	case store.OpSetAdd:
		return w.Value, len(w.Members) > 0
	}
	return w.Value, true
}

// appendJSONString appends s as a JSON string, as encoding/json writes
// it: a string of printable ASCII that needs no escape as it is, any
// other through json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
