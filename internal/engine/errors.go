package engine

import (
	"errors"
	"fmt"
	"time"
)

// ValidationError rejects a whole intake request: Index is the event's
// position in the request, Field the JSON field at fault.
type ValidationError struct {
	Index  int
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("event %d: %s", e.Index, e.Reason)
	}
	return fmt.Sprintf("event %d: %s: %s", e.Index, e.Field, e.Reason)
}

// Errors of the engine's API.
var (
	ErrUnknownFunction  = errors.New("unknown function")
	ErrFunctionDisabled = errors.New("function disabled")
	// ErrConcurrentStep: a step tool was called while another step of the
	// same run was in flight (see Run).
	ErrConcurrentStep = errors.New("a run takes one step at a time")
	// ErrEventGone: a rerun of a run whose trigger event is no longer
	// stored (retention deletes an event that arrived before its cutoff
	// once no unfinished run holds it, so a run that ended later can
	// outlive it).
	ErrEventGone = errors.New("its trigger event is no longer stored")
)

// DisabledError refuses to run a disabled function, with the reason it is
// disabled; errors.Is(err, ErrFunctionDisabled) holds.
type DisabledError struct {
	FunctionID string
	Reason     string
}

func (e *DisabledError) Error() string {
	return fmt.Sprintf("function %s is disabled: %s", e.FunctionID, e.Reason)
}

// Is makes a DisabledError match ErrFunctionDisabled.
func (e *DisabledError) Is(target error) bool { return target == ErrFunctionDisabled }

// errYield is what step tools return once the run has been suspended (a
// step failed and will be retried, or the run sleeps or waits). Handlers
// return it unchanged; the engine knows the run's state regardless.
var errYield = errors.New("engine: run suspended; return this error from the handler")

// errReplay stops an execution whose deferred steps (StepStore) could not
// commit because a key one of them read changed: nothing of them was
// applied, and the worker executes the handler again at once.
var errReplay = errors.New("engine: a deferred step's read changed before its commit; executing the run again")

// errInterrupted is returned by step tools when the run can no longer
// record results: the lease was lost, the run was cancelled, or the worker
// is shutting down.
var errInterrupted = errors.New("engine: run interrupted")

// nonRetriable marks an error that fails its step (or run) at once.
type nonRetriable struct{ err error }

func (e *nonRetriable) Error() string { return e.err.Error() }
func (e *nonRetriable) Unwrap() error { return e.err }

// NonRetriable wraps err so that the step (or run) returning it fails at once
// instead of being retried.
func NonRetriable(err error) error {
	if err == nil {
		return nil
	}
	return &nonRetriable{err: err}
}

// IsNonRetriable reports whether err was marked with NonRetriable.
func IsNonRetriable(err error) bool {
	var nr *nonRetriable
	return errors.As(err, &nr)
}

// retryAfter asks for the next attempt at a given time.
type retryAfter struct {
	err error
	at  time.Time
}

func (e *retryAfter) Error() string { return e.err.Error() }
func (e *retryAfter) Unwrap() error { return e.err }

// RetryAt wraps err so that the next attempt happens at t (a rate limit's
// reset, say) instead of after the backoff delay.
func RetryAt(err error, t time.Time) error {
	if err == nil {
		return nil
	}
	return &retryAfter{err: err, at: t}
}

// retryTime returns the time a RetryAt error names.
func retryTime(err error) (time.Time, bool) {
	var ra *retryAfter
	if errors.As(err, &ra) {
		return ra.at, true
	}
	return time.Time{}, false
}

// StepError is what a step returns to its handler once it has failed for
// good (retries exhausted or a non-retriable error). A handler may handle it
// and carry on; returned from the handler, it fails the run at once.
type StepError struct {
	Step string // the step id
	Err  error  // the last attempt's error (nil after a restart: see Message)
	// Message is the recorded error text.
	Message string
}

func (e *StepError) Error() string { return fmt.Sprintf("step %q failed: %s", e.Step, e.Message) }
func (e *StepError) Unwrap() error { return e.Err }
