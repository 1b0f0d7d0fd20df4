package redis

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
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
