package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// viewBody is the JSON the site's view tracker posts once the reader has
// stayed on a post: the post, the tab's session, the time on the page and
// whether the tab is visible, and document.referrer.
func viewBody(slug, title, session string, timeOnPage int, referrer string) string {
	b, _ := json.Marshal(map[string]any{
		"slug": slug, "title": title, "sessionId": session, "timeOnPage": timeOnPage, "isVisible": true, "referrer": referrer,
	})
	return string(b)
}

// postViews is GET /api/views/{slug}'s answer.
type postViews struct {
	Slug      string `json:"slug"`
	Total     int64  `json:"total"`
	Last7Days int64  `json:"last7Days"`
}

// checkViews expects GET /api/views/<slug> to serve want, asked as a page
// asks it: with the slug as it is, and escaped by encodeURIComponent (a
// slug's "/" as %2F).
func (d *deployment) checkViews(t *testing.T, want postViews) {
	t.Helper()
	for _, path := range []string{"/api/views/" + want.Slug, "/api/views/" + url.PathEscape(want.Slug)} {
		var got postViews
		r := visitorN(0).get(t, d, path, "/blog/"+want.Slug)
		r.decode(t, &got)
		if r.status != http.StatusOK || got != want {
			t.Errorf("GET %s = %d %+v, want %+v", path, r.status, got, want)
		}
	}
}

// TestPostViewsFromManyVisitors has 104 different readers view one post
// and three another, through POST /api/views as the site's tracker sends
// it. Each view counts, in the totals the site serves and in the trending
// list; the 100th view reaches the milestone, whose email goes out exactly
// once; the daily summary sent afterwards is stored where the site reads
// it.
func TestPostViewsFromManyVisitors(t *testing.T) {
	t.Parallel()
	const (
		popular, popularTitle = "durable-steps", "Durable steps in one Go binary"
		quiet, quietTitle     = "notes/redis-lua", "Notes on Redis Lua"
		readers               = 104
	)
	referrers := []string{"https://news.ycombinator.com/", "", "https://www.google.com/", "https://cyberdrew.dev/blog"}
	onBothAndAPartitionedCluster(t, func(t *testing.T, d *deployment) {
		view := func(n int, slug, title string) {
			t.Helper()
			v := visitorN(n)
			session := fmt.Sprintf("sess_%s_%04d", strings.ReplaceAll(slug, "/", "-"), n)
			r := v.post(t, d, "/api/views", "/blog/"+slug, viewBody(slug, title, session, 5000+97*n, referrers[n%len(referrers)]))
			if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"recorded":true}` {
				t.Fatalf("reader %d: POST /api/views = %d %s", n, r.status, r.body)
			}
		}
		for n := range readers {
			view(n, popular, popularTitle)
		}
		for n := range 3 {
			view(readers+n, quiet, quietTitle)
		}
		// A reader's second beacon from the same tab is not a new view.
		again := visitorN(0).post(t, d, "/api/views", "/blog/"+popular, viewBody(popular, popularTitle, "sess_durable-steps_0000", 9000, ""))
		if !strings.Contains(string(again.body), `"recorded":false`) {
			t.Errorf("the same session's second view = %d %s, want recorded:false", again.status, again.body)
		}

		d.awaitRuns(t, "track-post-view", readers+3)
		for _, want := range []postViews{{popular, readers, readers}, {quiet, 3, 3}} {
			d.checkViews(t, want)
		}

		// The milestone: one event, one run, one email, whatever the
		// number of views past it.
		d.checkOneMilestone(t, popularTitle)

		// Trending, as the hourly cron computes it (invoked here).
		var inv struct {
			Data struct {
				RunIDs []string `json:"run_ids"`
			} `json:"data"`
		}
		d.admin(t, http.MethodPost, "/v1/functions/calculate-trending/invoke", "", &inv)
		if len(inv.Data.RunIDs) != 1 {
			t.Fatalf("invoke calculate-trending: runs %v", inv.Data.RunIDs)
		}
		d.awaitRuns(t, "calculate-trending", 1)
		var analytics struct {
			Trending []struct {
				Slug        string `json:"slug"`
				Title       string `json:"title"`
				Views       int64  `json:"views"`
				RecentViews int64  `json:"recentViews"`
			} `json:"trending"`
		}
		r := visitorN(1).get(t, d, "/api/analytics", "/blog")
		r.decode(t, &analytics)
		tr := analytics.Trending
		if r.status != http.StatusOK || len(tr) != 2 ||
			tr[0].Slug != popular || tr[0].Title != popularTitle || tr[0].Views != readers || tr[0].RecentViews != readers ||
			tr[1].Slug != quiet || tr[1].Views != 3 || tr[1].RecentViews != 3 {
			t.Errorf("GET /api/analytics = %d %s", r.status, r.body)
		}

		// The daily summary, as the midnight cron requests it (sent here
		// as the client sends it), stored under the key the site reads.
		today := d.clock.Now().UTC().Format(time.DateOnly)
		header, body := inngestSend(d.clock.Now(), wireEvent{
			Name: "analytics/summary.generate",
			Data: json.RawMessage(fmt.Sprintf(`{"period":"daily","startDate":%q,"endDate":%q}`, today, today)),
		})
		d.intake(t, header, body)
		d.awaitRuns(t, "generate-analytics-summary", 1)
		var summary struct {
			TotalViews     int64 `json:"totalViews"`
			UniquePosts    int64 `json:"uniquePosts"`
			UniqueVisitors int64 `json:"uniqueVisitors"`
			TopPosts       []struct {
				Slug  string `json:"slug"`
				Title string `json:"title"`
				Views int64  `json:"views"`
			} `json:"topPosts"`
			TopReferrers []struct {
				Host  string `json:"host"`
				Views int64  `json:"views"`
			} `json:"topReferrers"`
			NewMilestones []struct {
				Slug      string `json:"slug"`
				Milestone int64  `json:"milestone"`
			} `json:"newMilestones"`
		}
		stored := d.get(t, "blog:analytics:daily:"+today)
		if stored == "" {
			t.Fatalf("no summary stored at blog:analytics:daily:%s", today)
		}
		if err := json.Unmarshal([]byte(stored), &summary); err != nil {
			t.Fatalf("the stored summary %q: %v", stored, err)
		}
		hosts := func() []string {
			var hs []string
			for _, r := range summary.TopReferrers {
				hs = append(hs, r.Host)
			}
			slices.Sort(hs)
			return hs
		}()
		if summary.TotalViews != readers+3 || summary.UniquePosts != 2 || summary.UniqueVisitors != readers+3 ||
			len(summary.TopPosts) != 2 || summary.TopPosts[0].Slug != popular || summary.TopPosts[0].Title != popularTitle ||
			len(summary.NewMilestones) != 1 || summary.NewMilestones[0].Milestone != 100 ||
			!slices.Equal(hosts, []string{"cyberdrew.dev", "google.com", "news.ycombinator.com"}) {
			t.Errorf("stored summary: %s", stored)
		}
		d.everyEventHasAnID(t)
	})
}

// checkOneMilestone checks that the 100-view milestone of the post titled
// title was reached once: one event, one handle-milestone run, one email
// to the owner.
func (d *deployment) checkOneMilestone(t *testing.T, title string) {
	t.Helper()
	if ms := d.events(t, "blog/milestone.reached"); len(ms) != 1 || !strings.Contains(string(ms[0].Data), `"milestone":100`) {
		t.Fatalf("blog/milestone.reached events: %+v, want one for 100", ms)
	}
	d.awaitRuns(t, "handle-milestone", 1)
	var mail []email
	for _, e := range d.resend.to(owner) {
		if strings.Contains(e.Subject, "just passed") {
			mail = append(mail, e)
		}
	}
	if len(mail) != 1 || mail[0].Subject != title+" just passed 100 views" {
		t.Errorf("milestone emails: %s", describe(mail))
	}
}

// TestPostViewsOnTheRealClock: 104 readers view one post at once, as a
// deployed daemon sees them, on the real clock, on SQLite, Redis and a
// Redis Cluster (where the Redis store reads
// a counter right after committing the steps that wrote it in one round
// trip, and the fake clock of the other tests takes another path). Every
// view counts, and the 100th reaches the milestone once: one event, one
// email.
func TestPostViewsOnTheRealClock(t *testing.T) {
	t.Parallel()
	const (
		slug, title = "real-clock", "Views on the real clock"
		readers     = 104
	)
	for _, backend := range append(slices.Clone(backends), "cluster", "cluster-partitioned") {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			d := deploy(t, backend, clockwork.NewRealClock())
			var wg sync.WaitGroup
			for n := range readers {
				wg.Go(func() {
					session := fmt.Sprintf("sess_real_%04d", n)
					r := visitorN(n).post(t, d, "/api/views", "/blog/"+slug, viewBody(slug, title, session, 5000+n, ""))
					if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"recorded":true}` {
						t.Errorf("reader %d: POST /api/views = %d %s", n, r.status, r.body)
					}
				})
			}
			wg.Wait()
			// A reader's second beacon from the same tab is not a new view.
			again := visitorN(3).post(t, d, "/api/views", "/blog/"+slug, viewBody(slug, title, "sess_real_0003", 9000, ""))
			if !strings.Contains(string(again.body), `"recorded":false`) {
				t.Errorf("the same session's second view = %d %s, want recorded:false", again.status, again.body)
			}
			d.awaitRuns(t, "track-post-view", readers)
			d.checkViews(t, postViews{slug, readers, readers})
			d.checkOneMilestone(t, title)
		})
	}
}

// TestPostViewsOnARedisCluster runs the site's view counting on a Redis
// Cluster of three masters: readers post their views through
// /api/views as the site's tracker does, and each counts, in what
// GET /api/views serves and in the key the website reads with its own
// cluster client.
func TestPostViewsOnARedisCluster(t *testing.T) {
	t.Parallel()
	const slug, title, readers = "durable-steps", "Durable steps in one Go binary", 12
	d := deploy(t, "cluster", clockwork.NewFakeClockAt(epoch))
	for n := range readers {
		session := fmt.Sprintf("sess_cluster_%04d", n)
		r := visitorN(n).post(t, d, "/api/views", "/blog/"+slug, viewBody(slug, title, session, 5000+n, ""))
		if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"recorded":true}` {
			t.Fatalf("reader %d: POST /api/views = %d %s", n, r.status, r.body)
		}
	}
	d.awaitRuns(t, "track-post-view", readers)
	d.checkViews(t, postViews{slug, readers, readers})
	if v := d.get(t, clusterSitePrefix+"views:post:"+slug); v != strconv.Itoa(readers) {
		t.Errorf("the website's cluster client reads %q from the views key, want %d", v, readers)
	}
}

// TestVisitorsCannotRenameAPost: POST /api/views is public, and its body
// carries the post's title, so any visitor could rename any post on the
// analytics page, in the summaries and in the milestone emails by sending
// a view with another title. The title of a post's first view is
// remembered; a later view's title is ignored.
func TestVisitorsCannotRenameAPost(t *testing.T) {
	t.Parallel()
	const slug, title, spam = "my-first-post", "My first post", "Buy cheap pills at spam.example"
	onBoth(t, func(t *testing.T, d *deployment) {
		for n, claimed := range []string{title, spam, spam} {
			session := fmt.Sprintf("sess_rename_%04d", n)
			r := visitorN(n).post(t, d, "/api/views", "/blog/"+slug, viewBody(slug, claimed, session, 6000, ""))
			if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"recorded":true}` {
				t.Fatalf("view %d: POST /api/views = %d %s", n, r.status, r.body)
			}
		}
		d.awaitRuns(t, "track-post-view", 3)
		d.checkViews(t, postViews{slug, 3, 3})
		var inv struct {
			Data struct {
				RunIDs []string `json:"run_ids"`
			} `json:"data"`
		}
		d.admin(t, http.MethodPost, "/v1/functions/calculate-trending/invoke", "", &inv)
		d.awaitRuns(t, "calculate-trending", 1)
		r := visitorN(9).get(t, d, "/api/analytics", "/blog")
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"title":"`+title+`"`) || strings.Contains(string(r.body), "spam") {
			t.Errorf("GET /api/analytics = %d %s, want the post under its first title", r.status, r.body)
		}
		if got := d.get(t, "blog:post:"+slug+":title"); got != title {
			t.Errorf("the remembered title = %q, want %q", got, title)
		}
	})
}

// TestViewRegionIsACountryCode sends views through the reverse proxy with
// the country header Vercel or Cloudflare sets, and with what a visitor
// writes there when the proxy passes the client's own header on: only a
// country code is stored with the view.
func TestViewRegionIsACountryCode(t *testing.T) {
	t.Parallel()
	onBoth(t, func(t *testing.T, d *deployment) {
		for n, region := range []string{"DE", "<script>alert(1)</script>", "zz"} {
			h := visitorN(n).header("/blog/regions")
			h.Set("CF-IPCountry", region)
			if r := d.do(t, http.MethodPost, "/api/views", h, viewBody("regions", "", fmt.Sprintf("sess_region_%04d", n), 6000, "")); r.status != http.StatusOK {
				t.Fatalf("view from %q = %d %s", region, r.status, r.body)
			}
		}
		d.awaitRuns(t, "track-post-view", 3)
		var events struct {
			Data []struct {
				Data struct {
					Region *string `json:"region"`
				} `json:"data"`
			} `json:"data"`
		}
		d.admin(t, http.MethodGet, "/v1/events?name=blog%2Fpost.viewed", "", &events)
		var regions []string
		for _, e := range events.Data {
			if e.Data.Region != nil {
				regions = append(regions, *e.Data.Region)
			}
		}
		if len(events.Data) != 3 || !slices.Equal(regions, []string{"DE"}) {
			t.Errorf("%d views stored with regions %q, want 3 with only DE", len(events.Data), regions)
		}
	})
}
