//go:build chaos

package daemon_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// The view-counter chaos tests send blog/post.viewed as the site does (one
// event per request to /e, no id, no ts) for a few slugs while the daemons
// are SIGKILLed at least chaosKills times, then read each slug's count on
// the public page route: it must equal the views stored, and its total the
// sum of its days. A request cut by a kill may or may not have stored its
// event, so each event carries a unique visitor and the stored events are
// counted after the fact; every acknowledged one must be among them.
const (
	viewSlugs   = 4
	viewSenders = 8
)

func TestChaosViewsSQLite(t *testing.T) {
	dir := t.TempDir()
	runViewChaos(t, dir, 1, "--lease", chaosLease.String(), "--workers", "16")
}

func TestChaosViewsRedis(t *testing.T) {
	srv := redistest.StartT(t, true) // appendonly yes, appendfsync always
	dir := t.TempDir()
	runViewChaos(t, dir, 2, "--store", "redis://"+srv.Addr, "--lease", chaosLease.String(), "--workers", "16")
}

func runViewChaos(t *testing.T, dir string, n int, args ...string) {
	started := time.Now()
	f := &fleet{killed: map[string]bool{}}
	for range n {
		f.members = append(f.members, spawnServe(t, dir, "site", args...))
	}
	slug := func(i int) string { return fmt.Sprintf("chaos-%d", i) }

	var (
		mu    sync.Mutex
		acked = map[string]string{} // visitor -> slug
		cut   = 0                   // requests that got no answer
	)
	stop := make(chan struct{})
	var senders sync.WaitGroup
	for s := range viewSenders {
		senders.Go(func() {
			cl := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				visitor := fmt.Sprintf("v%d-%d", s, i)
				sl := slug(rand.IntN(viewSlugs))
				body := fmt.Sprintf(`{"name":"blog/post.viewed","data":{"slug":%q,"visitor":%q}}`, sl, visitor)
				res, err := cl.Post(f.pick()+"/e/k", "application/json", bytes.NewReader([]byte(body)))
				if err != nil {
					mu.Lock()
					cut++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond) // the daemon is restarting
					continue
				}
				res.Body.Close()
				mu.Lock()
				if res.StatusCode == http.StatusOK {
					acked[visitor] = sl
				} else {
					cut++
				}
				mu.Unlock()
			}
		})
	}

	for kills := 0; kills < chaosKills; {
		time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
		victims := []int{rand.IntN(n)}
		if n > 1 && rand.IntN(3) == 0 {
			victims = []int{0, 1}
		}
		for _, i := range victims {
			f.mu.Lock()
			old := f.members[i]
			f.mu.Unlock()
			old.cmd.Process.Kill()
			old.cmd.Wait()
			kills++
			next := spawnServe(t, dir, "site", args...)
			f.mu.Lock()
			f.killed[fmt.Sprint(old.cmd.Process.Pid)] = true
			f.members[i] = next
			f.mu.Unlock()
		}
	}
	close(stop)
	senders.Wait()
	t.Logf("%d kills, %d views acknowledged, %d requests cut, in %v", chaosKills, len(acked), cut, time.Since(started).Round(time.Millisecond))

	// The events the daemons stored, by visitor.
	c := client{t: t, base: f.pick()}
	stored := map[string]string{}
	cursor := ""
	for {
		var page struct {
			Data []struct {
				Data struct {
					Slug    string `json:"slug"`
					Visitor string `json:"visitor"`
				} `json:"data"`
			} `json:"data"`
			Cursor string `json:"cursor"`
		}
		if code := c.do("GET", "/v1/events?name=blog/post.viewed&limit=1000&cursor="+cursor, "", &page); code != 200 {
			t.Fatalf("list events: %d", code)
		}
		for _, e := range page.Data {
			stored[e.Data.Visitor] = e.Data.Slug
		}
		if page.Cursor == "" {
			break
		}
		cursor = page.Cursor
	}
	want := map[string]int64{}
	for _, sl := range stored {
		want[sl]++
	}
	for v, sl := range acked {
		if stored[v] != sl {
			t.Errorf("acknowledged view %s of %s was not stored", v, sl)
		}
	}

	// Wait for every run to complete.
	deadline := time.Now().Add(60 * time.Second)
	for {
		all := listRuns(c, "function=track-post-view")
		pending := 0
		for _, st := range all {
			if st != "Completed" {
				pending++
			}
		}
		if pending == 0 && len(all) >= len(stored) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d track-post-view runs not completed after the last kill", pending, len(all))
		}
		time.Sleep(250 * time.Millisecond)
	}

	for i := range viewSlugs {
		sl := slug(i)
		var got struct {
			Total     int64 `json:"total"`
			Last7Days int64 `json:"last7Days"`
		}
		if code := c.do("GET", "/api/views/"+sl, "", &got); code != 200 {
			t.Fatalf("GET /api/views/%s: %d", sl, code)
		}
		if got.Total != want[sl] {
			t.Errorf("%s: total = %d, want %d (the views stored; off by %+d)", sl, got.Total, want[sl], got.Total-want[sl])
		}
		if got.Last7Days != got.Total {
			t.Errorf("%s: last7Days = %d, total = %d: the days do not sum to the total", sl, got.Last7Days, got.Total)
		}
		t.Logf("%s: total %d, last7Days %d, stored %d", sl, got.Total, got.Last7Days, want[sl])
	}

	// Each milestone a post's total passed was announced once: by the run
	// whose view made it, even when that run was cut off after counting
	// and executed again on its next lease.
	var page struct {
		Data []struct {
			Data struct {
				Slug      string `json:"slug"`
				Milestone int64  `json:"milestone"`
			} `json:"data"`
		} `json:"data"`
	}
	if code := c.do("GET", "/v1/events?name=blog/milestone.reached&limit=1000", "", &page); code != 200 {
		t.Fatalf("list milestone events: %d", code)
	}
	announced := map[string]int{}
	for _, e := range page.Data {
		announced[fmt.Sprintf("%s:%d", e.Data.Slug, e.Data.Milestone)]++
	}
	wantAnnounced := 0
	for i := range viewSlugs {
		sl := slug(i)
		for _, m := range jobs.Milestones {
			if m > want[sl] {
				continue
			}
			wantAnnounced++
			if n := announced[fmt.Sprintf("%s:%d", sl, m)]; n != 1 {
				t.Errorf("%s: milestone %d announced %d times, want once (total %d)", sl, m, n, want[sl])
			}
		}
	}
	if len(page.Data) != wantAnnounced {
		t.Errorf("%d milestone events, want %d: %v", len(page.Data), wantAnnounced, announced)
	}
}
