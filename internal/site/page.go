package site

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"

	"github.com/dcyfr/cyberdrew/internal/jobs"
)

// The public analytics page (docs/site.md): server-rendered, no script,
// built from the same reads as /api/analytics and /api/analytics/site.
const (
	// pageDays is the page's window: one bar per day.
	pageDays = 30
	// pageMaxAge is how long browsers and proxies may keep the page.
	pageMaxAge = 60
	// pageCSP allows the page's own inline style sheet and nothing else:
	// no script, no frame, no form, no outside resource.
	pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

// The chart's geometry, in SVG user units: bars side by side with a gap,
// the tallest reaching chartTop, labels under the baseline.
const (
	chartWidth  = 600
	chartHeight = 220
	chartTop    = 10
	chartBase   = 200
	chartGap    = 4
)

//go:embed pages/analytics.html.tmpl
var pageFiles embed.FS

var analyticsPage = template.Must(template.ParseFS(pageFiles, "pages/analytics.html.tmpl"))

// pageData is what the analytics page shows.
type pageData struct {
	Site         jobs.Brand
	TotalViews   string
	WindowViews  string
	Days         []jobs.DayViews
	First, Today string
	Chart        chart
	Trending     []jobs.TrendingPost
	TopReferrers []jobs.ReferrerCount
}

// chart is the inline SVG bar chart of views per day.
type chart struct {
	Width, Height, Baseline int
	Bars                    []bar
	Summary                 string
}

// bar is one day's rectangle; its height is proportional to its views,
// the busiest day's reaching the top.
type bar struct {
	X, Y, Width, Height string
	Date                string
	Views               int64
}

// newChart lays out one bar per day.
func newChart(days []jobs.DayViews) chart {
	c := chart{Width: chartWidth, Height: chartHeight, Baseline: chartBase}
	var peak jobs.DayViews
	for _, d := range days {
		if d.Views > peak.Views {
			peak = d
		}
	}
	step := float64(chartWidth) / float64(max(len(days), 1))
	for i, d := range days {
		h := 0.0
		if peak.Views > 0 {
			h = float64(d.Views) / float64(peak.Views) * (chartBase - chartTop)
		}
		c.Bars = append(c.Bars, bar{
			X: num(float64(i)*step + chartGap/2), Y: num(chartBase - h),
			Width: num(step - chartGap), Height: num(h),
			Date: d.Date, Views: d.Views,
		})
	}
	if peak.Views == 0 {
		c.Summary = fmt.Sprintf("No views in these %d days.", len(days))
	} else {
		c.Summary = fmt.Sprintf("One bar per day, %d days; the busiest, %s, had %s views.", len(days), peak.Date, jobs.GroupDigits(peak.Views))
	}
	return c
}

// num writes an SVG length with two decimals.
func num(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }

// page serves the analytics page: HTML, cacheable for pageMaxAge seconds,
// with an ETag of its body, so a revalidation that finds it unchanged is a
// 304 without a body.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	bounded, cancel := s.storeBound(r)
	body, err := s.renderPage(bounded)
	cancel()
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case r.Context().Err() != nil:
			// The client is gone: nobody reads an answer, and writing none
			// counts the request as 499, not as the daemon's 500.
			return
		case s.unavailable(r, err):
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "1")
		default:
			s.log.Error("analytics page failed", "err", err)
		}
		http.Error(w, http.StatusText(status), status)
		return
	}
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	h := w.Header()
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(pageMaxAge))
	h.Set("ETag", etag)
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// etagMatches reports whether an If-None-Match header names etag (weak
// comparison, as RFC 9110 asks for GET) or is *.
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// renderPage reads the page's data and renders it.
func (s *Server) renderPage(r *http.Request) ([]byte, error) {
	trending, err := s.trending(r)
	if err != nil {
		return nil, err
	}
	traffic, err := jobs.ReadSiteTraffic(r.Context(), s.kv, s.keys, s.clock.Now(), pageDays)
	if err != nil {
		return nil, err
	}
	var window int64
	for _, d := range traffic.Days {
		window += d.Views
	}
	data := pageData{
		Site:        jobs.DefaultBrand,
		TotalViews:  jobs.GroupDigits(traffic.TotalViews),
		WindowViews: jobs.GroupDigits(window),
		Days:        traffic.Days,
		First:       traffic.Days[0].Date, Today: traffic.Days[len(traffic.Days)-1].Date,
		Chart:        newChart(traffic.Days),
		Trending:     trending,
		TopReferrers: traffic.TopReferrers,
	}
	var b bytes.Buffer
	if err := analyticsPage.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("analytics page: %w", err)
	}
	return b.Bytes(), nil
}
