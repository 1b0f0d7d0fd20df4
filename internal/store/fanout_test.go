package store_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// recv reads one item; guard is a failure deadline, never a pause.
func recv(t *testing.T, ch <-chan int) int {
	t.Helper()
	const guard = 10 * time.Second
	select {
	case it, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return it
	case <-time.After(guard):
		t.Fatalf("nothing received within %v", guard)
		return 0
	}
}

// TestFanoutStuckSubscriber publishes far more than a subscriber's buffer to
// one subscriber that never reads and one that reads every item as it
// comes: Publish returns each time, the reader gets every item in order,
// and the stuck one gets its buffer's worth, then the lag marker, then only
// items published after it made room.
func TestFanoutStuckSubscriber(t *testing.T) {
	t.Parallel()
	const buffer = 8
	f := store.NewFanout[int](buffer)
	stuck := f.Subscribe(t.Context())
	fast := f.Subscribe(t.Context())
	for i := 1; i <= 10*buffer; i++ {
		f.Publish([]int{i})
		if got := recv(t, fast); got != i {
			t.Fatalf("the reading subscriber got %d, want %d", got, i)
		}
	}
	for i := 1; i <= buffer; i++ {
		if got := recv(t, stuck); got != i {
			t.Fatalf("the stuck subscriber's item %d is %d", i, got)
		}
	}
	f.Publish([]int{1000, 1001})
	for _, want := range []int{0, 1000, 1001} {
		if got := recv(t, stuck); got != want {
			t.Fatalf("after making room the stuck subscriber got %d, want %d (0 is the lag marker)", got, want)
		}
	}
	if got := recv(t, fast); got != 1000 {
		t.Fatalf("the reading subscriber got %d, want 1000", got)
	}
}

// TestFanoutLagAll owes every subscriber a marker, delivered before the next
// item even when the buffer was full when the notification was lost.
func TestFanoutLagAll(t *testing.T) {
	t.Parallel()
	f := store.NewFanout[int](2)
	ch := f.Subscribe(t.Context())
	f.Publish([]int{1, 1})
	f.LagAll()
	for range 2 {
		if got := recv(t, ch); got != 1 {
			t.Fatalf("got %d, want 1", got)
		}
	}
	f.Publish([]int{2})
	for _, want := range []int{0, 2} {
		if got := recv(t, ch); got != want {
			t.Fatalf("got %d, want %d", got, want)
		}
	}
}

// TestFanoutHoldsNothingForItsSubscribers: a subscription costs no
// goroutine while it lasts, and leaves nothing behind once its context
// ends: the channel is closed and the fan-out forgets it.
func TestFanoutHoldsNothingForItsSubscribers(t *testing.T) {
	const n = 1000
	f := store.NewFanout[int](4)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(t.Context())
	chans := make([]<-chan int, n)
	for i := range chans {
		chans[i] = f.Subscribe(ctx)
	}
	if got := runtime.NumGoroutine() - before; got > n/10 {
		t.Errorf("%d subscriptions started %d goroutines", n, got)
	}
	if got := f.Subscribers(); got != n {
		t.Errorf("Subscribers() = %d, want %d", got, n)
	}
	cancel()
	for _, ch := range chans {
		for range ch {
		}
	}
	if got := f.Subscribers(); got != 0 {
		t.Errorf("Subscribers() = %d after every context ended, want 0", got)
	}
}

// TestFanoutConcurrentLeaveAndClose publishes while subscribers come, go
// and the fan-out closes: no send on a closed channel, every channel
// closed at the end. Run it with -race.
func TestFanoutConcurrentLeaveAndClose(t *testing.T) {
	t.Parallel()
	f := store.NewFanout[int](2)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				f.Publish([]int{i, i + 1})
			}
		}
	})
	for range 200 {
		ctx, cancel := context.WithCancel(t.Context())
		ch := f.Subscribe(ctx)
		<-ch
		cancel()
		for range ch {
		}
	}
	kept := f.Subscribe(t.Context())
	f.Close()
	for range kept {
	}
	close(stop)
	wg.Wait()
	if _, open := <-f.Subscribe(t.Context()); open {
		t.Error("Subscribe after Close gave an open channel")
	}
}
