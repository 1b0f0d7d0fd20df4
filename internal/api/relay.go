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
// event. A frame whose change has no Kind is the resync marker.
type frame struct {
	change store.Change
	data   []byte
}

// batch is what the relay hands on at once: the changes of one
// relayWindow, encoded once and shared by every client, which must not
// change it. data is every frame's bytes in order, which an unfiltered
// client writes whole; frames are the same bytes one change at a time, for
// the clients that filter. A nil *batch is the fan-out's lag marker, a
// resync like a marker frame.
type batch struct {
	frames []frame
	data   []byte
}

// relay carries the store's changes to the stream's clients. While at least
// one client is connected it holds one store subscription, read by one
// goroutine that encodes each change once and publishes it to the clients'
// fan-out; with none connected it holds nothing. A client that falls behind
// gets a resync, so neither the store nor the other clients wait for it.
type relay struct {
	st  Reader
	max int
	log *slog.Logger
	fan *store.Fanout[*batch]

	mu      sync.Mutex // guards clients, stop and done
	clients int
	stop    context.CancelFunc // ends the store subscription
	done    chan struct{}      // closed when the pump has returned
}

func newRelay(st Reader, maxClients int, logger *slog.Logger) *relay {
	return &relay{st: st, max: maxClients, log: logger, fan: store.NewFanout[*batch](streamBuffer)}
}

// join subscribes a client until ctx ends or leave is called, whichever
// comes first; leave must be called. Every change the store commits after
// join returns is delivered, or replaced by a resync. Past the budget join
// returns errTooManyStreams.
func (r *relay) join(ctx context.Context) (sub store.Subscription[*batch], leave func(), err error) {
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
	var pending []store.Change
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-changes:
			if !ok {
				return
			}
			pending = append(pending[:0], c)
		}
		window.Reset(relayWindow)
	more:
		for len(pending) < relayBatch {
			select {
			case c, ok := <-changes:
				if !ok {
					break more
				}
				pending = append(pending, c)
			case <-window.C:
				break more
			case <-ctx.Done():
				break more
			}
		}
		window.Stop()
		r.fan.Publish([]*batch{r.encode(pending)})
	}
}

// encode makes the batch of changes: their frames in one buffer. The
// store's lag marker, and a change that cannot be encoded, become the
// resync marker.
func (r *relay) encode(changes []store.Change) *batch {
	b := &batch{frames: make([]frame, len(changes))}
	ends := make([]int, len(changes))
	for i, c := range changes {
		var data []byte
		if c.Kind != "" {
			var err error
			if data, err = json.Marshal(c); err != nil {
				r.log.Error("stream: encode change", "err", err)
				c = store.Change{}
			}
		}
		if c.Kind == "" {
			b.data = append(b.data, resyncFrame...)
		} else {
			b.data = fmt.Appendf(b.data, "event: %s\ndata: %s\n\n", c.Kind, data)
		}
		b.frames[i].change = c
		ends[i] = len(b.data)
	}
	start := 0
	for i, end := range ends {
		b.frames[i].data = b.data[start:end:end]
		start = end
	}
	return b
}
