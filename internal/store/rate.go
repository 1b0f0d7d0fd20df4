package store

import "time"

// RateCount is a rate limit's answer to one request counted against it
// (the Redis store's CountWindow, the site routes' limits).
type RateCount struct {
	Allowed   bool
	Remaining int       // requests still allowed now
	Reset     time.Time // when the window ends and the whole limit is back
	// RetryAfter is how long a refused caller waits before the next
	// request is allowed; 0 when Allowed.
	RetryAfter time.Duration
}
