package redis

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// Group commit. Concurrent Publish calls, and concurrent Finish calls, are
// coalesced into one script call each: a caller hands its items to a
// batcher, which waits for the first caller, takes every other caller
// already waiting (up to maxItems items), runs one script over all of them
// and answers each caller with its own results. A caller hears back only
// once the script has been applied, and with appendfsync always Redis
// fsyncs before it replies, so every acknowledgement still means durable.
// Each item keeps its own atomicity (the script applies them in order,
// every one entirely or not at all), and at most inFlight scripts of one
// batcher run at once, so callers that arrive meanwhile form the next one.
const (
	batchMaxItems = 1000
	batchInFlight = 2
)

// batchCall is one caller's items and, once done is closed, their results.
type batchCall[T, R any] struct {
	items []T
	res   []R
	err   error
	done  chan struct{}
}

// batcher coalesces the items of concurrent callers into calls of apply.
type batcher[T, R any] struct {
	// apply runs one script over items and returns one result per item;
	// an error fails every caller of the group.
	apply func(ctx context.Context, items []T) ([]R, error)
	in    chan *batchCall[T, R] // unbuffered: a send succeeds only when the loop takes it
	slots chan struct{}
	// work hands a gathered group to one of the batchInFlight flushers:
	// goroutines that live as long as the batcher, so the deep stack a
	// script call needs grows once, not in a new goroutine per group.
	work chan batchGroup[T, R]
	quit chan struct{}
	wg   sync.WaitGroup
}

// batchGroup is the callers of one script call and their item count.
type batchGroup[T, R any] struct {
	calls []*batchCall[T, R]
	n     int
}

func newBatcher[T, R any](apply func(ctx context.Context, items []T) ([]R, error)) *batcher[T, R] {
	b := &batcher[T, R]{
		apply: apply,
		in:    make(chan *batchCall[T, R]),
		slots: make(chan struct{}, batchInFlight),
		work:  make(chan batchGroup[T, R]),
		quit:  make(chan struct{}),
	}
	var flushers sync.WaitGroup
	for range batchInFlight {
		flushers.Go(func() {
			for g := range b.work {
				b.flush(g.calls, g.n)
				<-b.slots
			}
		})
	}
	b.wg.Go(func() {
		b.loop()
		close(b.work)
		flushers.Wait()
	})
	return b
}

// do submits items and waits for their results. When ctx ends after
// submission the caller stops waiting, but its items may still be applied.
// A ctx already ended submits nothing: the select below may pick any of
// its ready cases.
func (b *batcher[T, R]) do(ctx context.Context, items []T) ([]R, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &batchCall[T, R]{items: items, done: make(chan struct{})}
	select {
	case b.in <- c:
	case <-b.quit:
		return nil, fmt.Errorf("%w: store closed", store.ErrUnavailable)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// stop ends the loop once the groups in flight are answered, or after
// batchStopWait when Redis does not answer them (the store then closes the
// client, which fails them); later calls fail with ErrUnavailable.
func (b *batcher[T, R]) stop() {
	close(b.quit)
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	waitAtMost(done, batchStopWait)
}

// waitAtMost waits until done is closed, or d has passed.
func waitAtMost(done <-chan struct{}, d time.Duration) {
	select {
	case <-done:
	case <-time.After(d):
	}
}

// batchStopWait bounds how long a closing store waits for the groups in
// flight.
const batchStopWait = 2 * time.Second

func (b *batcher[T, R]) loop() {
	for {
		var first *batchCall[T, R]
		select {
		case first = <-b.in:
		case <-b.quit:
			return
		}
		// Wait for a free slot before gathering: callers arriving while
		// the slots are busy join this group.
		b.slots <- struct{}{}
		group := []*batchCall[T, R]{first}
		n := len(first.items)
	gather:
		for n < batchMaxItems {
			select {
			case c := <-b.in:
				group = append(group, c)
				n += len(c.items)
			default:
				break gather
			}
		}
		b.work <- batchGroup[T, R]{calls: group, n: n}
	}
}

// flush applies one group and answers its callers.
func (b *batcher[T, R]) flush(group []*batchCall[T, R], n int) {
	items := group[0].items
	if len(group) > 1 {
		items = make([]T, 0, n)
		for _, c := range group {
			items = append(items, c.items...)
		}
	}
	res, err := b.apply(context.Background(), items)
	if err == nil && len(res) != len(items) {
		err = fmt.Errorf("%d results for %d items", len(res), len(items))
	}
	at := 0
	for _, c := range group {
		if err != nil {
			c.err = err
		} else {
			c.res = res[at : at+len(c.items) : at+len(c.items)]
			at += len(c.items)
		}
		close(c.done)
	}
}
