package wire

import (
	"strings"
	"time"
)

// Function is a registered function with its flow control and recent
// counters. Durations are in nanoseconds.
type Function struct {
	ID            string        `json:"id"`
	Name          string        `json:"name"`
	Triggers      []Trigger     `json:"triggers"`
	Retries       *int          `json:"retries,omitempty"`
	Concurrency   *Concurrency  `json:"concurrency,omitempty"`
	RateLimit     *RateLimit    `json:"rate_limit,omitempty"`
	Debounce      *Debounce     `json:"debounce,omitempty"`
	Idempotency   string        `json:"idempotency,omitempty"`
	Singleton     *Singleton    `json:"singleton,omitempty"`
	FinishTimeout time.Duration `json:"finish_timeout,omitempty"`
	// Disabled, when set, says why the function does not run.
	Disabled string `json:"disabled,omitempty"`
	// NextCron is the next scheduled fire of its cron triggers.
	NextCron *time.Time    `json:"next_cron,omitempty"`
	Stats    FunctionStats `json:"stats"`
}

// Trigger is what starts a function: an event name pattern (see
// ParseEventPattern) or a cron spec.
type Trigger struct {
	Event string `json:"event,omitempty"`
	Cron  string `json:"cron,omitempty"`
}

// Matches reports whether an event trigger fires on an event named name,
// by the engine's own rule.
func (t Trigger) Matches(name string) bool {
	return t.Event != "" && MatchEvent(t.Event, name)
}

// Concurrency limits how many runs execute at once, per key value.
type Concurrency struct {
	Limit int    `json:"limit"`
	Key   string `json:"key,omitempty"`
}

// RateLimit lets at most Limit runs start per Period, per key value.
type RateLimit struct {
	Limit  int           `json:"limit"`
	Period time.Duration `json:"period"`
	Key    string        `json:"key,omitempty"`
}

// Debounce delays a run until no event with the same key arrived for Period,
// at most MaxWait after the first.
type Debounce struct {
	Period  time.Duration `json:"period"`
	Key     string        `json:"key,omitempty"`
	MaxWait time.Duration `json:"max_wait,omitempty"`
}

// Singleton lets one run per key value exist at a time.
type Singleton struct {
	Key string `json:"key,omitempty"`
}

// FunctionStats are a function's counters over the last hour.
type FunctionStats struct {
	RunsLastHour     int        `json:"runs_last_hour"`
	FailuresLastHour int        `json:"failures_last_hour"`
	LastStatus       string     `json:"last_status,omitempty"`
	LastRunAt        *time.Time `json:"last_run_at,omitempty"`
}

// TriggerText lists the function's triggers for people: event names, and
// "cron <schedule>" for schedules, comma-separated.
func (f Function) TriggerText() string {
	ts := make([]string, 0, len(f.Triggers))
	for _, t := range f.Triggers {
		if t.Event != "" {
			ts = append(ts, t.Event)
		} else {
			ts = append(ts, "cron "+t.Cron)
		}
	}
	return strings.Join(ts, ", ")
}

// Stats are a daemon's live counters (GET /v1/stats). In a multi-daemon
// Redis setup they are the answering daemon's own, but the queue depth is
// the shared queue's.
type Stats struct {
	At    time.Time  `json:"at"`
	Store StoreState `json:"store"`
	// QueueDepth is nil when the store is down.
	QueueDepth *int         `json:"queue_depth"`
	Workers    WorkersState `json:"workers"`
	// Finished and Failed are runs per second, oldest first, over
	// WindowSeconds ending at At's second.
	WindowSeconds int      `json:"window_seconds"`
	Finished      []int    `json:"finished_per_second"`
	Failed        []int    `json:"failed_per_second"`
	StartLag      StartLag `json:"start_lag"`
}

// StoreState is the store's kind and health.
type StoreState struct {
	Kind    string `json:"kind"`
	Healthy bool   `json:"healthy"`
	Error   string `json:"error,omitempty"`
}

// WorkersState is the worker pool: runs executing and capacity.
type WorkersState struct {
	Busy int `json:"busy"`
	Size int `json:"size"`
}

// StartLag is the delay between a run's due time and its start.
type StartLag struct {
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	Samples int     `json:"samples"`
}
