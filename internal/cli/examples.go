package cli

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/dcyfr/cyberdrew/internal/jobs"
)

// siteEvents are the site's known events with a sample payload each, for
// send --example and for completion. Each sample passes the intake schema.
var siteEvents = map[string]func(now time.Time) map[string]any{
	jobs.EventHelloWorld: func(time.Time) map[string]any {
		return map[string]any{"email": "drew@example.com"}
	},
	jobs.EventContactSubmitted: func(now time.Time) map[string]any {
		return map[string]any{
			"name": "Drew", "email": "drew@example.com",
			"message": "Hello from the cyberdrew command line!", "submittedAt": now.Format(time.RFC3339),
		}
	},
	jobs.EventEmailSent: func(time.Time) map[string]any {
		return map[string]any{"email": "drew@example.com", "type": "confirmation", "messageId": "example-message-id"}
	},
	jobs.EventEmailFailed: func(time.Time) map[string]any {
		return map[string]any{"email": "drew@example.com", "type": "notification", "error": "example failure"}
	},
	jobs.EventEmailDelivered:       deliveryExample,
	jobs.EventEmailBounced:         deliveryExample,
	jobs.EventEmailComplained:      deliveryExample,
	jobs.EventEmailDeliveryDelayed: deliveryExample,
	jobs.EventGitHubRefresh: func(time.Time) map[string]any {
		return map[string]any{"manual": true, "force": true}
	},
	jobs.EventPostViewed: func(now time.Time) map[string]any {
		return map[string]any{
			"slug": "hello-world", "title": "Hello, world", "viewedAt": now.Format(time.RFC3339),
			"referrer": "https://news.ycombinator.com/", "region": "US", "visitor": "cli-example",
		}
	},
	jobs.EventMilestoneReached: func(now time.Time) map[string]any {
		return map[string]any{
			"slug": "hello-world", "title": "Hello, world", "milestone": 100, "totalViews": 100,
			"reachedAt": now.Format(time.RFC3339),
		}
	},
	jobs.EventSummaryGenerate: func(now time.Time) map[string]any {
		day := now.AddDate(0, 0, -1).Format(time.DateOnly)
		return map[string]any{"period": jobs.PeriodDaily, "startDate": day, "endDate": day}
	},
}

// deliveryExample is the data of a delivery event the Resend webhook
// reports.
func deliveryExample(now time.Time) map[string]any {
	return map[string]any{
		"email": "drew@example.com", "type": "confirmation", "messageId": "example-message-id",
		"runId": "01JEXAMPLERUN0000000000000", "at": now.Format(time.RFC3339),
	}
}

// siteEventNames are the known event names, sorted.
func siteEventNames() []string {
	names := make([]string, 0, len(siteEvents))
	for n := range siteEvents {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// examplePayload is the sample data of a known event; ok is false for
// others.
func examplePayload(name string, now time.Time) (json.RawMessage, bool) {
	f, ok := siteEvents[name]
	if !ok {
		return nil, false
	}
	b, _ := json.Marshal(f(now.UTC()))
	return b, true
}
