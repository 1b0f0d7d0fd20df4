package tui

import (
	"context"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// Listing sizes: every refresh reads at most this many runs and events,
// however many the store holds.
const (
	runsLimit   = 300
	eventsLimit = 200
	// maxBatch bounds the changes applied in one update.
	maxBatch = 512
	// reconnectDelay is the wait before reopening a broken stream.
	reconnectDelay = time.Second
)

// Messages of the live data, emitted by the commands below.
type (
	statsMsg struct {
		stats client.Stats
		err   error
	}
	functionsMsg struct {
		fns []client.Function
		err error
	}
	// runsMsg is the latest runs with the latest events (for the names of
	// the runs' triggers and the events pane).
	runsMsg struct {
		runs   []client.Run
		events []client.StoredEvent
		err    error
	}
	// connectedMsg: the stream is open.
	connectedMsg struct{ feed Feed }
	// changesMsg is a batch of changes read from feed.
	changesMsg struct {
		feed    Feed
		changes []client.Change
	}
	// streamEndedMsg: the stream could not open or broke.
	streamEndedMsg struct{ err error }
	// tickMsg paces the refreshes.
	tickMsg time.Time
	// reconnectMsg: time to reopen the stream.
	reconnectMsg struct{}
)

func fetchStats(ctx context.Context, src Source) tea.Cmd {
	return func() tea.Msg {
		s, err := src.Stats(ctx)
		return statsMsg{stats: s, err: err}
	}
}

func fetchFunctions(ctx context.Context, src Source) tea.Cmd {
	return func() tea.Msg {
		fns, err := src.Functions(ctx)
		return functionsMsg{fns: fns, err: err}
	}
}

// fetchRuns reads the latest runs and events: two listings of fixed size.
func fetchRuns(ctx context.Context, src Source) tea.Cmd {
	return func() tea.Msg {
		runs, err := src.Runs(ctx, client.RunFilter{Limit: runsLimit})
		if err != nil {
			return runsMsg{err: err}
		}
		evs, err := src.Events(ctx, client.EventFilter{Limit: eventsLimit})
		return runsMsg{runs: runs.Data, events: evs.Data, err: err}
	}
}

func connect(ctx context.Context, src Source) tea.Cmd {
	return func() tea.Msg {
		f, err := src.Subscribe(ctx)
		if err != nil {
			return streamEndedMsg{err: err}
		}
		return connectedMsg{feed: f}
	}
}

// waitChanges reads the next changes of f: it blocks for one, then takes
// whatever else is already there, so that a burst costs one update.
func waitChanges(f Feed) tea.Cmd {
	return func() tea.Msg {
		ch := f.Changes()
		c, ok := <-ch
		if !ok {
			return streamEndedMsg{err: f.Err()}
		}
		batch := []client.Change{c}
		for len(batch) < maxBatch {
			select {
			case c, ok := <-ch:
				if !ok {
					return changesMsg{feed: f, changes: batch}
				}
				batch = append(batch, c)
			default:
				return changesMsg{feed: f, changes: batch}
			}
		}
		return changesMsg{feed: f, changes: batch}
	}
}

func tick(d time.Duration) tea.Cmd {
	return tea.Tick(d, func(t time.Time) tea.Msg { return tickMsg(t) })
}

func reconnectAfter(d time.Duration) tea.Cmd {
	return tea.Tick(d, func(time.Time) tea.Msg { return reconnectMsg{} })
}
