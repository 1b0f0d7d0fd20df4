// Package wire holds the JSON shapes of the daemon's HTTP answers (events,
// runs, steps, functions, stats, errors and the envelopes around them) and
// the one event-name pattern matcher. The admin API encodes with these types
// and the client decodes with them, so the two cannot drift. It does no IO:
// no HTTP, no store.
package wire

import (
	"encoding/json"
	"time"
)

// TimeOf is t as the API shows it: nil (null) when zero, else in UTC.
func TimeOf(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// Data is the admin API's envelope of one answer: {"data": …}.
type Data[T any] struct {
	Data T `json:"data"`
}

// Page is one page of a listing: {"data": […], "cursor": "…"}; Cursor is
// empty on the last page.
type Page[T any] struct {
	Data   []T    `json:"data"`
	Cursor string `json:"cursor"`
}

// Error is every error answer: {"error": "…"}. The event API adds the
// status, the shape the official inngest client reads.
type Error struct {
	Error  string `json:"error"`
	Status int    `json:"status,omitempty"`
}

// Sent is the event API's answer to POST /e/{key}: the ids of the events in
// the order sent.
type Sent struct {
	IDs    []string `json:"ids"`
	Status int      `json:"status"`
	// Duplicates are the indexes in IDs of the events answered as
	// duplicates of an event stored before with the same id (which
	// triggered nothing): cyberdrew's addition, which Inngest's clients
	// ignore.
	Duplicates []int `json:"duplicates,omitempty"`
}

// Event is a stored event. ID is the id the sender gave, or the internal id
// when it gave none.
type Event struct {
	InternalID string          `json:"internal_id"`
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Data       json.RawMessage `json:"data"`
	User       json.RawMessage `json:"user"`
	TS         int64           `json:"ts"`
	V          string          `json:"v"`
	ReceivedAt *time.Time      `json:"received_at"`
	// Skipped, in a single event's detail, are the functions the event
	// matched that started no run of their own for it, each with its reason.
	Skipped []Skip `json:"skipped,omitempty"`
}

// Skip is a function an event started no run of: its Skipped run (or the
// pending run a debounce folded the event into) and why.
type Skip struct {
	FunctionID string `json:"function_id"`
	RunID      string `json:"run_id"`
	Reason     string `json:"reason"`
}

// Run statuses.
const (
	StatusQueued    = "Queued"
	StatusRunning   = "Running"
	StatusSleeping  = "Sleeping"
	StatusCompleted = "Completed"
	StatusFailed    = "Failed"
	StatusCancelled = "Cancelled"
	StatusSkipped   = "Skipped"
)

// Finished reports whether a run status is final.
func Finished(status string) bool {
	switch status {
	case StatusCompleted, StatusFailed, StatusCancelled, StatusSkipped:
		return true
	}
	return false
}

// Run is a run: Inngest's REST v1 fields first, then cyberdrew's own.
type Run struct {
	RunID        string          `json:"run_id"`
	EventID      string          `json:"event_id"`
	FunctionID   string          `json:"function_id"`
	Status       string          `json:"status"`
	RunStartedAt *time.Time      `json:"run_started_at"`
	EndedAt      *time.Time      `json:"ended_at"`
	Output       json.RawMessage `json:"output"`
	Error        string          `json:"error,omitempty"`
	Attempt      int             `json:"attempt"`
	CreatedAt    *time.Time      `json:"created_at"`
	EventIDs     []string        `json:"event_ids"`
	AvailableAt  *time.Time      `json:"available_at"`
}

// Finished reports whether the run's status is final.
func (r Run) Finished() bool { return Finished(r.Status) }

// RunDetail is a run with its steps.
type RunDetail struct {
	Run
	Steps []Step `json:"steps"`
	// Deliveries are the latest delivery status of each email the run
	// sent, as Resend's webhooks reported them; none for other runs.
	Deliveries []Delivery `json:"deliveries,omitempty"`
}

// Delivery is the latest status of one email a run sent.
type Delivery struct {
	// Email is which of the run's emails: notification or confirmation.
	Email  string    `json:"email"`
	Status string    `json:"status"`
	At     time.Time `json:"at"`
	// EventID is the event that reported the status.
	EventID string `json:"event_id"`
}

// Step is one step of a run.
type Step struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Kind      string          `json:"kind"`
	Status    string          `json:"status"`
	Attempts  []Attempt       `json:"attempts"`
	StartedAt *time.Time      `json:"started_at"`
	EndedAt   *time.Time      `json:"ended_at"`
	Output    json.RawMessage `json:"output"`
	Error     string          `json:"error,omitempty"`
	WakeAt    *time.Time      `json:"wake_at"`
	Wait      *Wait           `json:"wait,omitempty"`
}

// Attempt is one try of a step.
type Attempt struct {
	StartedAt *time.Time `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
	Error     string     `json:"error,omitempty"`
}

// Wait is what a waitForEvent step waits for: an event name and, when set,
// the value its match path must hold.
type Wait struct {
	Event      string          `json:"event"`
	MatchPath  string          `json:"match_path,omitempty"`
	MatchValue json.RawMessage `json:"match_value,omitempty"`
}

// RunRef names a run just created.
type RunRef struct {
	RunID      string `json:"run_id"`
	FunctionID string `json:"function_id"`
	Status     string `json:"status"`
}

// Invocation is what an invoke created: its event and runs.
type Invocation struct {
	EventID string   `json:"event_id"`
	RunIDs  []string `json:"run_ids"`
}
