package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// TestBatcherGroups holds the first groups in flight while more callers
// arrive, then checks that every caller got its own results, in order, and
// that the callers who waited were applied together.
func TestBatcherGroups(t *testing.T) {
	release := make(chan struct{})
	started := make(chan int, 100)
	var mu sync.Mutex
	var sizes []int
	b := newBatcher(func(_ context.Context, items []int) ([]string, error) {
		started <- len(items)
		<-release
		mu.Lock()
		sizes = append(sizes, len(items))
		mu.Unlock()
		out := make([]string, len(items))
		for i, it := range items {
			out[i] = fmt.Sprint(it * 10)
		}
		return out, nil
	})
	defer b.stop()

	const callers = 10
	results := make([][]string, callers)
	var wg sync.WaitGroup
	call := func(i int) {
		wg.Go(func() {
			res, err := b.do(t.Context(), []int{i, i + 100})
			if err != nil {
				t.Errorf("do(%d): %v", i, err)
			}
			results[i] = res
		})
	}
	// Two callers fill both slots; the others queue behind them.
	call(0)
	<-started
	call(1)
	<-started
	for i := 2; i < callers; i++ {
		call(i)
	}
	close(release)
	wg.Wait()
	for i, res := range results {
		want := []string{fmt.Sprint(i * 10), fmt.Sprint((i + 100) * 10)}
		if fmt.Sprint(res) != fmt.Sprint(want) {
			t.Errorf("caller %d got %v, want %v", i, res, want)
		}
	}
	total := 0
	for _, n := range sizes {
		total += n
	}
	if total != 2*callers {
		t.Errorf("applied %d items in groups %v, want %d", total, sizes, 2*callers)
	}
}

// TestBatcherFailure: a failed group fails each of its callers, and a
// stopped batcher refuses new calls as unavailable.
func TestBatcherFailure(t *testing.T) {
	boom := errors.New("boom")
	b := newBatcher(func(context.Context, []int) ([]int, error) { return nil, boom })
	if _, err := b.do(t.Context(), []int{1}); !errors.Is(err, boom) {
		t.Errorf("do: err = %v, want %v", err, boom)
	}
	b.stop()
	if _, err := b.do(t.Context(), []int{1}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("do after stop: err = %v, want %v", err, store.ErrUnavailable)
	}
}

// TestBatcherEndedContextSubmitsNothing: a caller whose context has
// already ended gets its error and its items are never applied (a claim
// sent so would lease runs to a worker pool that has stopped).
func TestBatcherEndedContextSubmitsNothing(t *testing.T) {
	var mu sync.Mutex
	applied := 0
	b := newBatcher(func(_ context.Context, items []int) ([]int, error) {
		mu.Lock()
		applied += len(items)
		mu.Unlock()
		return items, nil
	})
	defer b.stop()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for i := range 1000 {
		if _, err := b.do(ctx, []int{i}); !errors.Is(err, context.Canceled) {
			t.Fatalf("do with an ended context: %v, want context.Canceled", err)
		}
	}
	if _, err := b.do(t.Context(), []int{1}); err != nil { // the loop is still serving
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if applied != 1 {
		t.Errorf("%d items applied, want only the last caller's 1", applied)
	}
}
