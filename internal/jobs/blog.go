package jobs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// Retention of the blog analytics data.
const (
	// highVolumeRetention is how long the completed runs of the site's
	// frequent functions (every view, every cron tick) are kept.
	highVolumeRetention = 24 * time.Hour
	dayDataTTL          = 90 * 24 * time.Hour
	trendingTTL         = 2 * time.Hour
	summaryTTL          = 90 * 24 * time.Hour
	// trendingWindow is how many days, today included, count as recent.
	trendingWindow = 7
	trendingSize   = 10
	summaryTopSize = 10
)

// PostViewed is the data of blog/post.viewed.
type PostViewed struct {
	Slug     string `json:"slug"`
	Title    string `json:"title,omitempty"`
	ViewedAt string `json:"viewedAt,omitempty"`
	Referrer string `json:"referrer,omitempty"`
	Region   string `json:"region,omitempty"`
	Visitor  string `json:"visitor,omitempty"`
}

// MilestoneReached is the data of blog/milestone.reached.
type MilestoneReached struct {
	Slug       string `json:"slug"`
	Title      string `json:"title"`
	Milestone  int64  `json:"milestone"`
	TotalViews int64  `json:"totalViews"`
	ReachedAt  string `json:"reachedAt"`
}

// TrackPostView counts a view of a post: its total, its day, the day's
// referrer, region and visitor, and claims each milestone the total passed.
func TrackPostView(d Deps) engine.Function {
	keys := Keys{Prefix: d.Config.Prefix}
	return engine.Function{
		ID:       "track-post-view",
		Name:     "Track post view",
		Triggers: []engine.Trigger{{Event: EventPostViewed}},
		Retries:  retries(4),
		// One run per page view: a day of them is plenty to look into.
		Retention: highVolumeRetention,
		Handler: func(ctx context.Context, run *engine.Run) (any, error) {
			var ev PostViewed
			if err := json.Unmarshal(run.Event.Data, &ev); err != nil || !ValidSlug(ev.Slug) {
				return nil, engine.NonRetriable(errors.New("track-post-view: data.slug is missing or invalid"))
			}
			viewedAt := run.Event.ReceivedAt
			if t, err := time.Parse(time.RFC3339, ev.ViewedAt); err == nil {
				viewedAt = t
			}
			date := viewedAt.UTC().Format(dateLayout)

			// The post's total is counted by StepIncr: the increment and
			// its result are recorded together, so the view counts once
			// and this run knows the exact total its view made, with no
			// read before or after, and views of one post never conflict
			// over it. Only the view that made the total M can reach the
			// milestone M.
			//
			// The day's counters are incremented blindly too (docs/site.md).
			// track-daily-views and check-milestones touch only the store
			// (StepStore): their records and writes commit with the
			// run's finish (or with emit-milestones).
			total, err := engine.StepIncr(ctx, run, "increment-views", keys.PostViews(ev.Slug), 1, 0)
			if err != nil {
				return nil, err
			}
			if _, err := engine.StepStore(ctx, run, "track-daily-views", func(ctx context.Context, kv *store.Tx) (tracked, error) {
				return true, trackDay(ctx, kv, keys, ev, date)
			}); err != nil {
				return nil, err
			}
			check, err := engine.StepStore(ctx, run, "check-milestones", func(ctx context.Context, kv *store.Tx) (claimed, error) {
				reached, err := claimMilestones(ctx, kv, keys, ev.Slug, run.ID, date, total-1, total)
				c := claimed{Total: total, Reached: reached}
				if err == nil && len(reached) > 0 && ev.Title == "" {
					c.Title, err = kv.GetUnchecked(ctx, keys.PostTitle(ev.Slug))
					if errors.Is(err, store.ErrNotFound) {
						err = nil
					}
				}
				return c, err
			})
			if err != nil {
				return nil, err
			}
			if check.Total == 0 {
				check.Total = total // recorded by an earlier release, without it
			}
			title := cmp.Or(ev.Title, check.Title, ev.Slug)
			reached := check.Reached
			if len(reached) > 0 {
				evs := make([]engine.IncomingEvent, len(reached))
				for i, m := range reached {
					data, _ := json.Marshal(MilestoneReached{
						Slug: ev.Slug, Title: title, Milestone: m, TotalViews: check.Total,
						ReachedAt: viewedAt.UTC().Format(time.RFC3339),
					})
					evs[i] = engine.IncomingEvent{ID: "milestone:" + ev.Slug + ":" + itoa(m), Name: EventMilestoneReached, Data: data}
				}
				if _, err := run.SendEvent(ctx, "emit-milestones", evs...); err != nil {
					return nil, err
				}
			}
			return map[string]any{"slug": ev.Slug, "total": check.Total, "date": date, "milestones": reached}, nil
		},
	}
}

// tracked is track-daily-views' recorded output: true. It reads the
// output an earlier release recorded for the step too (the day's views, a
// number), so that a view whose run was cut short across an upgrade
// finishes instead of failing (docs/engine.md, "Upgrades").
type tracked bool

func (t *tracked) UnmarshalJSON([]byte) error {
	*t = true // whatever it recorded, the step is done
	return nil
}

// claimed is check-milestones' recorded output.
type claimed struct {
	Total   int64   `json:"total"`
	Reached []int64 `json:"reached"`
	// Title is the post's remembered title, read when a milestone is
	// reached by a view that carries none (the site's route passes a title
	// on a post's first view only).
	Title string `json:"title,omitempty"`
}

// UnmarshalJSON reads claimed, or what an earlier release recorded for the
// step: the milestones it claimed, a list (its total is the run's own
// then; docs/engine.md, "Upgrades").
func (c *claimed) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		*c = claimed{}
		return json.Unmarshal(b, &c.Reached)
	}
	type plain claimed
	return json.Unmarshal(b, (*plain)(c))
}

// trackDay counts the view in its day and remembers the title, the
// referrer host, the region and the visitor for the summaries. It reads
// nothing: every write is blind (the title a plain Set), so views of one
// post, and views of different posts over the day's shared keys, never
// conflict.
func trackDay(ctx context.Context, tx *store.Tx, keys Keys, ev PostViewed, date string) error {
	if ev.Title != "" {
		if err := tx.Set(ctx, keys.PostTitle(ev.Slug), ev.Title, 0); err != nil {
			return fmt.Errorf("remember title: %w", err)
		}
	}
	if err := tx.SetAddBlind(ctx, keys.DayPosts(date), dayDataTTL, ev.Slug); err != nil {
		return fmt.Errorf("day posts: %w", err)
	}
	if ev.Visitor != "" {
		if err := tx.SetAddBlind(ctx, keys.DayVisitors(date), dayDataTTL, ev.Visitor); err != nil {
			return fmt.Errorf("day visitors: %w", err)
		}
	}
	if host := ReferrerHost(ev.Referrer); host != "" {
		if err := tx.SetAddBlind(ctx, keys.DayReferrers(date), dayDataTTL, host); err != nil {
			return fmt.Errorf("day referrers: %w", err)
		}
		if err := tx.IncrByBlind(ctx, keys.DayReferrer(date, host), 1, dayDataTTL); err != nil {
			return fmt.Errorf("referrer count: %w", err)
		}
	}
	if region := cleanLabel(ev.Region); region != "" {
		if err := tx.SetAddBlind(ctx, keys.DayRegions(date), dayDataTTL, region); err != nil {
			return fmt.Errorf("day regions: %w", err)
		}
		if err := tx.IncrByBlind(ctx, keys.DayRegion(date, region), 1, dayDataTTL); err != nil {
			return fmt.Errorf("region count: %w", err)
		}
	}
	if err := tx.IncrByBlind(ctx, keys.PostDayViews(ev.Slug, date), 1, dayDataTTL); err != nil {
		return fmt.Errorf("day views: %w", err)
	}
	return nil
}

// claimMilestones claims each milestone M the view reached: previous <
// M <= total (JOBS.md), where total is the value the view's own increment
// left and previous the value before it, both exact (engine.StepIncr).
// A claim is the key set-if-absent to the run id (absent only the first
// time: a run executed again, or a total made again after the counter
// was reset, finds it), with the day's milestones. The claim's read is
// checked, so it commits with its record only while the key is still
// absent. It returns the milestones this run claimed.
func claimMilestones(ctx context.Context, tx *store.Tx, keys Keys, slug, runID, date string, previous, total int64) ([]int64, error) {
	reached := []int64{}
	for _, m := range Milestones {
		if m <= previous || m > total {
			continue
		}
		ok, err := tx.SetNX(ctx, keys.MilestoneClaim(slug, m), runID, 0)
		if err != nil {
			return nil, fmt.Errorf("claim milestone %d: %w", m, err)
		}
		if !ok {
			continue
		}
		if err := tx.SetAddBlind(ctx, keys.DayMilestones(date), dayDataTTL, slug+"|"+itoa(m)); err != nil {
			return nil, fmt.Errorf("record milestone %d: %w", m, err)
		}
		reached = append(reached, m)
	}
	return reached, nil
}

// ReferrerHost is the host of a referrer URL ("" when none), lower case,
// without "www.", as the day's referrer keys name it.
func ReferrerHost(ref string) string {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return ""
	}
	if !strings.Contains(ref, "://") {
		ref = "https://" + ref
	}
	u, err := url.Parse(ref)
	if err != nil {
		return ""
	}
	return cleanLabel(strings.TrimPrefix(strings.ToLower(u.Hostname()), "www."))
}

// cleanLabel keeps a short key-safe label: at most 100 characters, no
// colons, spaces or control characters.
func cleanLabel(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r == ':' || r == '|' || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// groupDigits writes n with thousands separators: 1000 → "1,000".
func groupDigits(n int64) string {
	s := itoa(n)
	if n < 0 {
		return "-" + groupDigits(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// HandleMilestone logs a milestone and tells the author: an email to the
// owner and, when configured, a Slack-compatible webhook.
func HandleMilestone(d Deps) engine.Function {
	return engine.Function{
		ID:       "handle-milestone",
		Name:     "Handle milestone",
		Triggers: []engine.Trigger{{Event: EventMilestoneReached}},
		Handler: func(ctx context.Context, run *engine.Run) (any, error) {
			var ev MilestoneReached
			if err := json.Unmarshal(run.Event.Data, &ev); err != nil || ev.Slug == "" {
				return nil, engine.NonRetriable(errors.New("handle-milestone: malformed event data"))
			}
			title := ev.Title
			if title == "" {
				title = ev.Slug
			}
			text := fmt.Sprintf("%s just passed %s views", title, groupDigits(ev.Milestone))
			if _, err := engine.Step(ctx, run, "log-milestone", func(ctx context.Context) (string, error) {
				run.Logger().Info("milestone reached", "slug", ev.Slug, "milestone", ev.Milestone, "total_views", ev.TotalViews)
				return text, nil
			}); err != nil {
				return nil, err
			}
			return engine.Step(ctx, run, "notify-author", func(ctx context.Context) (map[string]any, error) {
				email, err := d.Templates.Render(MailMilestone, Email{
					From: d.Config.ContactFrom, To: []string{d.Config.ContactTo}, Subject: text,
					IdempotencyKey: idempotencyKey(run, "notify-author"),
				}, MilestoneMail{
					Site: d.Config.Site, Title: title, Slug: ev.Slug, Milestone: groupDigits(ev.Milestone),
					Total: groupDigits(ev.TotalViews), ReachedAt: ev.ReachedAt, PostURL: d.Config.Site.URL + "/blog/" + ev.Slug,
				})
				if err != nil {
					return nil, engine.NonRetriable(err)
				}
				sent, err := d.Mailer.Send(ctx, email)
				if err != nil {
					return nil, err
				}
				out := map[string]any{"email": sent}
				if d.Config.MilestoneWebhook != "" {
					if err := postWebhook(ctx, d, map[string]string{"text": slackEscape(text)}); err != nil {
						return nil, err
					}
					out["webhook"] = "posted"
				}
				return out, nil
			})
		},
	}
}

// slackEscape escapes the three characters Slack's message text reserves
// for its own markup (<, >, &), so a post title shows as written.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace

// TrendingPost is one entry of blog:trending.
type TrendingPost struct {
	Slug        string  `json:"slug"`
	Title       string  `json:"title"`
	Views       int64   `json:"views"`
	RecentViews int64   `json:"recentViews"`
	Score       float64 `json:"score"`
}

// CalculateTrending ranks posts by recent views every hour.
func CalculateTrending(d Deps) engine.Function {
	keys := Keys{Prefix: d.Config.Prefix}
	return engine.Function{
		ID:        "calculate-trending",
		Name:      "Calculate trending posts",
		Triggers:  []engine.Trigger{{Cron: "0 * * * *"}},
		Retries:   retries(2),
		Singleton: &engine.Singleton{},
		Retention: highVolumeRetention,
		Handler: func(ctx context.Context, run *engine.Run) (any, error) {
			posts, err := engine.Step(ctx, run, "fetch-post-data", func(ctx context.Context) ([]TrendingPost, error) {
				return fetchPosts(ctx, d.KV, keys, d.Clock.Now())
			})
			if err != nil {
				return nil, err
			}
			top, err := engine.Step(ctx, run, "calculate-scores", func(ctx context.Context) ([]TrendingPost, error) {
				return rankTrending(posts), nil
			})
			if err != nil {
				return nil, err
			}
			if _, err := engine.StepStore(ctx, run, "store-trending", func(ctx context.Context, kv *store.Tx) (int, error) {
				body, _ := json.Marshal(top)
				if err := kv.Set(ctx, keys.Trending(), string(body), trendingTTL); err != nil {
					return 0, fmt.Errorf("store trending: %w", err)
				}
				return len(top), nil
			}); err != nil {
				return nil, err
			}
			return top, nil
		},
	}
}

// fetchPosts reads every post's total and its views of the last
// trendingWindow days (today included), scanning, never listing all keys.
// Any read error fails the step.
func fetchPosts(ctx context.Context, kv KVReader, keys Keys, now time.Time) ([]TrendingPost, error) {
	prefix := keys.PostViewsPrefix()
	posts := []TrendingPost{}
	cursor := ""
	for {
		batch, next, err := kv.Scan(ctx, prefix, cursor, 500)
		if err != nil {
			return nil, fmt.Errorf("scan posts: %w", err)
		}
		for _, key := range batch {
			slug, ok := postOfCounter(prefix, key)
			if !ok {
				continue // a :day: counter, or not a post
			}
			p := TrendingPost{Slug: slug, Title: slug}
			if p.Views, err = readCount(ctx, kv, key); err != nil {
				return nil, err
			}
			for i := range trendingWindow {
				date := now.UTC().AddDate(0, 0, -i).Format(dateLayout)
				n, err := readCount(ctx, kv, keys.PostDayViews(slug, date))
				if err != nil {
					return nil, err
				}
				p.RecentViews += n
			}
			if p.Title, err = readTitle(ctx, kv, keys, slug); err != nil {
				return nil, err
			}
			posts = append(posts, p)
		}
		if next == "" {
			return posts, nil
		}
		cursor = next
	}
}

// readCount reads a counter; absent is 0.
func readCount(ctx context.Context, kv KVReader, key string) (int64, error) {
	s, err := kv.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: not a counter: %w", key, err)
	}
	return n, nil
}

// readTitle reads a post's remembered title, the slug when none.
func readTitle(ctx context.Context, kv KVReader, keys Keys, slug string) (string, error) {
	t, err := kv.Get(ctx, keys.PostTitle(slug))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return slug, nil
	case err != nil:
		return "", fmt.Errorf("read title of %s: %w", slug, err)
	}
	return t, nil
}

// rankTrending scores posts by recent² / max(total, 1), keeps those with
// recent views, best first (ties by slug), at most trendingSize.
func rankTrending(posts []TrendingPost) []TrendingPost {
	top := []TrendingPost{}
	for _, p := range posts {
		if p.RecentViews <= 0 {
			continue
		}
		p.Score = float64(p.RecentViews) * float64(p.RecentViews) / float64(max(p.Views, 1))
		top = append(top, p)
	}
	sort.Slice(top, func(i, j int) bool {
		if top[i].Score != top[j].Score {
			return top[i].Score > top[j].Score
		}
		return top[i].Slug < top[j].Slug
	})
	if len(top) > trendingSize {
		top = top[:trendingSize]
	}
	return top
}
