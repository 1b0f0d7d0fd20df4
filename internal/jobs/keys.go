package jobs

// Keys builds the site's data keys (JOBS.md): the names the website reads,
// under an optional prefix. The site routes read the same keys.
type Keys struct{ Prefix string }

// PostViews is the all-time view counter of a post.
func (k Keys) PostViews(slug string) string { return k.Prefix + "views:post:" + slug }

// PostViewsPrefix starts every post counter key (totals and days).
func (k Keys) PostViewsPrefix() string { return k.Prefix + "views:post:" }

// PostDayViews counts a post's views on one UTC day.
func (k Keys) PostDayViews(slug, date string) string {
	return k.Prefix + "views:post:" + slug + ":day:" + date
}

// PostTitle remembers a post's title.
func (k Keys) PostTitle(slug string) string { return k.Prefix + "blog:post:" + slug + ":title" }

// MilestoneClaim is set once when a post reaches milestone m.
func (k Keys) MilestoneClaim(slug string, m int64) string {
	return k.Prefix + "blog:milestone:" + slug + ":" + itoa(m)
}

// Trending is the JSON list of trending posts.
func (k Keys) Trending() string { return k.Prefix + "blog:trending" }

// Summary is a stored analytics summary.
func (k Keys) Summary(period, startDate string) string {
	return k.Prefix + "blog:analytics:" + period + ":" + startDate
}

// GitHubContributions caches a user's contribution calendar.
func (k Keys) GitHubContributions(user string) string {
	return k.Prefix + "github:contributions:" + user
}

// The per-day analytics sets and counters below feed the summaries; they
// live outside views:post: so the trending scan never meets them.

// DayPosts is the set of slugs viewed on a day.
func (k Keys) DayPosts(date string) string { return k.Prefix + "analytics:day:" + date + ":posts" }

// DayVisitors is the set of visitor hashes seen on a day.
func (k Keys) DayVisitors(date string) string {
	return k.Prefix + "analytics:day:" + date + ":visitors"
}

// DayReferrers is the set of referrer hosts seen on a day.
func (k Keys) DayReferrers(date string) string {
	return k.Prefix + "analytics:day:" + date + ":referrers"
}

// DayReferrer counts the views a referrer host brought on a day.
func (k Keys) DayReferrer(date, host string) string {
	return k.Prefix + "analytics:day:" + date + ":referrer:" + host
}

// DayRegions is the set of regions seen on a day.
func (k Keys) DayRegions(date string) string { return k.Prefix + "analytics:day:" + date + ":regions" }

// DayRegion counts the views from a region on a day.
func (k Keys) DayRegion(date, region string) string {
	return k.Prefix + "analytics:day:" + date + ":region:" + region
}

// DayMilestones is the set of "<slug>|<milestone>" reached on a day.
func (k Keys) DayMilestones(date string) string {
	return k.Prefix + "analytics:day:" + date + ":milestones"
}

// SentEmail indexes an email Resend accepted, by Resend's id, to the
// contact run that sent it.
func (k Keys) SentEmail(emailID string) string { return k.Prefix + "contact:email:" + emailID }

// Delivery is when one of a run's emails (notification, confirmation)
// reached a delivery status.
func (k Keys) Delivery(runID, email, status string) string {
	return k.Prefix + "contact:delivery:" + runID + ":" + email + ":" + status
}
