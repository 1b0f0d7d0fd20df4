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

// Publications without flow control as one transaction.
//
// The publish script decides a great deal per publication: a client id
// seen before, an event id stored before, idempotency, rate limits,
// singletons, debounce, the waits the event completes. The usual
// publication needs none of it: its event id was minted on receipt, its
// runs have no flow-control key, and nobody waits for its name. Such a
// group is stored without Lua, by plain commands in MULTI/EXEC, which cost
// the server about half of what the same writes cost from a script
// (docs/BENCHMARKS.md, "Publications as a transaction"): a script pays the
// Lua VM for every string it builds and every argument it passes on.
//
// What the script would have checked is checked in the same round trip,
// under WATCH: that no event of the group is stored yet and that no wait is
// pending for any of its names. A small script between WATCH and MULTI
// (txGate) looks for those keys and, finding one, writes a watched key of
// its own; that, or any of the keys changing before EXEC (an event sent
// again with its id, a run starting to wait for the name), makes EXEC
// refuse the whole transaction, and the group goes through the publish
// script. Both paths write the same keys with the same values and publish
// the same notification (TestPublishTxWritesWhatTheScriptWrites).
//
// The transaction takes a connection of its own (WATCH is per
// connection), so it is used on one server or a Sentinel's master, and not
// with MinReplicas or on a Cluster, where the script's path (acked)
// follows a moved slot and waits for the replicas.

// errTxDeclined says a group must go through the publish script.
var errTxDeclined = errors.New("publication group needs the publish script")

// plainPub reports whether the publish script would decide nothing for a
// (beyond a duplicate event and pending waits, which publishTx checks):
// no client id, and no run with idempotency, rate limit, singleton,
// debounce or concurrency key.
func plainPub(a *pubArg) bool {
	if a.ClientID != "" {
		return false
	}
	for i := range a.Runs {
		r := &a.Runs[i]
		if r.Idem != "" || r.RLKey != "" || r.Single != "" || r.Deb != "" || r.CKey != "" {
			return false
		}
	}
	return true
}

// keptInEvent reports whether the run r of a plain publication of event
// eventID is kept in its event until a script loads it (plain_spec and
// in_event in lua/common.lua): it shares the event's id, asks for no
// lease, and its function id fits on the event's line for it.
func keptInEvent(eventID string, r *specArg) bool {
	return r.ID == eventID && r.LeaseOwner == "" && !strings.ContainsAny(r.Function, "\t\n")
}

// txPublishable reports whether the store may publish items as a
// transaction (see above).
func (s *Store) txPublishable(items []pubItem) bool {
	if s.publishScriptOnly || s.cluster != nil || s.minReplicas > 0 {
		return false
	}
	if _, ok := s.rdb.(*goredis.Client); !ok {
		return false
	}
	for i := range items {
		if !plainPub(&items[i].arg) {
			return false
		}
	}
	return true
}

// txGate is the check that runs between WATCH and MULTI: when any of its
// keys after the first exists (an event stored before, a pending wait), it
// writes the first, a watched key of its own, so that EXEC refuses the
// transaction. It is sent whole (EVAL), never by its hash alone: a server
// that lost its script cache must not skip it with NOSCRIPT and let EXEC
// run.
const txGate = `if redis.call('EXISTS', unpack(KEYS, 2)) > 0 then
  redis.call('SET', KEYS[1], '1')
  redis.call('DEL', KEYS[1])
  return 1
end
return 0`

// publishTx stores items (each plainPub) in one MULTI/EXEC and answers
// what the publish script's reply reads as (publishedOf), or
// errTxDeclined when the script must decide
// (nothing was written then). WATCH, the gate, MULTI, the writes and EXEC
// go in one round trip, on a connection of its own (WATCH is per
// connection; EXEC ends it, whether it runs or refuses).
func (s *Store) publishTx(ctx context.Context, k keys, items []pubItem) ([]store.Published, error) {
	conn := s.rdb.(*goredis.Client).Conn()
	defer conn.Close()
	watched := make([]string, 1, len(items)+2)
	watched[0] = k.txGate()
	names := make(map[string]bool, 1)
	for i := range items {
		a := &items[i].arg
		watched = append(watched, k.event(a.ID))
		if !names[a.Name] {
			names[a.Name] = true
			// This partition's: the others' are matched after
			// (matchElsewhere).
			watched = append(watched, k.waits(a.Name))
		}
	}
	w := newTxWrites(k, len(items))
	for i := range items {
		w.publication(&items[i])
	}
	w.finish()
	var gate, exec *goredis.Cmd
	watch := func(p goredis.Pipeliner) error {
		p.Do(ctx, append([]any{"WATCH"}, toAny(watched)...)...)
		gate = p.Eval(ctx, txGate, watched)
		return nil
	}
	write := func(p goredis.Pipeliner) error {
		p.Do(ctx, "MULTI")
		for _, c := range w.commands {
			p.Do(ctx, c...)
		}
		exec = p.Do(ctx, "EXEC")
		return nil
	}
	// The commands' own errors are read below.
	if s.publishTxHook == nil {
		_, _ = conn.Pipelined(ctx, func(p goredis.Pipeliner) error {
			watch(p)
			return write(p)
		})
	} else {
		// A test's hook runs between the check and the writes, which a
		// real race finds when the round trip reaches Redis in two reads.
		_, _ = conn.Pipelined(ctx, watch)
		s.publishTxHook()
		_, _ = conn.Pipelined(ctx, write)
	}
	err := exec.Err()
	switch {
	case errors.Is(err, goredis.Nil):
		// EXEC refused: the gate found a key, or one changed meanwhile.
		return nil, errTxDeclined
	case err != nil:
		return nil, err
	case gate.Err() != nil:
		// Cannot happen (what fails the gate fails the writes too), but a
		// transaction run without its check is not acknowledged quietly.
		return nil, fmt.Errorf("publish: transaction ran without its check: %w", gate.Err())
	}
	return w.replies, nil
}

// txWrites gathers the writes of a group of plain publications as
// publish_one and create_run (lua/common.lua) make them, and the replies
// they give. Index members are written with one ZADD per index, as the
// script's zflush does.
type txWrites struct {
	k        keys
	events   []any            // "MSET", then each event's key and value
	commands [][]any          // the MSET, then the HSET of each run not kept in its event
	queue    []any            // the queue's ZADD: "ZADD", its key, score, member, ...
	index    map[string][]any // events:name:*, runs:fn:*: each one's ZADD, as queue
	order    []string         // index keys in first-use order
	names    []string         // registry members, each once
	fns      []string
	changes  strings.Builder
	at       int64             // the last publication's time: the notification's
	replies  []store.Published // what the script's reply reads as (publishedOf)
	n        int               // publications in the group
}

func newTxWrites(k keys, n int) *txWrites {
	w := &txWrites{k: k, events: make([]any, 1, 1+2*n), commands: make([][]any, 1, n+8), queue: make([]any, 2, 2+2*n),
		index: make(map[string][]any, 2), replies: make([]store.Published, 0, n), n: n}
	w.events[0] = "MSET"
	w.queue[0], w.queue[1] = "ZADD", k.queue()
	w.changes.Grow(128 * 2 * n) // an event's line and its run's
	return w
}

// indexed adds m to the index key, whose ZADD arguments start with its
// command and key.
func (w *txWrites) indexed(key, m string) {
	args, ok := w.index[key]
	if !ok {
		w.order = append(w.order, key)
		args = make([]any, 2, 2+2*w.n)
		args[0], args[1] = "ZADD", key
	}
	w.index[key] = append(args, 0, m)
}

// change adds a line to the notification, as change in lua/common.lua.
func (w *txWrites) change(kind, ev, evName, run, fn, status, avail string) {
	b := &w.changes
	b.WriteByte('\n')
	b.WriteString(kind)
	for _, f := range [...]string{ev, evName, run, fn} {
		b.WriteByte('\t')
		writeField(b, f)
	}
	b.WriteByte('\t')
	b.WriteString(status)
	b.WriteString("\t\t") // no step
	b.WriteString(avail)
}

// publication adds one publication: its event, then each of its runs.
func (w *txWrites) publication(it *pubItem) {
	a := &it.arg
	w.at = a.At
	now := strconv.FormatInt(a.At, 10)
	doc := make([]byte, 0, len(it.doc)+27*len(a.Runs)+16)
	doc = append(doc, it.doc...)
	for i := range a.Runs {
		r := &a.Runs[i]
		doc = append(doc, '\n')
		if keptInEvent(a.ID, r) {
			doc = appendKeptLine(doc, r.ID, a.At, r.Function, r.FTimeout)
		} else {
			doc = append(doc, r.ID...)
		}
	}
	w.events = append(w.events, w.k.event(a.ID), doc)
	w.indexed(w.k.eventsByName(a.Name), member(a.At, a.ID))
	w.names = appendOnce(w.names, a.Name)
	w.change("event", a.ID, a.Name, "", "", "", "")
	refs := make([]store.RunRef, len(a.Runs))
	for i := range a.Runs {
		refs[i] = w.run(a.ID, &a.Runs[i], a.At, now)
	}
	w.replies = append(w.replies, store.Published{EventID: a.ID, Runs: refs})
}

// run adds one run, as create_run stores a run no flow control decides
// on: queued, or leased when its spec asks (specArg's lo, lt, lu). It
// returns what create_run's reply reads as (refs).
func (w *txWrites) run(eventID string, r *specArg, at int64, now string) store.RunRef {
	avail := max(at, r.Avail)
	status := store.StatusQueued
	leased := r.LeaseOwner != ""
	if leased {
		status, avail = store.StatusRunning, r.LeaseUntil
	}
	availText := strconv.FormatInt(avail, 10)
	var fields []any // the run's hash, when it has one
	if !keptInEvent(eventID, r) {
		hset := make([]any, 2, 20)
		hset[0], hset[1] = "HSET", w.k.run(r.ID)
		fields = append(hset, "fn", r.Function, "ev", eventID, "status", string(status), "created", now)
		if leased {
			fields = append(fields, "owner", r.LeaseOwner, "token", r.LeaseToken, "s", "0")
			if r.FTimeout > 0 {
				fields = append(fields, "finish_by", strconv.FormatInt(at+r.FTimeout, 10))
			}
		}
		if r.CLimit > 0 {
			fields = append(fields, "climit", strconv.Itoa(r.CLimit))
		}
		if r.FTimeout > 0 {
			fields = append(fields, "ftimeout", strconv.FormatInt(r.FTimeout, 10))
		}
		fields = append(fields, "avail", availText)
		w.commands = append(w.commands, fields)
		fields = fields[2:]
	}
	w.queue = append(w.queue, availText, r.ID)
	w.indexed(w.k.runsByFunction(r.Function), member(at, r.ID))
	w.fns = appendOnce(w.fns, r.Function)
	ref := store.RunRef{ID: r.ID, FunctionID: r.Function, Status: status}
	if leased {
		w.change("run", eventID, "", r.ID, r.Function, string(status), "")
		ref.Lease = leaseOf(r.ID, r.LeaseToken, fields)
		return ref
	}
	w.change("run", eventID, "", r.ID, r.Function, string(status), availText)
	return ref
}

// finish adds the writes gathered last, as the script's flush makes
// them: the events' MSET first, then one ZADD per index, the registries,
// the notification.
func (w *txWrites) finish() {
	w.commands[0] = w.events
	if len(w.queue) > 2 {
		w.commands = append(w.commands, w.queue)
	}
	for _, key := range w.order {
		w.commands = append(w.commands, w.index[key])
	}
	if len(w.names) > 0 {
		w.commands = append(w.commands, append([]any{"SADD", w.k.registry("names")}, toAny(w.names)...))
	}
	if len(w.fns) > 0 {
		w.commands = append(w.commands, append([]any{"SADD", w.k.registry("fns")}, toAny(w.fns)...))
	}
	w.commands = append(w.commands, []any{"PUBLISH", w.k.changes(), strconv.FormatInt(w.at, 10) + w.changes.String()})
}

func appendOnce(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

func toAny(list []string) []any {
	out := make([]any, len(list))
	for i, v := range list {
		out[i] = v
	}
	return out
}

// writeField writes v as field in lua/common.lua does: a tab, a newline
// and a backslash escaped (\t, \n, \\), for unescapeField to undo.
func writeField(b *strings.Builder, v string) {
	if !strings.ContainsAny(v, "\t\n\\") {
		b.WriteString(v)
		return
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteByte(c)
		}
	}
}
