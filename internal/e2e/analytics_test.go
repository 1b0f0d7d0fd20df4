package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/jonboulle/clockwork"
)

// envChromium set to "required" makes a missing chromium a failure
// instead of a skip (.ci/run sets it).
const envChromium = "CYBERDREW_TEST_CHROMIUM"

// chromium is the path of Debian's chromium package; it skips the test
// loudly without it, or fails it when envChromium is "required".
func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		msg := "no chromium to load the analytics page in: " + err.Error() + " (apt-get install chromium)"
		if os.Getenv(envChromium) == "required" {
			t.Fatalf("%s=required but %s", envChromium, msg)
		}
		t.Skipf("SKIPPING THE BROWSER TEST: %s, or set %s=required to make this fatal", msg, envChromium)
	}
	return path
}

// browser starts a headless chromium with a fresh profile and nothing that
// reaches the network on its own, and returns a tab's context; the
// browser ends with the test.
func browser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1000, 900),
	}
	// The deadline only guards against a hang.
	ctx, cancelTimeout := context.WithTimeout(context.Background(), 2*waitGuard)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tab, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancelTimeout()
	})
	return tab
}

// TestAnalyticsPageInChromium loads the public analytics page of a real
// daemon in headless chromium after 30 days of views: 29 past days sent as
// the site's server sends blog/post.viewed (the official client's request,
// each view with its viewedAt), and today's through POST /api/views as
// readers' browsers send them. The page loads without a console error;
// the chart has one bar per day whose drawn height is proportional to the
// day's views; the table that is the chart's text alternative lists every
// day. A screenshot, light and dark, is kept in the test's artifact
// directory (go test -artifacts keeps it; see the README).
func TestAnalyticsPageInChromium(t *testing.T) {
	t.Parallel()
	path := chromium(t)
	d := deploy(t, "sqlite", clockwork.NewFakeClockAt(epoch))

	posts := []struct{ slug, title string }{
		{"durable-steps", "Durable steps in one Go binary"},
		{"notes/redis-lua", "Notes on Redis Lua"},
		{"cron-that-never-misses", "A cron that never misses a tick"},
	}
	referrers := []string{"https://news.ycombinator.com/item?id=1", "https://www.google.com/", "", "https://lobste.rs/s/x"}
	const days = 30
	counts := make([]int, days) // oldest first; the last is today
	for i := range counts {
		counts[i] = (i * 7) % 10
	}
	counts[days-1] = 4
	today := d.clock.Now().UTC()
	var past []wireEvent
	for i, n := range counts[:days-1] {
		day := time.Date(today.Year(), today.Month(), today.Day(), 8, 0, 0, 0, time.UTC).AddDate(0, 0, i-(days-1))
		for k := range n {
			p := posts[k%len(posts)]
			data, _ := json.Marshal(map[string]any{
				"slug": p.slug, "title": p.title, "viewedAt": day.Add(time.Duration(k) * time.Minute).Format(time.RFC3339),
				"referrer": referrers[k%len(referrers)], "visitor": fmt.Sprintf("v%02d%02d", i, k),
			})
			past = append(past, wireEvent{Name: "blog/post.viewed", Data: data})
		}
	}
	header, body := inngestSend(d.clock.Now(), past...)
	d.intake(t, header, body)
	for n := range counts[days-1] {
		p := posts[n%len(posts)]
		r := visitorN(n).post(t, d, "/api/views", "/blog/"+p.slug, viewBody(p.slug, p.title, fmt.Sprintf("sess_analytics_%04d", n), 6000, referrers[0]))
		if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"recorded":true}` {
			t.Fatalf("reader %d: POST /api/views = %d %s", n, r.status, r.body)
		}
	}
	total, peak := 0, 0
	for _, n := range counts {
		total, peak = total+n, max(peak, n)
	}
	d.awaitRuns(t, "track-post-view", total)
	d.admin(t, http.MethodPost, "/v1/functions/calculate-trending/invoke", `{}`, nil)
	d.awaitRuns(t, "calculate-trending", 1)

	tab := browser(t, path)
	// The console's messages, in order, up to the marker the test logs
	// last: every message of the page's load comes before it.
	const marker = "cyberdrew-test: end of the page's messages"
	var problems []string
	collected := make(chan struct{})
	messages := chromedp.Console(tab)
	go func() {
		defer close(collected)
		for m, err := range messages {
			if err != nil {
				problems = append(problems, "console: "+err.Error())
				return
			}
			if m.Text == marker {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.Type == chromedp.ConsoleException {
				problems = append(problems, fmt.Sprintf("%s: %s (%s)", m.Type, m.Text, m.URL))
			}
		}
	}()

	type drawn struct {
		Date   string  `json:"date"`
		Views  int     `json:"views"`
		Height float64 `json:"height"`
	}
	start := time.Now()
	if err := chromedp.Do(tab, chromedp.Navigate(d.base+"/analytics"), chromedp.WaitVisible(chromedp.ID("daily-chart"))); err != nil {
		t.Fatalf("chromium: load the page: %v", err)
	}
	bars, err := chromedp.Run(tab, chromedp.Evaluate[[]drawn](`[...document.querySelectorAll('#daily-chart rect.bar')].map(r => ({date: r.dataset.date, views: Number(r.dataset.views), height: r.getBoundingClientRect().height}))`))
	if err != nil {
		t.Fatalf("chromium: measure the bars: %v", err)
	}
	rows, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll('#daily-table tbody tr').length`))
	if err != nil {
		t.Fatalf("chromium: count the table's rows: %v", err)
	}
	totalText, err := chromedp.Run(tab, chromedp.TextContent(chromedp.ID("total-views")))
	if err != nil {
		t.Fatalf("chromium: read the total: %v", err)
	}
	labelled, err := chromedp.Run(tab, chromedp.AttributeValue(chromedp.ID("daily-chart"), "aria-labelledby"))
	if err != nil {
		t.Fatalf("chromium: read the chart's label: %v", err)
	}
	light, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("chromium: screenshot: %v", err)
	}
	if _, err := chromedp.Call(tab, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	}); err != nil {
		t.Fatalf("chromium: dark mode: %v", err)
	}
	dark, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("chromium: dark screenshot: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.Evaluate[chromedp.Void](`console.log(`+strconv.Quote(marker)+`)`)); err != nil {
		t.Fatalf("chromium: log the marker: %v", err)
	}
	<-collected
	t.Logf("chromium loaded, measured and shot the page in %s", time.Since(start).Round(time.Millisecond))

	dir := t.ArtifactDir()
	for name, png := range map[string][]byte{"analytics.png": light, "analytics-dark.png": dark} {
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", filepath.Join(dir, name))
	}

	if len(problems) > 0 {
		t.Errorf("the page logged problems in chromium:\n%s", strings.Join(problems, "\n"))
	}
	if len(bars) != days {
		t.Fatalf("the chart draws %d bars, want one per day, %d", len(bars), days)
	}
	var tallest float64
	for _, b := range bars {
		tallest = max(tallest, b.Height)
	}
	if tallest < 100 {
		t.Errorf("the tallest bar is %.1f px high, want a readable chart", tallest)
	}
	for i, b := range bars {
		date := today.AddDate(0, 0, i-(days-1)).Format("2006-01-02")
		want := tallest * float64(counts[i]) / float64(peak)
		if b.Date != date || b.Views != counts[i] || math.Abs(b.Height-want) > 0.5 {
			t.Errorf("bar %d: %s, %d views, %.2f px high; want %s, %d views, %.2f px", i, b.Date, b.Views, b.Height, date, counts[i], want)
		}
	}
	if rows != days {
		t.Errorf("the chart's table lists %d days, want %d", rows, days)
	}
	if strings.TrimSpace(totalText) != fmt.Sprint(total) {
		t.Errorf("total views shown %q, want %d", totalText, total)
	}
	if labelled.Value != "chart-title chart-desc" {
		t.Errorf("the chart is labelled by %q, want its title and description", labelled.Value)
	}
}
