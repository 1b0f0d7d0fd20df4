package sqlite

import (
	"context"
	"sync"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// subscriberBuffer is how many changes a subscriber may fall behind before
// it starts losing them.
const subscriberBuffer = 1024

// subscriber is one Subscribe call. lagged is set when a change was dropped
// and cleared once the marker (a Change with Kind "") got through.
type subscriber struct {
	ch     chan store.Change
	lagged bool
}

// fanout delivers committed changes to every subscriber without ever
// blocking the writer.
type fanout struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
	done   chan struct{} // closed with the store
}

func newFanout() *fanout {
	return &fanout{subs: make(map[*subscriber]struct{}), done: make(chan struct{})}
}

// Subscribe delivers changes committed from now on until ctx ends or the
// store closes; the channel is closed then.
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
	if len(changes) == 0 {
		return
	}
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

// closeAll ends every subscription (the store is closing).
func (f *fanout) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	close(f.done)
	for sub := range f.subs {
		delete(f.subs, sub)
		close(sub.ch)
	}
}
