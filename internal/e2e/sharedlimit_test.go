package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// TestContactLimitIsSharedByThreeDaemons: one visitor sends the contact
// form through three daemons on one Redis (behind the same trusted proxy),
// three times through each. The limit is 3 per 60 s in all, not per
// daemon: 3 forms are accepted, the other 6 get 429, and one window later
// 3 more are accepted.
func TestContactLimitIsSharedByThreeDaemons(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, false)
	clock := clockwork.NewFakeClockAt(epoch)
	var daemons []*deployment
	for range 3 {
		daemons = append(daemons, deployOn(t, "redis", clock, srv))
	}
	v := visitorN(7)
	send := func(window string) (accepted int) {
		t.Helper()
		for round := range 3 {
			for i, d := range daemons {
				r := v.post(t, d, "/api/contact", "/contact", contactBody(forms[0]))
				switch r.status {
				case http.StatusOK:
					accepted++
				case http.StatusTooManyRequests:
					if r.header.Get("Retry-After") == "" || r.header.Get("X-RateLimit-Remaining") != "0" {
						t.Errorf("%s, round %d, daemon %d: 429 without Retry-After or with requests left: %v", window, round, i, r.header)
					}
				default:
					t.Fatalf("%s, round %d, daemon %d: POST /api/contact = %d %s", window, round, i, r.status, r.body)
				}
			}
		}
		return accepted
	}
	if n := send("first window"); n != 3 {
		t.Fatalf("%d of 9 contact forms through three daemons accepted in one window, want 3", n)
	}
	clock.Advance(time.Minute)
	if n := send("second window"); n != 3 {
		t.Fatalf("%d of 9 contact forms accepted in the next window, want 3", n)
	}
	if got := daemons[0].awaitRuns(t, "contact-form-submitted", 6); len(got) != 6 {
		t.Fatalf("%d contact runs, want one per accepted form (6)", len(got))
	}
}
