// Package tui is `cyberdrew dash`: a bubbletea live view of one daemon's
// functions, runs, steps and events, with actions (rerun, cancel, invoke,
// send a test event) behind a confirmation.
//
// The dash is live by push: it subscribes to the daemon's /v1/stream and
// applies each change as it comes, re-reading a listing only when the stream
// says it lost changes or a change names a run it has not seen. Once a
// second it reads GET /v1/stats and GET /v1/functions, both served from the
// daemon's memory. When the stream is down it says so in a banner, polls the
// runs once a second and reconnects by itself.
//
// The root Model composes one model per pane (header, functions, runs, run
// detail, events, dialog); all IO happens in tea.Cmds against a Source, so
// Update and View are tested without a daemon.
package tui

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// Source is the daemon as the dash sees it; FromClient adapts a client.
type Source interface {
	URL() string
	Stats(ctx context.Context) (client.Stats, error)
	Functions(ctx context.Context) ([]client.Function, error)
	Runs(ctx context.Context, f client.RunFilter) (client.Page[client.Run], error)
	Run(ctx context.Context, id string) (client.RunDetail, error)
	Events(ctx context.Context, f client.EventFilter) (client.Page[client.StoredEvent], error)
	Event(ctx context.Context, id string) (client.StoredEvent, error)
	// Subscribe opens the stream of changes; it returns once the daemon
	// has subscribed.
	Subscribe(ctx context.Context) (Feed, error)
	Cancel(ctx context.Context, id string) (client.Run, error)
	Rerun(ctx context.Context, id string) (client.RunRef, error)
	Invoke(ctx context.Context, functionID string, data json.RawMessage) (client.Invocation, error)
	Send(ctx context.Context, events ...client.Event) ([]string, error)
}

// Feed is an open stream of changes: Changes closes when it ends, then Err
// says why.
type Feed interface {
	Changes() <-chan client.Change
	Err() error
	Close()
}

// FromClient makes a Source of a daemon's client.
func FromClient(c *client.Client) Source { return clientSource{c} }

type clientSource struct{ *client.Client }

func (s clientSource) Subscribe(ctx context.Context) (Feed, error) {
	return s.Stream(ctx, client.StreamFilter{})
}

// Example is a test event the dash offers to send.
type Example struct {
	Name string
	Data json.RawMessage
}

// Options tune the dash. Zero fields take defaults.
type Options struct {
	// Examples are the test events offered by the send key.
	Examples []Example
	// Profile is the colour profile the dash draws with: below ANSI (as
	// NO_COLOR asks) it draws no colour or text attribute at all. Unknown
	// takes the one Bubble Tea detects from the terminal and environment.
	Profile colorprofile.Profile
	// Light says the terminal's background is light; the dash's colours
	// are for a dark one otherwise.
	Light bool
	// AskBackground: the background is not known (Light is a guess), so
	// the dash asks the terminal for it (OSC 11) when it starts, waits for
	// nothing, and takes the answer's colours if one comes. A terminal that
	// never answers keeps Light's.
	AskBackground bool
	// Now is the clock of ages and elapsed times; nil: time.Now.
	Now func() time.Time
	// Refresh is the interval of the stats and functions reads, and of
	// the runs poll while the stream is down; zero: one second.
	Refresh time.Duration
	// Logger receives the dash's own log (stream errors, actions); nil
	// discards it. It must never write to the terminal.
	Logger *slog.Logger
}

// Run shows the dash on the terminal in and out until the user quits or
// ctx ends. It restores the terminal on the way out.
func Run(ctx context.Context, src Source, in io.Reader, out io.Writer, opts Options) error {
	m := New(ctx, src, opts)
	popts := []tea.ProgramOption{tea.WithContext(ctx), tea.WithFPS(maxFPS), tea.WithInput(in), tea.WithOutput(out)}
	if opts.Profile != colorprofile.Unknown {
		popts = append(popts, tea.WithColorProfile(opts.Profile))
	}
	p := tea.NewProgram(m, popts...)
	_, err := p.Run()
	m.stop()
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// maxFPS caps how often the screen is redrawn.
const maxFPS = 10
