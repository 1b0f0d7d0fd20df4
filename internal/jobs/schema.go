package jobs

import (
	"encoding/json"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// Event names of the site (JOBS.md).
const (
	EventHelloWorld       = "test/hello.world"
	EventContactSubmitted = "contact/form.submitted"
	EventEmailSent        = "contact/email.sent"
	EventEmailFailed      = "contact/email.failed"
	// What Resend's webhooks report after the send (internal/webhooks).
	EventEmailDelivered       = "contact/email.delivered"
	EventEmailBounced         = "contact/email.bounced"
	EventEmailComplained      = "contact/email.complained"
	EventEmailDeliveryDelayed = "contact/email.delivery_delayed"
	EventGitHubRefresh        = "github/data.refresh"
	EventPostViewed           = "blog/post.viewed"
	EventMilestoneReached     = "blog/milestone.reached"
	EventSummaryGenerate      = "analytics/summary.generate"
)

// Milestones are the view counts that earn a blog/milestone.reached event.
var Milestones = []int64{100, 1000, 10000, 50000, 100000}

// Summary periods.
const (
	PeriodDaily   = "daily"
	PeriodWeekly  = "weekly"
	PeriodMonthly = "monthly"
)

// dateLayout is the UTC day format of every date in keys and events.
const dateLayout = "2006-01-02"

// maxSummaryDays bounds the span of one analytics summary.
const maxSummaryDays = 366

var slugPattern = regexp.MustCompile(`^[a-z0-9\-_/]{1,200}$`)

// ValidSlug reports whether s is a post slug: 1–200 of [a-z0-9-_/].
func ValidSlug(s string) bool { return slugPattern.MatchString(s) }

// ValidEmail reports whether s is one plain address (no display name) of at
// most 254 characters, without CR or LF.
func ValidEmail(s string) bool {
	if s == "" || len(s) > 254 || strings.ContainsAny(s, "\r\n") {
		return false
	}
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && a.Name == "" && strings.Contains(s[strings.LastIndexByte(s, '@')+1:], ".")
}

// fields reads an event's data object for the schema checks.
type fields map[string]json.RawMessage

// problem is a failed check: the field (relative to data) and why.
type problem struct{ field, reason string }

func fail(field, format string, args ...any) *problem {
	return &problem{field: field, reason: fmt.Sprintf(format, args...)}
}

// str reads an optional string; present reports whether the key was there.
func (d fields) str(key string) (s string, present bool, p *problem) {
	raw, ok := d[key]
	if !ok || string(raw) == "null" {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true, fail(key, "must be a string, got %s", raw)
	}
	return s, true, nil
}

// required reads a required string and checks it with check (nil: non-empty).
func (d fields) required(key string, check func(string) string) *problem {
	s, present, p := d.str(key)
	switch {
	case p != nil:
		return p
	case !present:
		return fail(key, "is required")
	case s == "":
		return fail(key, "must not be empty")
	}
	if check != nil {
		if reason := check(s); reason != "" {
			return fail(key, "%s", reason)
		}
	}
	return nil
}

// optional checks an optional string with check when present.
func (d fields) optional(key string, check func(string) string) *problem {
	s, present, p := d.str(key)
	if p != nil || !present || check == nil {
		return p
	}
	if reason := check(s); reason != "" {
		return fail(key, "%s", reason)
	}
	return nil
}

func (d fields) optionalBool(key string) *problem {
	raw, ok := d[key]
	if !ok || string(raw) == "null" {
		return nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return fail(key, "must be a boolean, got %s", raw)
	}
	return nil
}

func (d fields) integer(key string, check func(int64) string) *problem {
	raw, ok := d[key]
	if !ok || string(raw) == "null" {
		return fail(key, "is required")
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return fail(key, "must be a whole number, got %s", raw)
	}
	if check != nil {
		if reason := check(n); reason != "" {
			return fail(key, "%s", reason)
		}
	}
	return nil
}

func first(ps ...*problem) *problem {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

func lengthBetween(lo, hi int) func(string) string {
	return func(s string) string {
		if n := utf8.RuneCountInString(strings.TrimSpace(s)); n < lo || n > hi {
			return fmt.Sprintf("must be %d to %d characters after trimming, got %d", lo, hi, n)
		}
		return ""
	}
}

func emailCheck(s string) string {
	if !ValidEmail(strings.TrimSpace(s)) {
		return "must be a valid email address of at most 254 characters"
	}
	return ""
}

func rfc3339(s string) string {
	if _, err := time.Parse(time.RFC3339, s); err != nil {
		return "must be an RFC 3339 time, as in 2025-01-02T15:04:05Z"
	}
	return ""
}

func dateCheck(s string) string {
	if _, err := time.Parse(dateLayout, s); err != nil {
		return "must be a date YYYY-MM-DD"
	}
	return ""
}

func slugCheck(s string) string {
	if !ValidSlug(s) {
		return "must be 1 to 200 characters of a-z, 0-9, -, _ and /"
	}
	return ""
}

func oneOf(values ...string) func(string) string {
	return func(s string) string {
		for _, v := range values {
			if s == v {
				return ""
			}
		}
		return "must be one of " + strings.Join(values, ", ")
	}
}

// schemas check the data of the site's known events at intake, so a
// malformed event is refused with a 400 naming the field instead of failing
// a run later. Unknown event names pass unchecked. The first failing field,
// in the order of JOBS.md's table, is reported.
var schemas = map[string]func(d fields) *problem{
	EventHelloWorld: func(d fields) *problem { return d.required("email", nil) },
	EventContactSubmitted: func(d fields) *problem {
		return first(
			d.required("name", lengthBetween(2, 1000)),
			d.required("email", emailCheck),
			d.required("message", lengthBetween(10, 1000)),
			d.required("submittedAt", rfc3339),
			d.optional("ip", nil),
		)
	},
	EventEmailSent:            emailResult,
	EventEmailFailed:          emailResult,
	EventEmailDelivered:       emailResult,
	EventEmailBounced:         emailResult,
	EventEmailComplained:      emailResult,
	EventEmailDeliveryDelayed: emailResult,
	EventGitHubRefresh: func(d fields) *problem {
		return first(d.optionalBool("manual"), d.optionalBool("force"))
	},
	EventPostViewed: func(d fields) *problem {
		return first(
			d.required("slug", slugCheck),
			d.optional("title", nil),
			d.optional("viewedAt", rfc3339),
			d.optional("referrer", nil),
			d.optional("region", nil),
			d.optional("visitor", nil),
		)
	},
	EventMilestoneReached: func(d fields) *problem {
		return first(
			d.required("slug", slugCheck),
			d.required("title", nil),
			d.integer("milestone", func(n int64) string {
				for _, m := range Milestones {
					if n == m {
						return ""
					}
				}
				return "must be one of 100, 1000, 10000, 50000, 100000"
			}),
			d.integer("totalViews", func(n int64) string {
				if n < 0 {
					return "must not be negative"
				}
				return ""
			}),
			d.required("reachedAt", rfc3339),
		)
	},
	EventSummaryGenerate: func(d fields) *problem {
		if p := first(
			d.required("period", oneOf(PeriodDaily, PeriodWeekly, PeriodMonthly)),
			d.required("startDate", dateCheck),
			d.required("endDate", dateCheck),
		); p != nil {
			return p
		}
		start, end := d.date("startDate"), d.date("endDate")
		switch {
		case end.Before(start):
			return fail("endDate", "must not be before startDate")
		case int(end.Sub(start).Hours()/24)+1 > maxSummaryDays:
			return fail("endDate", "must be at most %d days after startDate", maxSummaryDays-1)
		}
		return nil
	},
}

func emailResult(d fields) *problem {
	return first(
		d.required("email", nil),
		d.required("type", oneOf("notification", "confirmation")),
		d.optional("messageId", nil),
		d.optional("error", nil),
		d.optional("runId", nil),
		d.optional("at", rfc3339),
	)
}

// date reads a key already checked by dateCheck.
func (d fields) date(key string) time.Time {
	s, _, _ := d.str(key)
	t, _ := time.Parse(dateLayout, s)
	return t
}

// Validate is the engine's intake validator for the site's events.
func Validate(index int, ev engine.IncomingEvent) error {
	check, ok := schemas[ev.Name]
	if !ok {
		return nil
	}
	var data fields
	if len(ev.Data) > 0 && string(ev.Data) != "null" {
		if err := json.Unmarshal(ev.Data, &data); err != nil {
			return &engine.ValidationError{Index: index, Field: "data", Reason: "must be an object"}
		}
	}
	if p := check(data); p != nil {
		return &engine.ValidationError{Index: index, Field: "data." + p.field, Reason: p.reason}
	}
	return nil
}
