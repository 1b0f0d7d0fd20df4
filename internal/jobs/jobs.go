// Package jobs holds the site's durable functions (JOBS.md): each is an
// engine.Function built from explicit dependencies (Deps) and registered by
// the daemon; nothing registers itself. The functions keep their data
// through store.KV only, so they behave the same on every backend.
package jobs

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// Defaults of Config.
const (
	DefaultContactFrom = "contact@cyberdrew.dev"
	DefaultGitHubUser  = "dcyfr"
)

// Config is the site's settings the functions read.
type Config struct {
	// ContactFrom sends every email; ContactTo is the owner, who receives
	// the contact notifications and milestone news.
	ContactFrom string
	ContactTo   string
	// GitHubUser is whose contributions are cached.
	GitHubUser string
	// MilestoneWebhook, when set, receives a Slack-compatible POST for each
	// milestone.
	MilestoneWebhook string
	// Prefix is prepended to every data key (CYBERDREW_SITE_PREFIX).
	Prefix string
	// Site is how the emails present the site; zero takes DefaultBrand.
	Site Brand
}

// Deps are what the functions need. KV, Clock and Mailer are required;
// GitHub nil means no GITHUB_TOKEN: the cron refresh is disabled and a
// manual one fails with a clear message.
type Deps struct {
	// KV reads the site's data. Functions write it only through the
	// handle of engine.StepStore (or engine.StepTx when the step also
	// sends an email), which commits the writes with the step's record,
	// so they happen exactly once.
	KV     KVReader
	Clock  clockwork.Clock
	Mailer Mailer
	GitHub GitHub
	// Templates render the emails; nil takes the embedded ones.
	Templates *Templates
	// HTTP posts the milestone webhook; nil uses a client with a timeout.
	HTTP   *http.Client
	Config Config
	Logger *slog.Logger
}

// KVReader is the read side of store.KV.
type KVReader interface {
	Get(ctx context.Context, key string) (string, error)
	SetMembers(ctx context.Context, key string) ([]string, error)
	Scan(ctx context.Context, prefix, cursor string, count int) (keys []string, next string, err error)
}

// withDefaults fills the optional parts.
func (d Deps) withDefaults() Deps {
	if d.Clock == nil {
		d.Clock = clockwork.NewRealClock()
	}
	if d.HTTP == nil {
		d.HTTP = &http.Client{Timeout: 15 * time.Second}
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Config.ContactFrom == "" {
		d.Config.ContactFrom = DefaultContactFrom
	}
	if d.Config.ContactTo == "" {
		d.Config.ContactTo = d.Config.ContactFrom
	}
	if d.Config.Site == (Brand{}) {
		d.Config.Site = DefaultBrand
	}
	if d.Templates == nil {
		d.Templates = DefaultTemplates()
	}
	if d.Config.GitHubUser == "" {
		d.Config.GitHubUser = DefaultGitHubUser
	}
	return d
}

// Functions returns every site function, in registration order.
func Functions(deps Deps) []engine.Function {
	deps = deps.withDefaults()
	return []engine.Function{
		HelloWorld(),
		ContactFormSubmitted(deps),
		RefreshGitHubData(deps),
		ManualRefreshGitHubData(deps),
		TrackPostView(deps),
		HandleMilestone(deps),
		CalculateTrending(deps),
		GenerateAnalyticsSummary(deps),
		DailyAnalyticsSummary(),
		WeeklyAnalyticsSummary(),
		MonthlyAnalyticsSummary(),
	}
}

func retries(n int) *int { return &n }
