package engine

import "time"

// Observer is told what the engine and its workers do, for metrics. Its
// methods must be cheap and safe for concurrent use.
type Observer interface {
	// RunSkipped: an event this engine published matched function but
	// started no run of its own, for reason (a store.SkipReason:
	// idempotency, rate_limit, singleton, debounce).
	RunSkipped(function, reason string)
	// RunStarted: a run began for the first time, lag after its creation.
	RunStarted(function string, lag time.Duration)
	// RunFinished: a worker recorded a run's final status.
	RunFinished(function, status string)
	// StepAttempt: a step attempt ended completed, failed or retry.
	StepAttempt(function, outcome string, d time.Duration)
	// StepConflict: a StepTx commit found a key it read changed, and its
	// body runs again.
	StepConflict(function string)
	// LeaseLost: a run was stopped because another worker took it over.
	LeaseLost()
	// LeaseTakenOver: a worker claimed a run whose previous worker's lease
	// had lapsed (store.Lease.TakenOver).
	LeaseTakenOver()
	// StoreError: a store call made for a run failed.
	StoreError(op string)
}

// nopObserver is the Observer of an engine given none.
type nopObserver struct{}

func (nopObserver) RunSkipped(string, string)                 {}
func (nopObserver) RunStarted(string, time.Duration)          {}
func (nopObserver) RunFinished(string, string)                {}
func (nopObserver) StepAttempt(string, string, time.Duration) {}
func (nopObserver) StepConflict(string)                       {}
func (nopObserver) LeaseLost()                                {}
func (nopObserver) LeaseTakenOver()                           {}
func (nopObserver) StoreError(string)                         {}
