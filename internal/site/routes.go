package site

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// Limits of the routes (JOBS.md).
const (
	maxBody          = 64 << 10
	maxField         = 1000
	minTimeOnPage    = 5000 // ms
	sessionWindow    = 30 * time.Minute
	minUserAgent     = 10
	maxDailyDays     = 90
	defaultDailyDays = 7
	defaultSiteDays  = 30
	refreshRetry     = "30"
)

// contactOK is the contact route's success answer, also given to bots
// caught by the honeypot.
var contactOK = map[string]any{"success": true, "message": "Message received successfully. You'll receive a confirmation email shortly."}

// readJSON decodes a JSON object body into a map: at most maxBody bytes
// (413 beyond), UTF-8, one object and nothing after it. JSON, text/plain
// (what navigator.sendBeacon sends) or no Content-Type are accepted.
func readJSON(w http.ResponseWriter, r *http.Request) (map[string]any, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			err = errors.New("charset")
		}
		if err != nil || (mt != "application/json" && mt != "text/plain") {
			return nil, fail(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		}
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return nil, fail(http.StatusRequestEntityTooLarge, "Request body too large")
	}
	if err != nil || !utf8.Valid(raw) {
		return nil, fail(http.StatusBadRequest, "Invalid JSON body")
	}
	var body map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&body); err != nil || body == nil || dec.More() {
		return nil, fail(http.StatusBadRequest, "Invalid JSON body")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fail(http.StatusBadRequest, "Invalid JSON body")
	}
	return body, nil
}

// printable reports whether s holds no control character; newlines and
// tabs pass when multiline.
func printable(s string, multiline bool) bool {
	return strings.IndexFunc(s, func(c rune) bool {
		return unicode.IsControl(c) && !(multiline && (c == '\n' || c == '\r' || c == '\t'))
	}) < 0
}

// mistyped returns the first of fields (name, then "string", "number" or
// "bool") whose value in body is there, not null, and of another JSON
// type, or "" when none is: a field of the wrong type is a malformed
// request (400 naming it), not a value to read as empty.
func mistyped(body map[string]any, fields ...[2]string) string {
	for _, f := range fields {
		v, ok := body[f[0]]
		if !ok || v == nil {
			continue
		}
		var right bool
		switch f[1] {
		case "string":
			_, right = v.(string)
		case "number":
			_, right = v.(float64)
		case "bool":
			_, right = v.(bool)
		}
		if !right {
			return f[0]
		}
	}
	return ""
}

// str reads a string field; anything else reads as "".
func str(body map[string]any, key string) string {
	s, _ := body[key].(string)
	return s
}

// cut keeps the first n characters of s.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// contact takes the contact form, in JOBS.md's order: rate limit, JSON,
// honeypot, required fields, email, trim and cut, lengths, then the event.
func (s *Server) contact(w http.ResponseWriter, r *http.Request) error {
	ip := s.clientIP(r)
	if err := s.contactLimit.allow(w, r, limitKey(ip)); err != nil {
		return err
	}
	body, err := readJSON(w, r)
	if err != nil {
		return err
	}
	if f := mistyped(body, [2]string{"name", "string"}, [2]string{"email", "string"}, [2]string{"message", "string"},
		[2]string{"website", "string"}); f != "" {
		return fail(http.StatusBadRequest, "Invalid "+f)
	}
	if strings.TrimSpace(str(body, "website")) != "" {
		writeJSON(w, http.StatusOK, contactOK)
		return nil
	}
	name, email, message := strings.TrimSpace(str(body, "name")), strings.TrimSpace(str(body, "email")), strings.TrimSpace(str(body, "message"))
	if name == "" || email == "" || message == "" {
		return fail(http.StatusBadRequest, "All fields are required")
	}
	if !jobs.ValidEmail(email) {
		return fail(http.StatusBadRequest, "Invalid email address")
	}
	// A name reaches the emails' headers; a form's one-line input cannot
	// hold a control character, so one is refused rather than stripped.
	if !printable(name, false) {
		return fail(http.StatusBadRequest, "Name must not hold control characters")
	}
	if !printable(message, true) {
		return fail(http.StatusBadRequest, "Message must not hold control characters")
	}
	name, message = strings.TrimSpace(cut(name, maxField)), strings.TrimSpace(cut(message, maxField))
	if utf8.RuneCountInString(name) < 2 {
		return fail(http.StatusBadRequest, "Name must be at least 2 characters")
	}
	if utf8.RuneCountInString(message) < 10 {
		return fail(http.StatusBadRequest, "Message must be at least 10 characters")
	}
	data, _ := json.Marshal(jobs.ContactSubmission{
		Name: name, Email: email, Message: message,
		SubmittedAt: s.clock.Now().UTC().Format(time.RFC3339), IP: ip.String(),
	})
	if err := s.publish(r, jobs.EventContactSubmitted, data); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, contactOK)
	return nil
}

func (s *Server) publish(r *http.Request, name string, data []byte) error {
	_, err := s.pub.Publish(r.Context(), []engine.IncomingEvent{{Name: name, Data: data}})
	var ve *engine.ValidationError
	if errors.As(err, &ve) {
		return fail(http.StatusBadRequest, ve.Error())
	}
	return err
}

var (
	sessionPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{10,100}$`)
	botPattern     = regexp.MustCompile(`(?i)bot|crawl|spider|slurp|headless|phantom|lighthouse|preview|curl|wget|python|httpclient|go-http-client|java/|axios|node-fetch|scrapy|facebookexternalhit|monitor`)
)

// views records a post view, in JOBS.md's order.
func (s *Server) views(w http.ResponseWriter, r *http.Request) error {
	body, err := readJSON(w, r)
	if err != nil {
		return err
	}
	if f := mistyped(body, [2]string{"slug", "string"}, [2]string{"sessionId", "string"}, [2]string{"isVisible", "bool"},
		[2]string{"timeOnPage", "number"}, [2]string{"title", "string"}, [2]string{"referrer", "string"}); f != "" {
		return fail(http.StatusBadRequest, "Invalid "+f)
	}
	slug := str(body, "slug")
	if !jobs.ValidSlug(slug) {
		return fail(http.StatusBadRequest, "Invalid slug")
	}
	session := str(body, "sessionId")
	if !sessionPattern.MatchString(session) {
		return fail(http.StatusBadRequest, "Invalid sessionId")
	}
	if visible, _ := body["isVisible"].(bool); !visible {
		writeJSON(w, http.StatusOK, map[string]any{"recorded": false, "reason": "not visible"})
		return nil
	}
	ua := r.UserAgent()
	if len(strings.TrimSpace(ua)) < minUserAgent || botPattern.MatchString(ua) {
		return fail(http.StatusBadRequest, "Invalid user agent")
	}
	if ms, _ := body["timeOnPage"].(float64); ms < minTimeOnPage {
		writeJSON(w, http.StatusOK, map[string]any{"recorded": false, "reason": "too short"})
		return nil
	}
	ip := s.clientIP(r)
	if err := s.viewsLimit.allow(w, r, limitKey(ip)); err != nil {
		return err
	}
	first, err := s.kv.SetNX(r.Context(), s.cfg.Prefix+"views:session:"+session+":"+slug, "1", sessionWindow)
	if err != nil {
		return err
	}
	if !first {
		writeJSON(w, http.StatusOK, map[string]any{"recorded": false, "reason": "already counted"})
		return nil
	}
	now := s.clock.Now().UTC()
	visitor, err := s.visitor(r.Context(), ip, ua, now.Format("2006-01-02"))
	if err != nil {
		return err
	}
	if err := s.rememberTitle(r.Context(), slug, strings.TrimSpace(cut(str(body, "title"), 200))); err != nil {
		return err
	}
	ev := jobs.PostViewed{
		Slug: slug, ViewedAt: now.Format(time.RFC3339),
		Referrer: cut(str(body, "referrer"), 500), Visitor: visitor,
	}
	if s.trusted(peer(r)) {
		ev.Region = countryCode(firstHeader(r, "X-Vercel-IP-Country", "CF-IPCountry"))
	}
	data, _ := json.Marshal(ev)
	if err := s.publish(r, jobs.EventPostViewed, data); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"recorded": true})
	return nil
}

var githubLogin = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,38}$`)

// contributions serves the cached contribution calendar; on a miss it
// starts a refresh, when one can run, and answers 503, never invented data.
func (s *Server) contributions(w http.ResponseWriter, r *http.Request) error {
	if err := s.githubLimit.allow(w, r, limitKey(s.clientIP(r))); err != nil {
		return err
	}
	user := r.URL.Query().Get("username")
	switch {
	case user == "":
		return fail(http.StatusBadRequest, "Username parameter is required")
	case !githubLogin.MatchString(user):
		return fail(http.StatusBadRequest, "Invalid username")
	case !strings.EqualFold(user, s.cfg.GitHubUser):
		return fail(http.StatusForbidden, "Only the site owner's contributions are served")
	}
	c, err := jobs.ReadContributions(r.Context(), s.kv, s.keys.GitHubContributions(s.cfg.GitHubUser))
	if errors.Is(err, store.ErrNotFound) {
		if s.cfg.RefreshDisabled != "" {
			return fail(http.StatusServiceUnavailable, "Contributions are not cached, and refreshes are disabled on this server: "+s.cfg.RefreshDisabled)
		}
		if err := s.publish(r, jobs.EventGitHubRefresh, []byte(`{"manual":true}`)); err != nil {
			return err
		}
		w.Header().Set("Retry-After", refreshRetry)
		return fail(http.StatusServiceUnavailable, "Contributions are not cached yet; a refresh has started")
	}
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "public, s-maxage=300, stale-while-revalidate=600")
	writeJSON(w, http.StatusOK, c)
	return nil
}

// analytics serves the trending list.
func (s *Server) analytics(w http.ResponseWriter, r *http.Request) error {
	trending, err := s.trending(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"trending": trending})
	return nil
}

// trending reads the list calculate-trending stores; empty before its
// first run.
func (s *Server) trending(r *http.Request) ([]jobs.TrendingPost, error) {
	trending := []jobs.TrendingPost{}
	raw, err := s.kv.Get(r.Context(), s.keys.Trending())
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal([]byte(raw), &trending); err != nil {
			return nil, err
		}
	}
	return trending, nil
}

// siteTraffic serves the site-wide aggregates: total views, views of every
// post per day for the last days (today included, oldest first), and the
// top referrer hosts of those days.
func (s *Server) siteTraffic(w http.ResponseWriter, r *http.Request) error {
	days, err := daysParam(r, defaultSiteDays)
	if err != nil {
		return err
	}
	t, err := jobs.ReadSiteTraffic(r.Context(), s.kv, s.keys, s.clock.Now(), days)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

// daysParam reads the days query parameter: 1 to maxDailyDays, def when
// absent.
func daysParam(r *http.Request, def int) (int, error) {
	v := r.URL.Query().Get("days")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxDailyDays {
		return 0, fail(http.StatusBadRequest, "days must be a whole number from 1 to 90")
	}
	return n, nil
}

// dayCount is one day of a post's views.
type dayCount struct {
	Date  string `json:"date"`
	Views int64  `json:"views"`
}

// daily serves a post's views per day for the last days (today included),
// oldest first.
func (s *Server) daily(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	slug := q.Get("slug")
	if !jobs.ValidSlug(slug) {
		return fail(http.StatusBadRequest, "Invalid slug")
	}
	days, err := daysParam(r, defaultDailyDays)
	if err != nil {
		return err
	}
	counts, err := s.lastDays(r, slug, days)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"slug": slug, "days": counts})
	return nil
}

// postViews serves a post's total and its last seven days.
func (s *Server) postViews(w http.ResponseWriter, r *http.Request) error {
	slug := r.PathValue("slug")
	if !jobs.ValidSlug(slug) {
		return fail(http.StatusBadRequest, "Invalid slug")
	}
	total, err := s.count(r, s.keys.PostViews(slug))
	if err != nil {
		return err
	}
	counts, err := s.lastDays(r, slug, 7)
	if err != nil {
		return err
	}
	var week int64
	for _, c := range counts {
		week += c.Views
	}
	writeJSON(w, http.StatusOK, map[string]any{"slug": slug, "total": total, "last7Days": week})
	return nil
}

func (s *Server) lastDays(r *http.Request, slug string, days int) ([]dayCount, error) {
	now := s.clock.Now().UTC()
	out := make([]dayCount, days)
	for i := range days {
		date := now.AddDate(0, 0, i-days+1).Format("2006-01-02")
		n, err := s.count(r, s.keys.PostDayViews(slug, date))
		if err != nil {
			return nil, err
		}
		out[i] = dayCount{Date: date, Views: n}
	}
	return out, nil
}

func (s *Server) count(r *http.Request, key string) (int64, error) {
	v, err := s.kv.Get(r.Context(), key)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// rememberTitle keeps the title a view gives its post when the post has
// none yet (set-if-absent), and the view's event carries no title: this
// route is public, and a visitor must not rename a post whose title shows
// on the analytics page, in the summaries and in the milestone emails. The
// owner retitles a post with a blog/post.viewed event carrying the new
// title, sent to the event API, which takes its key (track-post-view
// writes an event's title over the remembered one).
func (s *Server) rememberTitle(ctx context.Context, slug, title string) error {
	if title == "" {
		return nil
	}
	key := s.keys.PostTitle(slug)
	// A read first: once a post has its title (every view but its first
	// few), a view costs no write.
	switch _, err := s.kv.Get(ctx, key); {
	case err == nil:
		return nil
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	_, err := s.kv.SetNX(ctx, key, title, 0)
	return err
}

// countryCode is v when it is a country code as Vercel and Cloudflare set
// it (two letters, or Cloudflare's XX and T1), else "": a proxy that
// passes the client's own header on (nginx does) lets a visitor write
// anything there.
func countryCode(v string) string {
	if len(v) != 2 || v[0] < 'A' || v[0] > 'Z' || !(v[1] >= 'A' && v[1] <= 'Z' || v[1] >= '0' && v[1] <= '9') {
		return ""
	}
	return v
}

// limitKey is whose bucket a client's requests count in: its IPv4 address,
// or its IPv6 address's /64, since one subscriber is given a whole /64 and
// could take a fresh bucket with each of its addresses.
func limitKey(ip netip.Addr) string {
	if ip.Is6() && !ip.Is4In6() {
		return netip.PrefixFrom(ip, 64).Masked().String()
	}
	return ip.String()
}
