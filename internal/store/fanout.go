package store

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// Fanout delivers items to every in-process subscriber without ever
// blocking its publisher or making it wait for a lock: a subscriber too
// slow to keep up loses items and then receives one zero item (the lag
// marker) before any later item. Backends fan out their Changes with it,
// whose zero value is the Change with Kind "", and the HTTP stream fans out
// its encoded frames.
//
// The subscriber list is copy-on-write: Publish reads it with one atomic
// load, and only Subscribe, a subscriber leaving and Close take the mutex
// that orders their updates. A publisher sends to each subscriber without
// blocking, so a stuck subscriber costs it one failed send per Publish.
type Fanout[T any] struct {
	buffer int
	subs   atomic.Pointer[[]*subscriber[T]] // replaced whole, never changed in place

	mu     sync.Mutex // orders updates of subs and closed
	closed bool
}

// subscriber is one Subscribe call.
type subscriber[T any] struct {
	ch chan T
	// mu is held by a publisher while it sends and by the fan-out while it
	// closes ch. Publishers only TryLock it: one that finds it held (the
	// subscriber is closing, or another publisher is sending) skips the
	// subscriber and marks it lagged.
	mu     sync.Mutex
	closed bool
	// lagged is set when an item was lost and cleared once the marker got
	// through.
	lagged atomic.Bool
	// stop unregisters the removal from the subscription's context.
	stop func() bool
}

// changeBuffer is how many changes a store subscriber may fall behind
// before it starts losing them: room for one commit of a 2 000-event request
// (an event and a run change each) without a lag. The store's subscribers
// are the daemon's own parts, a handful: the HTTP stream's clients share one
// of them.
const changeBuffer = 4096

// NewChangeFanout returns the fan-out a backend implements Subscribe with.
func NewChangeFanout() *Fanout[Change] { return NewFanout[Change](changeBuffer) }

// NewFanout returns a fan-out with no subscribers whose subscribers may
// fall buffer items behind before they start losing them.
func NewFanout[T any](buffer int) *Fanout[T] {
	f := &Fanout[T]{buffer: buffer}
	f.subs.Store(&[]*subscriber[T]{})
	return f
}

// Subscribe delivers items published from now on until ctx ends or the
// fan-out closes; the channel is closed then. It holds no goroutine while
// ctx lasts.
func (f *Fanout[T]) Subscribe(ctx context.Context) <-chan T { return f.Join(ctx).C }

// Subscription is one subscriber's side of a Fanout.
type Subscription[T any] struct {
	// C delivers the items, and the lag marker; it is closed when the
	// subscription ends.
	C   <-chan T
	sub *subscriber[T]
}

// Join is Subscribe for a subscriber that wants to know of a loss as soon
// as it has caught up (CatchUp), not only when the next item comes.
func (f *Fanout[T]) Join(ctx context.Context) Subscription[T] {
	sub := &subscriber[T]{ch: make(chan T, f.buffer)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		close(sub.ch)
		return Subscription[T]{C: sub.ch, sub: sub}
	}
	f.subs.Store(new(append(slices.Clone(*f.subs.Load()), sub)))
	sub.stop = context.AfterFunc(ctx, func() { f.remove(sub) })
	return Subscription[T]{C: sub.ch, sub: sub}
}

// CatchUp reports whether the subscriber lost items and has since taken
// everything queued: it should resync now. The lag marker it owed is then
// settled, so it does not come as well. Items published later come after.
func (s Subscription[T]) CatchUp() bool {
	sub := s.sub
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.closed || len(sub.ch) > 0 || !sub.lagged.Load() {
		return false
	}
	sub.lagged.Store(false)
	return true
}

// Subscribers returns how many subscriptions are open.
func (f *Fanout[T]) Subscribers() int { return len(*f.subs.Load()) }

// remove ends one subscription.
func (f *Fanout[T]) remove(sub *subscriber[T]) {
	f.mu.Lock()
	subs := *f.subs.Load()
	if i := slices.Index(subs, sub); i >= 0 {
		f.subs.Store(new(slices.Delete(slices.Clone(subs), i, i+1)))
	}
	f.mu.Unlock()
	sub.close()
}

// Publish hands items, in order, to every subscriber that has room.
func (f *Fanout[T]) Publish(items []T) {
	if len(items) == 0 {
		return
	}
	for _, sub := range *f.subs.Load() {
		sub.deliver(items)
	}
}

// LagAll tells every subscriber it may have missed items (a backend lost
// its own notification channel for a while).
func (f *Fanout[T]) LagAll() {
	for _, sub := range *f.subs.Load() {
		sub.lagged.Store(true)
		sub.deliver(nil)
	}
}

// Close ends every subscription; later Subscribe calls get a closed channel.
func (f *Fanout[T]) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	subs := *f.subs.Swap(&[]*subscriber[T]{})
	f.mu.Unlock()
	for _, sub := range subs {
		sub.stop()
		sub.close()
	}
}

// deliver sends the lag marker if one is owed, then items, without
// blocking: once the channel is full the rest is lost and the marker owed.
func (s *subscriber[T]) deliver(items []T) {
	if s.lagged.Load() && len(s.ch) == cap(s.ch) {
		// Stuck: its queue is full and it already owes the marker. With
		// many such subscribers this is the whole cost of one per Publish.
		return
	}
	if !s.mu.TryLock() {
		s.lagged.Store(true)
		return
	}
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.lagged.Load() {
		var marker T
		select {
		case s.ch <- marker:
			s.lagged.Store(false)
		default:
			return
		}
	}
	for _, it := range items {
		select {
		case s.ch <- it:
		default:
			s.lagged.Store(true)
			return
		}
	}
}

// close closes the channel once; it waits for a publisher sending to it.
func (s *subscriber[T]) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
}
