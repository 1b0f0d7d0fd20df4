package e2e

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestRerunOfARunThatOutlivedItsEvent: retention deletes an event that
// arrived before its cutoff once no unfinished run holds it, so a run that
// ended later (here one scheduled a month ahead) outlives its event. Its
// rerun is refused as such, 409 and "its trigger event is no longer
// stored", where the admin API answered 404 "run … not found" about a run
// it still listed.
func TestRerunOfARunThatOutlivedItsEvent(t *testing.T) {
	onBoth(t, func(t *testing.T, d *deployment) {
		later := epoch.Add(31 * 24 * time.Hour)
		body := `{"name":"test/hello.world","data":{"email":"later@example.com"},"ts":` + strconv.FormatInt(later.UnixMilli(), 10) + `}`
		ids := d.intake(t, http.Header{"Content-Type": {"application/json"}}, body)
		d.clock.Advance(31*24*time.Hour + time.Second)
		d.waitFor(t, "the run to sleep", func() bool { return len(d.runs(t, "hello-world", "Sleeping")) == 1 })
		d.clock.Advance(2 * time.Second)
		done := d.awaitRuns(t, "hello-world", 1)
		// Prune runs every 10 minutes at most: the event (received a
		// month ago) goes, the run (ended now) stays.
		d.clock.Advance(11 * time.Minute)
		auth := http.Header{"Authorization": {"Bearer " + signingKey}}
		d.waitFor(t, "retention to delete the event", func() bool {
			return d.do(t, http.MethodGet, "/v1/events/"+ids[0], auth, "").status == http.StatusNotFound
		})
		if rs := d.runs(t, "hello-world"); len(rs) != 1 || rs[0].RunID != done[0].RunID {
			t.Fatalf("runs after the prune: %v, want the completed run kept", rs)
		}
		r := d.do(t, http.MethodPost, "/v1/runs/"+done[0].RunID+"/rerun", auth, "")
		var answer struct {
			Error string `json:"error"`
		}
		r.decode(t, &answer)
		want := `run "` + done[0].RunID + `" cannot be rerun: its trigger event is no longer stored (deleted by retention)`
		if r.status != http.StatusConflict || answer.Error != want {
			t.Errorf("rerun: %d %q, want 409 %q", r.status, answer.Error, want)
		}
	})
}
