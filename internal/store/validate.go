package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dcyfr/cyberdrew/internal/keypath"
)

// The argument rules every backend applies before it touches its storage, so
// that SQLite and Redis refuse the same calls with ErrInvalid and read the
// same limits. Each rule has one home here and one conformance case.

// Listing page sizes: a limit of 0 or less asks for DefaultPageLimit, and no
// page holds more than MaxPageLimit.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 1000
)

// PageLimit is the page size a listing serves for the limit asked.
func PageLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultPageLimit
	case n > MaxPageLimit:
		return MaxPageLimit
	}
	return n
}

// DefaultScanCount is how many keys Scan returns for a count of 0 or less.
const DefaultScanCount = 100

// ScanCount is the number of keys a Scan serves for the count asked.
func ScanCount(n int) int {
	if n <= 0 {
		return DefaultScanCount
	}
	return n
}

// ValidateLeaseTTL refuses a lease that would not last (Claim, RenewLeases).
func ValidateLeaseTTL(ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%w: lease ttl must be positive", ErrInvalid)
	}
	return nil
}

// KeyTTL is a key-value ttl in whole milliseconds: 0 for none, a positive
// ttl under a millisecond rounds up to one (it never means "already
// expired"), and a negative ttl is refused.
func KeyTTL(ttl time.Duration) (int64, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("%w: ttl %v is negative (0 means no expiry)", ErrInvalid, ttl)
	case ttl == 0:
		return 0, nil
	}
	return max(ttl.Milliseconds(), 1), nil
}

// MaxTime is the latest time a record may hold: the last millisecond of
// year 9999, the last that JSON (RFC 3339) can write. An event whose ts is
// later would give its runs an available-at time no listing could answer
// with.
var MaxTime = time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC)

// MaxMS is MaxTime in milliseconds since the epoch.
var MaxMS = MaxTime.UnixMilli()

// Validate checks what every backend refuses with ErrInvalid before storing
// a publication: an event without a name, data or user that is not JSON, a
// ts after MaxTime, a run spec without an id or function or available
// after MaxTime.
func (p Publication) Validate() error {
	ev := p.Event
	if ev.Name == "" {
		return fmt.Errorf("%w: event name is empty", ErrInvalid)
	}
	if ev.TS > MaxMS {
		return fmt.Errorf("%w: event %q: ts %d is after %s", ErrInvalid, ev.Name, ev.TS, MaxTime.Format(time.RFC3339Nano))
	}
	if len(ev.Data) > 0 && !json.Valid(ev.Data) {
		return fmt.Errorf("%w: event %q: data is not JSON", ErrInvalid, ev.Name)
	}
	if len(ev.User) > 0 && !json.Valid(ev.User) {
		return fmt.Errorf("%w: event %q: user is not JSON", ErrInvalid, ev.Name)
	}
	return ValidateRunSpecs(p.Runs)
}

// StoredEvent is the publication's event as every backend stores it: an
// event sent without data has data {} (Inngest's default), so no reader
// sees null on one backend and nothing on the other.
func (p Publication) StoredEvent() Event {
	ev := p.Event
	if len(ev.Data) == 0 {
		ev.Data = json.RawMessage("{}")
	}
	return ev
}

// ValidateRunSpecs checks that every spec names its run and function,
// and that a lease it asks for has a valid ttl.
func ValidateRunSpecs(specs []RunSpec) error {
	for _, r := range specs {
		if r.ID == "" || r.FunctionID == "" {
			return fmt.Errorf("%w: run spec needs an id and a function id", ErrInvalid)
		}
		if r.AvailableAt.After(MaxTime) {
			return fmt.Errorf("%w: run %s: available at %s, after %s", ErrInvalid, r.ID, r.AvailableAt.Format(time.RFC3339), MaxTime.Format(time.RFC3339Nano))
		}
		if r.LeaseTo.Owner != "" {
			if err := ValidateLeaseTTL(r.LeaseTo.TTL); err != nil {
				return fmt.Errorf("run %s: %w", r.ID, err)
			}
		}
	}
	return nil
}

// Normalized checks a step before SaveStep stores it and returns it as
// stored: it needs an id, its output must be JSON, and its wait an event name
// and, with a match path, a valid path and a JSON match value, which is
// stored compact.
func (s Step) Normalized() (Step, error) {
	if s.ID == "" {
		return s, fmt.Errorf("%w: step id is empty", ErrInvalid)
	}
	if len(s.Output) > 0 && !json.Valid(s.Output) {
		return s, fmt.Errorf("%w: step %q: output is not JSON", ErrInvalid, s.ID)
	}
	if s.Wait == nil {
		return s, nil
	}
	w := *s.Wait
	if w.Event == "" {
		return s, fmt.Errorf("%w: step %q: wait needs an event name", ErrInvalid, s.ID)
	}
	if w.MatchPath != "" {
		if _, err := keypath.Parse(w.MatchPath); err != nil {
			return s, fmt.Errorf("%w: step %q: wait match path: %w", ErrInvalid, s.ID, err)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, w.MatchValue); err != nil {
			return s, fmt.Errorf("%w: step %q: wait match value: %w", ErrInvalid, s.ID, err)
		}
		w.MatchValue = buf.Bytes()
	}
	s.Wait = &w
	return s, nil
}

// Validate checks a Suspension: a run is suspended as Running (a retry),
// Sleeping (a sleep or a wait) or Queued.
func (s Suspension) Validate() error {
	switch s.Status {
	case StatusRunning, StatusSleeping, StatusQueued:
		return nil
	}
	return fmt.Errorf("%w: cannot suspend a run as %q", ErrInvalid, s.Status)
}

// Validate checks an Outcome: a run finishes Completed, Failed or Cancelled,
// with JSON output, and its emitted publications are valid.
func (o Outcome) Validate() error {
	switch o.Status {
	case StatusCompleted, StatusFailed, StatusCancelled:
	default:
		return fmt.Errorf("%w: cannot finish a run as %q", ErrInvalid, o.Status)
	}
	if len(o.Output) > 0 && !json.Valid(o.Output) {
		return fmt.Errorf("%w: output is not JSON", ErrInvalid)
	}
	for _, p := range o.Emit {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// SameJSON reports whether two JSON texts hold the same value, as a wait's
// match compares them: object keys in any order, numbers by their value as
// IEEE doubles (1, 1.0 and 1e0 are one number, as in JavaScript), strings by
// their characters whatever the escapes, a string never equal to a number.
// An empty array equals an empty object: Redis's Lua JSON decodes both to
// the same empty table, so that is the one rule both backends can keep.
// Text that is not JSON equals nothing.
func SameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return sameValue(x, y)
}

func sameValue(x, y any) bool {
	switch x := x.(type) {
	case map[string]any:
		switch y := y.(type) {
		case map[string]any:
			if len(x) != len(y) {
				return false
			}
			for k, v := range x {
				w, ok := y[k]
				if !ok || !sameValue(v, w) {
					return false
				}
			}
			return true
		case []any:
			return len(x) == 0 && len(y) == 0
		}
		return false
	case []any:
		switch y := y.(type) {
		case []any:
			if len(x) != len(y) {
				return false
			}
			for i := range x {
				if !sameValue(x[i], y[i]) {
					return false
				}
			}
			return true
		case map[string]any:
			return len(x) == 0 && len(y) == 0
		}
		return false
	}
	return x == y
}
