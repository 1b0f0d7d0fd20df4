package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// Budget of the stream's clients.
const (
	// DefaultMaxStreams is how many /v1/stream clients may be connected at
	// once.
	DefaultMaxStreams = 256
	// streamBuffer is how many batches a client may fall behind before it
	// loses them and gets a resync: 24 bytes a batch, the batches and their
	// frames shared by every client.
	streamBuffer = 16
	// relayBatch bounds the changes the relay takes from the store before
	// it hands them on.
	relayBatch = 256
	// relayWindow is how long the relay gathers changes after the first
	// one before it hands them on: the clients' wake-ups are paid per
	// batch, so under load they cost at most one per window whatever the
	// intake rate, for a delay a person watching does not see.
	relayWindow = 10 * time.Millisecond
)

// errTooManyStreams refuses a client past the budget.
var errTooManyStreams = errors.New("api: too many stream clients")

// frame is one change, encoded once for every client as its server-sent
// event. A nil *frame is the resync marker.
type frame struct {
	change store.Change
	data   []byte
}

// batch is what the relay hands on at once: the frames of one relayWindow,
// shared by every client, which must not change it. A nil batch is the
// fan-out's lag marker, a resync like a nil frame.
type batch []*frame

// relay carries the store's changes to the stream's clients. While at least
// one client is connected it holds one store subscription, read by one
// goroutine that encodes each change once and publishes it to the clients'
// fan-out; with none connected it holds nothing. A client that falls behind
// gets a resync, so neither the store nor the other clients wait for it.
type relay struct {
	st  Reader
	max int
	log *slog.Logger
	fan *store.Fanout[batch]

	mu      sync.Mutex // guards clients, stop and done
	clients int
	stop    context.CancelFunc // ends the store subscription
	done    chan struct{}      // closed when the pump has returned
}

func newRelay(st Reader, maxClients int, logger *slog.Logger) *relay {
	return &relay{st: st, max: maxClients, log: logger, fan: store.NewFanout[batch](streamBuffer)}
}

// join subscribes a client until ctx ends or leave is called, whichever
// comes first; leave must be called. Every change the store commits after
// join returns is delivered, or replaced by a resync. Past the budget join
// returns errTooManyStreams.
func (r *relay) join(ctx context.Context) (sub store.Subscription[batch], leave func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clients >= r.max {
		return sub, nil, errTooManyStreams
	}
	if r.clients == 0 {
		pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		changes := r.st.Subscribe(pctx)
		r.stop, r.done = stop, make(chan struct{})
		go r.pump(pctx, changes, r.done)
	}
	r.clients++
	cctx, cancel := context.WithCancel(ctx)
	return r.fan.Join(cctx), func() {
		cancel()
		r.leave()
	}, nil
}

// leave counts a client out; the last one out ends the store subscription
// and waits for the pump to return.
func (r *relay) leave() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clients--
	if r.clients == 0 {
		r.stop()
		<-r.done
	}
}

// pump encodes the store's changes and publishes them to the clients, a
// batch at a time: what arrives within relayWindow of a batch's first change.
func (r *relay) pump(ctx context.Context, changes <-chan store.Change, done chan<- struct{}) {
	defer close(done)
	window := time.NewTimer(relayWindow)
	window.Stop()
	var b batch
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-changes:
			if !ok {
				return
			}
			b = batch{r.frame(c)}
		}
		window.Reset(relayWindow)
	more:
		for len(b) < relayBatch {
			select {
			case c, ok := <-changes:
				if !ok {
					break more
				}
				b = append(b, r.frame(c))
			case <-window.C:
				break more
			case <-ctx.Done():
				break more
			}
		}
		window.Stop()
		r.fan.Publish([]batch{b})
	}
}

// frame encodes c; the store's lag marker becomes the resync marker.
func (r *relay) frame(c store.Change) *frame {
	if c.Kind == "" {
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		r.log.Error("stream: encode change", "err", err)
		return nil
	}
	return &frame{change: c, data: fmt.Appendf(nil, "event: %s\ndata: %s\n\n", c.Kind, b)}
}
