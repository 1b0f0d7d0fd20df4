package e2e

import (
	"net/http"
	"testing"
	"time"
)

// TestGitHubContributionsMissThenServed has three visitors open the page
// with the contribution heatmap before anything is cached: each is told to
// come back (503 with Retry-After), and their misses start one refresh
// between them (debounced), which asks GitHub once. The next visitor is
// served the calendar from the cache.
func TestGitHubContributionsMissThenServed(t *testing.T) {
	t.Parallel()
	const path = "/api/github-contributions?username=" + githubUser
	onBoth(t, func(t *testing.T, d *deployment) {
		for n := range 3 {
			r := visitorN(n).get(t, d, path, "/")
			var body struct {
				Error string `json:"error"`
			}
			r.decode(t, &body)
			if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || body.Error == "" {
				t.Fatalf("visitor %d on a cold cache: %d Retry-After %q %s", n, r.status, r.header.Get("Retry-After"), r.body)
			}
		}
		if runs := d.runs(t, "manual-refresh-github-data"); len(runs) != 1 {
			t.Fatalf("three misses started %d refresh runs, want one (debounced): %+v", len(runs), runs)
		}
		if asked := d.github.asked(); len(asked) != 0 {
			t.Fatalf("GitHub was asked %v before the debounce period passed", asked)
		}
		d.clock.Advance(5 * time.Second) // the debounce period
		d.awaitRuns(t, "manual-refresh-github-data", 1)
		if asked := d.github.asked(); len(asked) != 1 || asked[0] != githubUser {
			t.Errorf("GitHub was asked %v, want one query for %s", asked, githubUser)
		}

		r := visitorN(3).get(t, d, path, "/")
		var got struct {
			Contributions []struct {
				Date  string `json:"date"`
				Count int    `json:"count"`
			} `json:"contributions"`
			Source             string `json:"source"`
			TotalContributions int    `json:"totalContributions"`
			LastUpdated        string `json:"lastUpdated"`
		}
		r.decode(t, &got)
		if r.status != http.StatusOK || got.TotalContributions != 7 || len(got.Contributions) != 2 ||
			got.Contributions[1].Date != "2025-03-11" || got.Contributions[1].Count != 5 || got.Source != "github-api" {
			t.Fatalf("the next visitor: %d %s", r.status, r.body)
		}
		if lu, err := time.Parse(time.RFC3339Nano, got.LastUpdated); err != nil || !lu.Equal(d.clock.Now()) {
			t.Errorf("lastUpdated %q, want the refresh's time %s", got.LastUpdated, d.clock.Now())
		}
		if cc := r.header.Get("Cache-Control"); cc != "public, s-maxage=300, stale-while-revalidate=600" {
			t.Errorf("Cache-Control %q", cc)
		}
		if got := r.header.Get("Access-Control-Allow-Origin"); got != siteOrigin {
			t.Errorf("Access-Control-Allow-Origin %q, want %q", got, siteOrigin)
		}
		d.everyEventHasAnID(t)
	})
}
