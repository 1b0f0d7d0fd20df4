package redis

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// pingEvery is how often an idle listener checks its connection.
const pingEvery = 30 * time.Second

// Subscribe delivers changes committed from now on, by this process or any
// other on the same Redis, until ctx ends or the store closes; the channel
// is closed then.
func (s *Store) Subscribe(ctx context.Context) <-chan store.Change {
	return s.subs.Subscribe(ctx)
}

// listener reads the changes channel on one pub/sub connection.
type listener struct {
	ps     *goredis.PubSub
	cancel context.CancelFunc
	done   chan struct{}
}

// listen subscribes to the changes channel (waiting, when Redis answered
// Open's first calls (reachable), for the subscription to be confirmed so
// no later change is missed) and reads it until stop.
func (s *Store) listen(ctx context.Context, reachable bool) *listener {
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if !reachable {
		// Nothing to wait for: the receive loop subscribes, which waits
		// for Redis, and subscribers start with a lag marker.
		l := &listener{ps: s.rdb.Subscribe(lctx), cancel: cancel, done: make(chan struct{})}
		go func() {
			_ = l.ps.Subscribe(lctx, s.channels()...) // a failure is the receive loop's first error
			s.receive(lctx, l, false)
		}()
		return l
	}
	l := &listener{ps: s.rdb.Subscribe(lctx, s.channels()...), cancel: cancel, done: make(chan struct{})}
	confirmed := false
	if msg, err := l.ps.ReceiveTimeout(lctx, dialTimeout+ioTimeout); err == nil {
		_, confirmed = msg.(*goredis.Subscription)
	}
	go s.receive(lctx, l, confirmed)
	return l
}

// channels are the changes channels of every partition (a script
// publishes on its own partition's).
func (s *Store) channels() []string {
	out := make([]string, s.Partitions())
	for p := range out {
		out[p] = s.keys.in(p).changes()
	}
	return out
}

func (l *listener) stop() {
	l.cancel()
	l.ps.Close()
	// A subscription still being made to a Redis that does not answer
	// ends only with its own timeout: the store's close does not wait
	// for it.
	waitAtMost(l.done, listenerStopWait)
}

// listenerStopWait bounds how long a closing store waits for its listener.
const listenerStopWait = time.Second

// receive fans out every message. After a connection error go-redis
// reconnects and subscribes again on the next receive; changes published
// meanwhile are lost, so subscribers get a lag marker.
func (s *Store) receive(ctx context.Context, l *listener, subscribed bool) {
	defer close(l.done)
	backoff := 50 * time.Millisecond
	lost := false
	for ctx.Err() == nil {
		msg, err := l.ps.ReceiveTimeout(ctx, pingEvery)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				_ = l.ps.Ping(ctx) // an idle connection: check it, answer comes as a Pong
				continue
			}
			if ctx.Err() != nil {
				return
			}
			if !lost {
				s.log.Warn("change notifications interrupted", "err", err)
				lost = true
			}
			s.subs.LagAll()
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Count > 1 {
				// The confirmation of a partition's channel after the
				// first's, in one SUBSCRIBE.
				continue
			}
			if subscribed || lost {
				s.subs.LagAll()
			}
			if lost {
				s.log.Info("change notifications resumed")
			}
			subscribed, lost = true, false
		case *goredis.Message:
			changes, err := decodeChanges(m.Payload)
			if err != nil {
				s.log.Error("undecodable change notification", "err", err)
				continue
			}
			s.subs.Publish(changes)
		}
	}
}

// decodeChanges reads a notification the scripts publish (see change and
// flush in lua/common.lua): the time in ms, then one line per change with
// its eight fields separated by tabs. A message from a daemon of an
// earlier version is JSON, [now, [[eight fields], ...]], and is read too.
func decodeChanges(payload string) ([]store.Change, error) {
	if strings.HasPrefix(payload, "[") {
		return decodeJSONChanges(payload)
	}
	head, rest, _ := strings.Cut(payload, "\n")
	at, err := parseMS(head)
	if err != nil || head == "" {
		return nil, errors.New("malformed change message")
	}
	out := make([]store.Change, 0, strings.Count(rest, "\n")+1)
	for line := range strings.SplitSeq(rest, "\n") {
		if line == "" {
			continue
		}
		var f [8]string
		for i := range f {
			var ok bool
			f[i], line, ok = strings.Cut(line, "\t")
			if !ok && i < len(f)-1 {
				return nil, errors.New("malformed change message: a change has fewer than 8 fields")
			}
		}
		for _, i := range []int{1, 2, 3, 4, 6} {
			if strings.IndexByte(f[i], '\\') >= 0 {
				f[i] = unescapeField(f[i])
			}
		}
		c, err := changeOf(f, at)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// unescapeField undoes field in lua/common.lua: \t, \n and \\ stand for a
// tab, a newline and a backslash.
func unescapeField(v string) string {
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\\' && i+1 < len(v) {
			i++
			switch v[i] {
			case 't':
				c = '\t'
			case 'n':
				c = '\n'
			default:
				c = v[i]
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

// changeOf is the change with fields f (kind, event id, event name, run
// id, function id, status, step id, available at in ms) committed at at.
func changeOf(f [8]string, at int64) (store.Change, error) {
	ch := store.Change{
		Kind:       store.ChangeKind(f[0]),
		EventID:    f[1],
		EventName:  f[2],
		RunID:      f[3],
		FunctionID: f[4],
		Status:     store.Status(f[5]),
		StepID:     f[6],
		At:         fromMS(at),
	}
	if f[7] != "" {
		avail, err := parseMS(f[7])
		if err != nil {
			return ch, err
		}
		ch.AvailableAt = time.UnixMilli(avail).UTC()
	}
	return ch, nil
}

// decodeJSONChanges reads a notification in the JSON form of earlier
// versions.
func decodeJSONChanges(payload string) ([]store.Change, error) {
	var msg struct {
		At      string
		Changes [][8]string
	}
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(payload), &raw); err != nil || len(raw) != 2 {
		return nil, errors.New("malformed change message")
	}
	if err := json.Unmarshal(raw[0], &msg.At); err != nil {
		return nil, err
	}
	// cjson encodes an empty table as {}: there is never one here, but
	// tolerate it.
	if string(raw[1]) != "{}" {
		if err := json.Unmarshal(raw[1], &msg.Changes); err != nil {
			return nil, err
		}
	}
	at, err := parseMS(msg.At)
	if err != nil {
		return nil, err
	}
	out := make([]store.Change, 0, len(msg.Changes))
	for _, f := range msg.Changes {
		c, err := changeOf(f, at)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// parseMS reads a number the scripts wrote with %.17g.
func parseMS(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	return int64(f), err
}
