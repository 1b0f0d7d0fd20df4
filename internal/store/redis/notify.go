package redis

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// subscriberBuffer is how many changes a subscriber may fall behind before
// it starts losing them.
const subscriberBuffer = 1024

// pingEvery is how often an idle listener checks its connection.
const pingEvery = 30 * time.Second

// subscriber is one Subscribe call. lagged is set when a change was dropped
// and cleared once the marker (a Change with Kind "") got through.
type subscriber struct {
	ch     chan store.Change
	lagged bool
}

// fanout delivers changes to every in-process subscriber without ever
// blocking the listener.
type fanout struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
	done   chan struct{} // closed with the store
}

func newFanout() *fanout {
	return &fanout{subs: make(map[*subscriber]struct{}), done: make(chan struct{})}
}

// Subscribe delivers changes committed from now on, by this process or any
// other on the same Redis, until ctx ends or the store closes; the channel
// is closed then.
func (s *Store) Subscribe(ctx context.Context) <-chan store.Change {
	f := s.subs
	sub := &subscriber{ch: make(chan store.Change, subscriberBuffer)}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		close(sub.ch)
		return sub.ch
	}
	f.subs[sub] = struct{}{}
	f.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-f.done:
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[sub]; ok {
			delete(f.subs, sub)
			close(sub.ch)
		}
	}()
	return sub.ch
}

// publish hands changes to every subscriber that has room.
func (f *fanout) publish(changes []store.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for sub := range f.subs {
		for _, c := range changes {
			if sub.lagged {
				select {
				case sub.ch <- store.Change{}:
					sub.lagged = false
				default:
					continue
				}
			}
			select {
			case sub.ch <- c:
			default:
				sub.lagged = true
			}
		}
	}
}

// lagAll tells every subscriber it may have missed changes (the pub/sub
// connection dropped).
func (f *fanout) lagAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for sub := range f.subs {
		select {
		case sub.ch <- store.Change{}:
			sub.lagged = false
		default:
			sub.lagged = true
		}
	}
}

// closeAll ends every subscription (the store is closing).
func (f *fanout) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	close(f.done)
	for sub := range f.subs {
		delete(f.subs, sub)
		close(sub.ch)
	}
}

// listener reads the changes channel on one pub/sub connection.
type listener struct {
	ps     *goredis.PubSub
	cancel context.CancelFunc
	done   chan struct{}
}

// listen subscribes to the changes channel (waiting, when Redis answers,
// for the subscription to be confirmed so no later change is missed) and
// reads it until stop.
func (s *Store) listen(ctx context.Context) *listener {
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &listener{ps: s.rdb.Subscribe(lctx, s.keys.changes()), cancel: cancel, done: make(chan struct{})}
	confirmed := false
	if msg, err := l.ps.ReceiveTimeout(lctx, dialTimeout+ioTimeout); err == nil {
		_, confirmed = msg.(*goredis.Subscription)
	}
	go s.receive(lctx, l, confirmed)
	return l
}

func (l *listener) stop() {
	l.cancel()
	l.ps.Close()
	<-l.done
}

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
			s.subs.lagAll()
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
			if subscribed || lost {
				s.subs.lagAll()
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
			s.subs.publish(changes)
		}
	}
}

// decodeChanges reads a notification the scripts publish (see flush in
// lua/common.lua).
func decodeChanges(payload string) ([]store.Change, error) {
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
	for _, c := range msg.Changes {
		ch := store.Change{
			Kind:       store.ChangeKind(c[0]),
			EventID:    c[1],
			EventName:  c[2],
			RunID:      c[3],
			FunctionID: c[4],
			Status:     store.Status(c[5]),
			StepID:     c[6],
			At:         fromMS(at),
		}
		if c[7] != "" {
			avail, err := parseMS(c[7])
			if err != nil {
				return nil, err
			}
			ch.AvailableAt = time.UnixMilli(avail).UTC()
		}
		out = append(out, ch)
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
