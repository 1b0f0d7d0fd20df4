package engine

import (
	"context"
	"encoding/json"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/wire"
)

// Handler is a function's body. It is called from the top each time the run
// is executed; completed steps return their recorded results. Its result is
// stored as JSON as the run's output.
type Handler func(ctx context.Context, run *Run) (any, error)

// Trigger starts a function: an event name pattern (wire.ParseEventPattern) or a cron spec
// (five or six fields, optional "TZ=Area/City " prefix; UTC otherwise).
type Trigger struct {
	Event string `json:"event,omitempty"`
	Cron  string `json:"cron,omitempty"`
	// If, when set, must accept the event for the trigger to fire.
	If func(store.Event) bool `json:"-"`
}

// Concurrency limits how many runs execute at once, per key value.
type Concurrency = wire.Concurrency

// RateLimit lets at most Limit runs start per Period, per key value; the
// excess runs end Skipped.
type RateLimit = wire.RateLimit

// Debounce delays a run until no new event with the same key has arrived
// for Period, but no longer than MaxWait after the first.
type Debounce = wire.Debounce

// Singleton lets one run per key value exist at a time; new ones are Skipped.
type Singleton = wire.Singleton

// Function is a durable function. Register it with Engine.Register.
type Function struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Triggers []Trigger `json:"triggers"`
	// Retries is the number of retries after the first attempt, per step
	// and for errors returned outside steps. Nil means DefaultRetries.
	Retries *int `json:"retries,omitempty"`
	// Backoff gives the delay before retry n (1-based); nil uses
	// InngestBackoff. Jitter is added by the engine.
	Backoff     func(retry int) time.Duration `json:"-"`
	Concurrency *Concurrency                  `json:"concurrency,omitempty"`
	RateLimit   *RateLimit                    `json:"rate_limit,omitempty"`
	Debounce    *Debounce                     `json:"debounce,omitempty"`
	// Idempotency is a dotted path; one run per value per 24 h.
	Idempotency string     `json:"idempotency,omitempty"`
	Singleton   *Singleton `json:"singleton,omitempty"`
	// FinishTimeout cancels a run still unfinished this long after it started.
	FinishTimeout time.Duration `json:"finish_timeout,omitempty"`
	// Retention, when > 0, is how long the function's Completed runs are
	// kept, with the events no other run holds: a high-volume function
	// keeps a day rather than the daemon's month. Failed and cancelled
	// runs keep the daemon's retention.
	Retention time.Duration `json:"retention,omitempty"`
	// OnFailure runs (as function "<ID>-failure", triggered by
	// cyberdrew/function.failed for this function) after a run fails.
	OnFailure Handler `json:"-"`
	// Disabled, when non-empty, says why the function does not run
	// (missing credentials); its triggers are ignored.
	Disabled string  `json:"disabled,omitempty"`
	Handler  Handler `json:"-"`
}

// DefaultRetries is Inngest's default: four retries, five attempts in all.
const DefaultRetries = 4

// FunctionInfo describes a registered function for the admin API.
type FunctionInfo struct {
	Function
	// NextCron is the next scheduled fire of its cron triggers (zero when
	// none).
	NextCron time.Time     `json:"next_cron,omitzero"`
	Stats    FunctionStats `json:"stats"`
}

// FunctionStats are counters the engine keeps, so reading them costs no store
// query.
type FunctionStats struct {
	RunsLastHour     int          `json:"runs_last_hour"`
	FailuresLastHour int          `json:"failures_last_hour"`
	LastStatus       store.Status `json:"last_status,omitempty"`
	LastRunAt        time.Time    `json:"last_run_at,omitzero"`
}

// IncomingEvent is an event as a client sends it (Inngest's payload).
type IncomingEvent struct {
	ID   string          `json:"id,omitempty"`
	Name string          `json:"name"`
	Data json.RawMessage `json:"data,omitempty"`
	User json.RawMessage `json:"user,omitempty"`
	TS   int64           `json:"ts,omitempty"`
	V    string          `json:"v,omitempty"`
	// InternalID, when set, is the id the event is stored under (see
	// SeededIDs); an id already stored makes the event a duplicate.
	InternalID string `json:"-"`
}

// Accepted tells what became of one incoming event.
type Accepted struct {
	EventID   string         `json:"id"`
	Duplicate bool           `json:"duplicate,omitempty"`
	Runs      []store.RunRef `json:"runs"`
}
