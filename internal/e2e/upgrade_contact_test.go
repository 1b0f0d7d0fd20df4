package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

// TestContactCutShortByAnEarlierReleaseFinishes upgrades a store in which
// an earlier release was killed during a contact form's run, after it had
// sent the owner's notification: its send step recorded as releases
// before 2026-12-07 recorded it ({"delivered":true}), and in one case its
// announcement too, as releases before 2026-12-05 made it (a step
// emit-notification-delivered emitting contact/email.delivered). This
// release finishes the run: the notification is not sent again, it is
// announced once (contact/email.sent when the earlier release had not
// announced it), the visitor's confirmation goes out and is announced, and
// the run's output says both were sent. (Before, the recorded send read
// as not sent: the notification was never announced.)
func TestContactCutShortByAnEarlierReleaseFinishes(t *testing.T) {
	for _, announced := range []bool{false, true} {
		for _, backend := range backends {
			name := "sent/" + backend
			if announced {
				name = "sent and announced/" + backend
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				clock := clockwork.NewFakeClockAt(epoch)
				dir := t.TempDir()
				var srv *redistest.Server
				var old store.Store
				var err error
				switch backend {
				case "redis":
					srv = redistest.StartT(t, false)
					old, err = redis.Open(t.Context(), srv.URL(0), redis.Options{Clock: clock})
				default:
					old, err = sqlite.Open(t.Context(), filepath.Join(dir, "cyberdrew.db"), sqlite.Options{Clock: clock})
				}
				if err != nil {
					t.Fatalf("opening the store the earlier release used: %v", err)
				}
				contactKilledMidRun(t, old, clock, announced)

				d := deployAt(t, backend, clock, srv, dir)
				clock.Advance(time.Minute) // the killed daemon's lease lapses
				done := d.awaitRuns(t, "contact-form-submitted", 1)
				var out map[string]jobs.SendResult
				if err := json.Unmarshal(done[0].Output, &out); err != nil {
					t.Fatalf("output %s: %v", done[0].Output, err)
				}
				if !out[jobs.EmailNotification].Sent || !out[jobs.EmailConfirmation].Sent {
					t.Errorf("output %s, want both emails sent", done[0].Output)
				}
				// Only the confirmation reaches Resend: the notification went
				// out under the earlier release.
				if got := d.resend.outbox(); len(got) != 1 || len(d.resend.to(visitorAddr)) != 1 {
					t.Errorf("Resend got %s, want the visitor's confirmation alone", describe(got))
				}
				kinds := map[string]int{}
				for _, ev := range d.events(t, jobs.EventEmailSent) {
					var o jobs.EmailOutcome
					if err := json.Unmarshal(ev.Data, &o); err != nil {
						t.Fatal(err)
					}
					kinds[o.Type]++
				}
				wantNotification := 1
				if announced {
					wantNotification = 0 // announced as contact/email.delivered then
				}
				if kinds[jobs.EmailNotification] != wantNotification || kinds[jobs.EmailConfirmation] != 1 {
					t.Errorf("contact/email.sent by type %v, want notification %d and confirmation 1", kinds, wantNotification)
				}
			})
		}
	}
}

// visitorAddr is the address of the contact form's visitor in
// contactKilledMidRun.
const visitorAddr = "early@example.com"

// contactKilledMidRun leaves in st what an earlier release left when it
// was killed during a contact form's run: the submission and its run,
// leased for 10 s, the owner's notification recorded as sent in that
// release's shape and, when announced, its contact/email.delivered
// emitted in a step of that release's name.
func contactKilledMidRun(t *testing.T, st store.Store, clock clockwork.Clock, announced bool) {
	t.Helper()
	ctx := context.Background()
	data, _ := json.Marshal(map[string]string{"name": "Early Visitor", "email": visitorAddr, "message": "Sent before the upgrade."})
	runID := ulid.Make().String()
	if _, err := st.Publish(ctx, []store.Publication{{
		Event: store.Event{Name: jobs.EventContactSubmitted, Data: data, TS: clock.Now().UnixMilli()},
		Runs:  []store.RunSpec{{ID: runID, FunctionID: "contact-form-submitted"}},
	}}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	leases, err := st.Claim(ctx, "earlier-release:1", 1, 10*time.Second)
	if err != nil || len(leases) != 1 {
		t.Fatalf("Claim = %v, %v", leases, err)
	}
	now := clock.Now()
	save := func(id string, kind store.StepKind, out string, emit []store.Publication) {
		s := store.Step{RunID: runID, ID: id, Name: id, Kind: kind, Status: store.StatusCompleted,
			Output: json.RawMessage(out), StartedAt: now, EndedAt: now, Attempts: []store.Attempt{{StartedAt: now, EndedAt: now}}}
		if err := st.SaveStep(ctx, &leases[0], s, emit); err != nil {
			t.Fatalf("SaveStep %s: %v", id, err)
		}
	}
	save("send-notification-email", store.StepRun, `{"delivered":true,"id":"re_early_notification"}`, nil)
	if announced {
		evID := ulid.Make().String()
		outcome, _ := json.Marshal(jobs.EmailOutcome{Email: visitorAddr, Type: jobs.EmailNotification, MessageID: "re_early_notification"})
		save("emit-notification-delivered", store.StepSendEvent, `["`+evID+`"]`, []store.Publication{{
			Event: store.Event{ID: evID, Name: jobs.EventEmailDelivered, Data: outcome, TS: now.UnixMilli()}}})
	}
	// Killed: the lease is neither released nor renewed.
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
