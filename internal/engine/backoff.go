package engine

import (
	"math/rand/v2"
	"time"
)

// inngestBackoff is Inngest's retry table; retries past its end wait for its
// last entry.
var inngestBackoff = []time.Duration{
	15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute,
	10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour, 2 * time.Hour,
}

// InngestBackoff is the default delay before retry n (1-based).
func InngestBackoff(retry int) time.Duration {
	if retry < 1 {
		retry = 1
	}
	if retry > len(inngestBackoff) {
		return inngestBackoff[len(inngestBackoff)-1]
	}
	return inngestBackoff[retry-1]
}

// DefaultJitter adds up to 10% (at most 30 s) of random delay so that many
// runs failing together do not retry together.
func DefaultJitter(d time.Duration) time.Duration {
	spread := min(d/10, 30*time.Second)
	if spread <= 0 {
		return d
	}
	return d + rand.N(spread)
}
