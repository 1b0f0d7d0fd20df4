package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/shurcooL/githubv4"
	"golang.org/x/oauth2"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// The GitHub cache: fresh for a manual refresh when younger than
// cacheFresh; kept far longer than the cron period so a few failed
// refreshes never empty it (readers judge freshness by lastUpdated).
const (
	cacheFresh = 5 * time.Minute
	cacheTTL   = 7 * 24 * time.Hour
)

// ErrNoGitHubToken is the reason GitHub refreshes cannot run.
var ErrNoGitHubToken = errors.New("GITHUB_TOKEN is not set: GitHub's GraphQL API needs a token (set GITHUB_TOKEN or --github-token)")

// ContributionDay is one day of the contribution calendar.
type ContributionDay struct {
	Date  string `json:"date"`
	Count int    `json:"count"`
}

// Calendar is a user's contribution calendar.
type Calendar struct {
	TotalContributions int               `json:"totalContributions"`
	Days               []ContributionDay `json:"days"`
}

// Contributions is the cached value at github:contributions:<user>.
type Contributions struct {
	Contributions      []ContributionDay `json:"contributions"`
	Source             string            `json:"source"`
	TotalContributions int               `json:"totalContributions"`
	LastUpdated        string            `json:"lastUpdated"`
}

// GitHub reads contribution calendars. Its errors are classified for the
// engine, as Mailer's are.
type GitHub interface {
	Contributions(ctx context.Context, login string) (Calendar, error)
}

// GitHubClient queries GitHub's GraphQL API with githubv4.
type GitHubClient struct {
	client *githubv4.Client
	clock  clockwork.Clock
	token  string // kept out of every error
}

var _ GitHub = (*GitHubClient)(nil)

// NewGitHubClient returns a client authenticated with token. apiURL, when
// set, is a GraphQL endpoint (GitHub Enterprise, tests).
func NewGitHubClient(token, apiURL string, httpClient *http.Client, clock clockwork.Clock) *GitHubClient {
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 30 * time.Second}
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	hc := *httpClient
	hc.Transport = &oauth2.Transport{
		Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token}),
		Base:   captureTransport{base: transportOf(httpClient)},
	}
	c := githubv4.NewClient(&hc)
	if apiURL != "" {
		c = githubv4.NewEnterpriseClient(apiURL, &hc)
	}
	return &GitHubClient{client: c, clock: clock, token: token}
}

// Contributions fetches login's contribution calendar. A 401 is
// non-retriable; a rate limit retries at its reset time.
func (g *GitHubClient) Contributions(ctx context.Context, login string) (Calendar, error) {
	var q struct {
		User *struct {
			ContributionsCollection struct {
				ContributionCalendar struct {
					TotalContributions int
					Weeks              []struct {
						ContributionDays []struct {
							Date              string
							ContributionCount int
						}
					}
				}
			}
		} `graphql:"user(login: $login)"`
	}
	info := &responseInfo{}
	err := g.client.Query(context.WithValue(ctx, responseInfoKey{}, info), &q, map[string]any{"login": githubv4.String(login)})
	if err != nil {
		return Calendar{}, g.classify(info, redact(err, g.token))
	}
	if reset, limited := rateLimited(info.header); limited && q.User == nil {
		return Calendar{}, engine.RetryAt(errors.New("github: rate limited"), reset)
	}
	if q.User == nil {
		return Calendar{}, engine.NonRetriable(fmt.Errorf("github: no user %q", login))
	}
	cal := q.User.ContributionsCollection.ContributionCalendar
	out := Calendar{TotalContributions: cal.TotalContributions, Days: []ContributionDay{}}
	for _, w := range cal.Weeks {
		for _, d := range w.ContributionDays {
			out.Days = append(out.Days, ContributionDay{Date: d.Date, Count: d.ContributionCount})
		}
	}
	return out, nil
}

func (g *GitHubClient) classify(info *responseInfo, err error) error {
	err = fmt.Errorf("github: %w", err)
	if reset, limited := rateLimited(info.header); limited || info.status == http.StatusTooManyRequests {
		if !limited {
			d, ok := retryDelay(info.header)
			if !ok {
				return err
			}
			reset = g.clock.Now().Add(d)
		}
		return engine.RetryAt(err, reset)
	}
	if info.status == http.StatusForbidden {
		if d, ok := retryDelay(info.header); ok { // secondary rate limit
			return engine.RetryAt(err, g.clock.Now().Add(d))
		}
	}
	if info.status == http.StatusUnauthorized {
		return engine.NonRetriable(fmt.Errorf("%w: check GITHUB_TOKEN", err))
	}
	if info.status >= 400 && info.status < 500 {
		return engine.NonRetriable(err)
	}
	return err
}

// rateLimited reports GitHub's primary rate limit (no requests remaining)
// and when it resets.
func rateLimited(h http.Header) (time.Time, bool) {
	if h == nil || h.Get("X-Ratelimit-Remaining") != "0" {
		return time.Time{}, false
	}
	reset, err := strconv.ParseInt(h.Get("X-Ratelimit-Reset"), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(reset, 0), true
}

// RefreshGitHubData refreshes the contributions cache every five minutes.
// Without a token it is registered disabled, with the reason.
func RefreshGitHubData(d Deps) engine.Function {
	fn := engine.Function{
		ID:        "refresh-github-data",
		Name:      "Refresh GitHub data",
		Triggers:  []engine.Trigger{{Cron: "*/5 * * * *"}},
		Retries:   retries(2),
		Singleton: &engine.Singleton{},
		Retention: highVolumeRetention,
		Handler: func(ctx context.Context, run *engine.Run) (any, error) {
			return refreshGitHub(ctx, run, d, false)
		},
	}
	if d.GitHub == nil {
		fn.Disabled = ErrNoGitHubToken.Error()
	}
	return fn
}

// ManualRefreshGitHubData refreshes on github/data.refresh, debounced so a
// burst of requests becomes one refresh.
func ManualRefreshGitHubData(d Deps) engine.Function {
	return engine.Function{
		ID:       "manual-refresh-github-data",
		Name:     "Manual GitHub refresh",
		Triggers: []engine.Trigger{{Event: EventGitHubRefresh}},
		Retries:  retries(1),
		Debounce: &engine.Debounce{Period: 5 * time.Second, MaxWait: 30 * time.Second},
		Handler: func(ctx context.Context, run *engine.Run) (any, error) {
			var req struct {
				Force bool `json:"force"`
			}
			_ = json.Unmarshal(run.Event.Data, &req)
			return refreshGitHub(ctx, run, d, !req.Force)
		},
	}
}

// refreshGitHub runs the refresh steps; checkCache first when asked.
func refreshGitHub(ctx context.Context, run *engine.Run, d Deps, checkCache bool) (any, error) {
	user := d.Config.GitHubUser
	key := Keys{Prefix: d.Config.Prefix}.GitHubContributions(user)
	if checkCache {
		fresh, err := engine.Step(ctx, run, "check-cache", func(ctx context.Context) (string, error) {
			cached, err := ReadContributions(ctx, d.KV, key)
			if errors.Is(err, store.ErrNotFound) {
				return "", nil
			}
			if err != nil {
				return "", err
			}
			if at, err := time.Parse(time.RFC3339, cached.LastUpdated); err == nil && d.Clock.Now().Sub(at) < cacheFresh {
				return cached.LastUpdated, nil
			}
			return "", nil
		})
		if err != nil {
			return nil, err
		}
		if fresh != "" {
			return map[string]any{"skipped": true, "reason": "cache is fresh", "lastUpdated": fresh}, nil
		}
	}
	cal, err := engine.Step(ctx, run, "fetch-github-data", func(ctx context.Context) (Calendar, error) {
		if d.GitHub == nil {
			return Calendar{}, engine.NonRetriable(ErrNoGitHubToken)
		}
		return d.GitHub.Contributions(ctx, user)
	})
	if err != nil {
		return nil, err
	}
	return engine.StepStore(ctx, run, "update-cache", func(ctx context.Context, kv *store.Tx) (map[string]any, error) {
		v := Contributions{
			Contributions: cal.Days, Source: "github-api", TotalContributions: cal.TotalContributions,
			LastUpdated: d.Clock.Now().UTC().Format(time.RFC3339),
		}
		body, _ := json.Marshal(v)
		if err := kv.Set(ctx, key, string(body), cacheTTL); err != nil {
			return nil, fmt.Errorf("update cache: %w", err)
		}
		return map[string]any{"user": user, "totalContributions": v.TotalContributions, "days": len(v.Contributions), "lastUpdated": v.LastUpdated}, nil
	})
}

// ReadContributions reads the cached contributions (store.ErrNotFound when
// there are none).
func ReadContributions(ctx context.Context, kv KVReader, key string) (Contributions, error) {
	raw, err := kv.Get(ctx, key)
	if err != nil {
		return Contributions{}, err
	}
	var c Contributions
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return Contributions{}, fmt.Errorf("decode contributions cache: %w", err)
	}
	return c, nil
}
