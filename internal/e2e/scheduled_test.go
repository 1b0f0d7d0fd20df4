package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestScheduledViewsWaitForTheirTime sends page views as the site's server
// sends them through the official client, without ids, each with a ts an
// hour ahead (the client's way to schedule an event). Until then every view
// is a Queued run of track-post-view, listed, readable and cancellable
// through the admin API (on Redis such a run lives in its event until its
// claim: docs/engine.md, "A queued run kept in its event"), and the page
// counts none; an hour later the views that were not cancelled count, once.
func TestScheduledViewsWaitForTheirTime(t *testing.T) {
	t.Parallel()
	onBothAndAPartitionedCluster(t, func(t *testing.T, d *deployment) {
		const slug, title, views = "scheduled-post", "A post read later", 4
		due := d.clock.Now().Add(time.Hour)
		var batch []wireEvent
		for k := range views {
			data, _ := json.Marshal(map[string]any{
				"slug": slug, "title": title, "viewedAt": due.UTC().Format(time.RFC3339),
				"visitor": fmt.Sprintf("later%02d", k),
			})
			batch = append(batch, wireEvent{Name: "blog/post.viewed", Data: data, TS: due.UnixMilli()})
		}
		// The client's request, with the ts each event was given (inngestSend
		// gives every event now).
		header, _ := inngestSend(d.clock.Now())
		body, _ := json.Marshal(batch)
		ids := d.intake(t, header, string(body))
		if len(ids) != views {
			t.Fatalf("%d views answered ids %v", views, ids)
		}

		queued := d.runs(t, "track-post-view")
		if len(queued) != views {
			t.Fatalf("%d scheduled views listed %d runs: %v", views, len(queued), queued)
		}
		if n := len(d.runs(t, "track-post-view", "Queued")); n != views {
			t.Errorf("GET /v1/runs?status=Queued listed %d of the %d scheduled views", n, views)
		}
		for _, r := range queued {
			var detail struct {
				Data struct {
					run
					AvailableAt *time.Time `json:"available_at"`
					Steps       []any      `json:"steps"`
				} `json:"data"`
			}
			d.admin(t, http.MethodGet, "/v1/runs/"+r.RunID, "", &detail)
			got := detail.Data
			if got.Status != "Queued" || got.AvailableAt == nil || !got.AvailableAt.Equal(time.UnixMilli(due.UnixMilli())) || len(got.Steps) != 0 {
				t.Errorf("GET /v1/runs/%s: %s, due %v, %d steps; want Queued, due %v, no step", r.RunID, got.run, got.AvailableAt, len(got.Steps), due)
			}
		}
		cancelled := queued[0].RunID
		d.admin(t, http.MethodDelete, "/v1/runs/"+cancelled, "", nil)
		d.checkViews(t, postViews{Slug: slug})

		d.clock.Advance(time.Hour)
		var done []run
		d.waitFor(t, "the scheduled views' runs", func() bool {
			done = d.runs(t, "track-post-view", "Completed")
			return len(done) >= views-1
		})
		for _, r := range done {
			if r.RunID == cancelled {
				t.Errorf("the cancelled view ran: %s", r)
			}
		}
		d.checkViews(t, postViews{Slug: slug, Total: views - 1, Last7Days: views - 1})
		if st := d.runs(t, "track-post-view", "Cancelled"); len(st) != 1 || st[0].RunID != cancelled {
			t.Errorf("cancelled runs listed: %v, want %s", st, cancelled)
		}
	})
}
