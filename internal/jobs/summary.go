package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// SummaryRequest is the data of analytics/summary.generate.
type SummaryRequest struct {
	Period    string `json:"period"`
	StartDate string `json:"startDate"`
	EndDate   string `json:"endDate"`
}

// Summary is an analytics report, stored at blog:analytics:<period>:<start>.
type Summary struct {
	Period         string          `json:"period"`
	StartDate      string          `json:"startDate"`
	EndDate        string          `json:"endDate"`
	TotalViews     int64           `json:"totalViews"`
	UniquePosts    int             `json:"uniquePosts"`
	UniqueVisitors int             `json:"uniqueVisitors"`
	TopPosts       []PostCount     `json:"topPosts"`
	TopReferrers   []ReferrerCount `json:"topReferrers"`
	NewMilestones  []Milestone     `json:"newMilestones"`
	Trending       []TrendingPost  `json:"trending"`
}

// PostCount is a post's views in a period.
type PostCount struct {
	Slug  string `json:"slug"`
	Title string `json:"title"`
	Views int64  `json:"views"`
}

// ReferrerCount is the views a referrer host brought in a period.
type ReferrerCount struct {
	Host  string `json:"host"`
	Views int64  `json:"views"`
}

// Milestone is a milestone reached in a period.
type Milestone struct {
	Slug      string `json:"slug"`
	Title     string `json:"title"`
	Milestone int64  `json:"milestone"`
	Date      string `json:"date"`
}

// collected is the output of collect-data: the raw counts of the period.
type collected struct {
	Posts          map[string]int64  `json:"posts"`
	Titles         map[string]string `json:"titles"`
	Referrers      map[string]int64  `json:"referrers"`
	UniqueVisitors int               `json:"uniqueVisitors"`
	Milestones     []Milestone       `json:"milestones"`
	Trending       []TrendingPost    `json:"trending"`
}

// GenerateAnalyticsSummary builds and stores a report for a period.
func GenerateAnalyticsSummary(d Deps) engine.Function {
	keys := Keys{Prefix: d.Config.Prefix}
	return engine.Function{
		ID:       "generate-analytics-summary",
		Name:     "Generate analytics summary",
		Triggers: []engine.Trigger{{Event: EventSummaryGenerate}},
		Retries:  retries(1),
		Handler: func(ctx context.Context, run *engine.Run) (any, error) {
			var req SummaryRequest
			if err := json.Unmarshal(run.Event.Data, &req); err != nil {
				return nil, engine.NonRetriable(fmt.Errorf("generate-analytics-summary: %w", err))
			}
			start, err1 := time.Parse(dateLayout, req.StartDate)
			end, err2 := time.Parse(dateLayout, req.EndDate)
			if err := errors.Join(err1, err2); err != nil || end.Before(start) || end.Sub(start) > maxSummaryDays*24*time.Hour {
				return nil, engine.NonRetriable(errors.New("generate-analytics-summary: startDate and endDate must be dates, start ≤ end, at most 366 days"))
			}
			data, err := engine.Step(ctx, run, "collect-data", func(ctx context.Context) (collected, error) {
				return collect(ctx, d.KV, keys, start, end)
			})
			if err != nil {
				return nil, err
			}
			summary, err := engine.Step(ctx, run, "generate-summary", func(ctx context.Context) (Summary, error) {
				return summarize(req, data), nil
			})
			if err != nil {
				return nil, err
			}
			if _, err := engine.StepStore(ctx, run, "store-summary", func(ctx context.Context, kv *store.Tx) (string, error) {
				if !WholePeriod(req.Period, start, end) {
					// Another range (an ad-hoc report of the command line)
					// is not stored: its key names the period starting that
					// day, which the site reads.
					return "", nil
				}
				body, _ := json.Marshal(summary)
				key := keys.Summary(req.Period, req.StartDate)
				if err := kv.Set(ctx, key, string(body), summaryTTL); err != nil {
					return "", fmt.Errorf("store summary: %w", err)
				}
				return key, nil
			}); err != nil {
				return nil, err
			}
			return summary, nil
		},
	}
}

// collect reads the per-day analytics of [start, end].
func collect(ctx context.Context, kv KVReader, keys Keys, start, end time.Time) (collected, error) {
	c := collected{Posts: map[string]int64{}, Titles: map[string]string{}, Referrers: map[string]int64{}, Milestones: []Milestone{}, Trending: []TrendingPost{}}
	visitors := map[string]struct{}{}
	for day := start; !day.After(end); day = day.AddDate(0, 0, 1) {
		date := day.Format(dateLayout)
		slugs, err := kv.SetMembers(ctx, keys.DayPosts(date))
		if err != nil {
			return c, fmt.Errorf("posts of %s: %w", date, err)
		}
		for _, slug := range slugs {
			n, err := readCount(ctx, kv, keys.PostDayViews(slug, date))
			if err != nil {
				return c, err
			}
			c.Posts[slug] += n
		}
		vs, err := kv.SetMembers(ctx, keys.DayVisitors(date))
		if err != nil {
			return c, fmt.Errorf("visitors of %s: %w", date, err)
		}
		for _, v := range vs {
			visitors[v] = struct{}{}
		}
		hosts, err := kv.SetMembers(ctx, keys.DayReferrers(date))
		if err != nil {
			return c, fmt.Errorf("referrers of %s: %w", date, err)
		}
		for _, h := range hosts {
			n, err := readCount(ctx, kv, keys.DayReferrer(date, h))
			if err != nil {
				return c, err
			}
			c.Referrers[h] += n
		}
		ms, err := kv.SetMembers(ctx, keys.DayMilestones(date))
		if err != nil {
			return c, fmt.Errorf("milestones of %s: %w", date, err)
		}
		for _, m := range ms {
			slug, n, ok := strings.Cut(m, "|")
			var value int64
			if _, err := fmt.Sscan(n, &value); !ok || err != nil {
				continue
			}
			c.Milestones = append(c.Milestones, Milestone{Slug: slug, Milestone: value, Date: date})
		}
	}
	c.UniqueVisitors = len(visitors)
	for slug := range c.Posts {
		t, err := readTitle(ctx, kv, keys, slug)
		if err != nil {
			return c, err
		}
		c.Titles[slug] = t
	}
	for i, m := range c.Milestones {
		t, err := readTitle(ctx, kv, keys, m.Slug)
		if err != nil {
			return c, err
		}
		c.Milestones[i].Title = t
	}
	trending, err := kv.Get(ctx, keys.Trending())
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return c, fmt.Errorf("read trending: %w", err)
	default:
		if err := json.Unmarshal([]byte(trending), &c.Trending); err != nil {
			return c, fmt.Errorf("decode trending: %w", err)
		}
	}
	return c, nil
}

// summarize turns the collected counts into the report.
func summarize(req SummaryRequest, c collected) Summary {
	s := Summary{
		Period: req.Period, StartDate: req.StartDate, EndDate: req.EndDate,
		UniqueVisitors: c.UniqueVisitors, TopPosts: []PostCount{}, TopReferrers: []ReferrerCount{},
		NewMilestones: c.Milestones, Trending: c.Trending,
	}
	for slug, n := range c.Posts {
		s.TotalViews += n
		if n > 0 {
			s.UniquePosts++
			s.TopPosts = append(s.TopPosts, PostCount{Slug: slug, Title: c.Titles[slug], Views: n})
		}
	}
	sort.Slice(s.TopPosts, func(i, j int) bool {
		a, b := s.TopPosts[i], s.TopPosts[j]
		return a.Views > b.Views || (a.Views == b.Views && a.Slug < b.Slug)
	})
	s.TopPosts = s.TopPosts[:min(len(s.TopPosts), summaryTopSize)]
	s.TopReferrers = rankReferrers(c.Referrers, summaryTopSize)
	sort.Slice(s.NewMilestones, func(i, j int) bool {
		a, b := s.NewMilestones[i], s.NewMilestones[j]
		if a.Date != b.Date {
			return a.Date < b.Date
		}
		if a.Slug != b.Slug {
			return a.Slug < b.Slug
		}
		return a.Milestone < b.Milestone
	})
	return s
}

// SummaryPeriod is the period a summary cron tick at t reports on: the
// previous day, the previous Monday–Sunday, or the previous month.
func SummaryPeriod(period string, t time.Time) (start, end time.Time) {
	t = t.UTC()
	today := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch period {
	case PeriodWeekly:
		sinceMonday := (int(today.Weekday()) + 6) % 7
		thisMonday := today.AddDate(0, 0, -sinceMonday)
		return thisMonday.AddDate(0, 0, -7), thisMonday.AddDate(0, 0, -1)
	case PeriodMonthly:
		first := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return first.AddDate(0, -1, 0), first.AddDate(0, 0, -1)
	default:
		y := today.AddDate(0, 0, -1)
		return y, y
	}
}

// PeriodFrom is the period of the kind period that starts on the day of
// t: that day, the seven days from it, or the month from it (to the day
// before the same date next month). From a Monday, or the 1st, it is the
// calendar week or month SummaryPeriod gives, the ones stored.
func PeriodFrom(period string, t time.Time) (start, end time.Time) {
	t = t.UTC()
	start = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch period {
	case PeriodWeekly:
		return start, start.AddDate(0, 0, 6)
	case PeriodMonthly:
		return start, start.AddDate(0, 1, -1)
	default:
		return start, start
	}
}

// WholePeriod reports whether start..end is one calendar period of the
// kind period, as the cron jobs request them: a day, a week from a Monday
// to a Sunday, a month from its 1st to its last day.
func WholePeriod(period string, start, end time.Time) bool {
	s, e := PeriodFrom(period, start)
	switch {
	case !s.Equal(start) || !e.Equal(end):
		return false
	case period == PeriodWeekly:
		return start.Weekday() == time.Monday
	case period == PeriodMonthly:
		return start.Day() == 1
	}
	return true
}

// DailyAnalyticsSummary requests yesterday's summary at midnight UTC.
func DailyAnalyticsSummary() engine.Function {
	return summaryCron("daily-analytics-summary", "Daily analytics summary", "0 0 * * *", PeriodDaily)
}

// WeeklyAnalyticsSummary requests the previous week's summary on Mondays.
func WeeklyAnalyticsSummary() engine.Function {
	return summaryCron("weekly-analytics-summary", "Weekly analytics summary", "0 0 * * 1", PeriodWeekly)
}

// MonthlyAnalyticsSummary requests the previous month's summary on the 1st.
func MonthlyAnalyticsSummary() engine.Function {
	return summaryCron("monthly-analytics-summary", "Monthly analytics summary", "0 0 1 * *", PeriodMonthly)
}

// summaryCron sends analytics/summary.generate for the period before the
// tick. The tick is the timer event's scheduled_at (an invoke may pass one
// too); without it, the event's receipt time.
func summaryCron(id, name, spec, period string) engine.Function {
	return engine.Function{
		ID:       id,
		Name:     name,
		Triggers: []engine.Trigger{{Cron: spec}},
		Handler: func(ctx context.Context, run *engine.Run) (any, error) {
			tick := run.Event.ReceivedAt
			var timer struct {
				ScheduledAt string `json:"scheduled_at"`
			}
			if json.Unmarshal(run.Event.Data, &timer) == nil && timer.ScheduledAt != "" {
				t, err := time.Parse(time.RFC3339, timer.ScheduledAt)
				if err != nil {
					// An invoke's mistyped time must not summarise another
					// period without a word.
					return nil, engine.NonRetriable(fmt.Errorf("%s: scheduled_at %q: want an RFC 3339 time", id, timer.ScheduledAt))
				}
				tick = t
			}
			start, end := SummaryPeriod(period, tick)
			req := SummaryRequest{Period: period, StartDate: start.Format(dateLayout), EndDate: end.Format(dateLayout)}
			data, _ := json.Marshal(req)
			if _, err := run.SendEvent(ctx, "request-summary", engine.IncomingEvent{
				ID: "summary:" + period + ":" + req.StartDate, Name: EventSummaryGenerate, Data: data,
			}); err != nil {
				return nil, err
			}
			return req, nil
		},
	}
}
