package jobs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// SiteTraffic is the site-wide aggregates the public analytics reads
// serve: counts only, never a visitor, a region or an address.
type SiteTraffic struct {
	// TotalViews is every post's views, all time.
	TotalViews int64 `json:"totalViews"`
	// Days are the views of every post per UTC day, oldest first, the
	// last one today.
	Days []DayViews `json:"days"`
	// TopReferrers are the referrer hosts that brought the most views in
	// Days, most first.
	TopReferrers []ReferrerCount `json:"topReferrers"`
}

// DayViews is the views of every post on one UTC day.
type DayViews struct {
	Date  string `json:"date"`
	Views int64  `json:"views"`
}

// topReferrersSize is how many referrers the reads keep.
const topReferrersSize = 10

// ReadSiteTraffic reads the site's totals and its last days days (today
// included, as of now) from the counters track-post-view keeps.
func ReadSiteTraffic(ctx context.Context, kv store.KV, keys Keys, now time.Time, days int) (SiteTraffic, error) {
	t := SiteTraffic{Days: make([]DayViews, days)}
	referrers := map[string]int64{}
	for i := range days {
		date := now.UTC().AddDate(0, 0, i-days+1).Format(dateLayout)
		t.Days[i].Date = date
		slugs, err := kv.SetMembers(ctx, keys.DayPosts(date))
		if err != nil {
			return t, fmt.Errorf("site traffic: posts of %s: %w", date, err)
		}
		for _, slug := range slugs {
			n, err := readCount(ctx, kv, keys.PostDayViews(slug, date))
			if err != nil {
				return t, fmt.Errorf("site traffic: %w", err)
			}
			t.Days[i].Views += n
		}
		hosts, err := kv.SetMembers(ctx, keys.DayReferrers(date))
		if err != nil {
			return t, fmt.Errorf("site traffic: referrers of %s: %w", date, err)
		}
		for _, h := range hosts {
			n, err := readCount(ctx, kv, keys.DayReferrer(date, h))
			if err != nil {
				return t, fmt.Errorf("site traffic: %w", err)
			}
			referrers[h] += n
		}
	}
	t.TopReferrers = rankReferrers(referrers, topReferrersSize)
	prefix := keys.PostViewsPrefix()
	for cursor := ""; ; {
		batch, next, err := kv.Scan(ctx, prefix, cursor, 500)
		if err != nil {
			return t, fmt.Errorf("site traffic: scan posts: %w", err)
		}
		for _, key := range batch {
			if _, ok := postOfCounter(prefix, key); !ok {
				continue
			}
			n, err := readCount(ctx, kv, key)
			if err != nil {
				return t, fmt.Errorf("site traffic: %w", err)
			}
			t.TotalViews += n
		}
		if next == "" {
			return t, nil
		}
		cursor = next
	}
}

// postOfCounter is the slug of a post's all-time counter key under
// prefix; false for a :day: counter or anything not a post.
func postOfCounter(prefix, key string) (string, bool) {
	slug := strings.TrimPrefix(key, prefix)
	return slug, !strings.Contains(slug, ":") && ValidSlug(slug)
}

// rankReferrers lists the hosts by views, most first (ties by host), at
// most n.
func rankReferrers(views map[string]int64, n int) []ReferrerCount {
	out := []ReferrerCount{}
	for h, v := range views {
		out = append(out, ReferrerCount{Host: h, Views: v})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.Views > b.Views || (a.Views == b.Views && a.Host < b.Host)
	})
	return out[:min(len(out), n)]
}

// GroupDigits writes n with commas between thousands, as the emails and
// the analytics page show counts.
func GroupDigits(n int64) string { return groupDigits(n) }
