package engine

import "github.com/dcyfr/cyberdrew/internal/store"

// Run is the handle a Handler receives: the run being executed, its trigger
// event and its step tools.
type Run struct {
	ID      string
	Event   store.Event
	Events  []store.Event
	Attempt int
}
