package sqlite

import (
	"context"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// Subscribe delivers changes committed from now on until ctx ends or the
// store closes; the channel is closed then.
func (s *Store) Subscribe(ctx context.Context) <-chan store.Change {
	return s.subs.Subscribe(ctx)
}
