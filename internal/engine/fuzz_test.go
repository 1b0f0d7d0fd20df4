package engine

import (
	"testing"
	"time"
)

// FuzzParseCron: cron specs with or without TZ= never panic, and a parsed
// schedule moves forward in time.
func FuzzParseCron(f *testing.F) {
	for _, seed := range []string{
		"* * * * *", "TZ=Europe/Paris 0 9 * * 1-5", "CRON_TZ=America/New_York 30 2 * * *",
		"@hourly", "*/5 * * * * *", "TZ= * * * * *", "TZ=../../etc/passwd * * * * *", "0 0 30 2 *",
		"TZ=Australia/Lord_Howe 0 2 * * *",
	} {
		f.Add(seed)
	}
	at := time.Date(2025, 3, 30, 1, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, spec string) {
		c, err := parseCron(spec)
		if err != nil {
			return
		}
		if n := c.next(at); !n.IsZero() && !n.After(at) {
			t.Fatalf("%q: next(%v) = %v", spec, at, n)
		}
		if p, ok := c.prev(at); ok && p.After(at) {
			t.Fatalf("%q: prev(%v) = %v", spec, at, p)
		}
	})
}
