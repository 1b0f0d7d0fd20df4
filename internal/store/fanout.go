package store

import (
	"context"
	"sync"
)

// subscriberBuffer is how many changes a subscriber may fall behind before
// it starts losing them: room for one commit of a 2 000-event request (an
// event and a run change each) without a lag.
const subscriberBuffer = 4096

// Fanout delivers changes to every in-process subscriber without ever
// blocking the publisher: a subscriber too slow to keep up loses changes and
// then receives one Change with Kind "" (the lag marker) before any later
// change. Backends use it to implement Subscribe.
type Fanout struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
	done   chan struct{} // closed by Close
}

// subscriber is one Subscribe call. lagged is set when a change was dropped
// and cleared once the marker got through.
type subscriber struct {
	ch     chan Change
	lagged bool
}

// NewFanout returns a fan-out with no subscribers.
func NewFanout() *Fanout {
	return &Fanout{subs: make(map[*subscriber]struct{}), done: make(chan struct{})}
}

// Subscribe delivers changes published from now on until ctx ends or the
// fan-out closes; the channel is closed then.
func (f *Fanout) Subscribe(ctx context.Context) <-chan Change {
	sub := &subscriber{ch: make(chan Change, subscriberBuffer)}
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

// Publish hands changes to every subscriber that has room.
func (f *Fanout) Publish(changes []Change) {
	if len(changes) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for sub := range f.subs {
		for _, c := range changes {
			if sub.lagged {
				select {
				case sub.ch <- Change{}:
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

// LagAll tells every subscriber it may have missed changes (a backend lost
// its own notification channel for a while).
func (f *Fanout) LagAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for sub := range f.subs {
		select {
		case sub.ch <- Change{}:
			sub.lagged = false
		default:
			sub.lagged = true
		}
	}
}

// Close ends every subscription; later Subscribe calls get a closed channel.
func (f *Fanout) Close() {
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
