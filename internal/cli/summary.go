package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/client"
	"github.com/dcyfr/cyberdrew/internal/jobs"
)

// summaryOptions are the summary command's flags and streams.
type summaryOptions struct {
	*clientFlags
	Period      string
	From, To    string
	Timeout     time.Duration
	Out, ErrOut io.Writer
	Now         func() time.Time
}

func newSummaryCmd(opts Options) *cobra.Command {
	o := &summaryOptions{clientFlags: newClientFlags(opts), Now: time.Now}
	cmd := &cobra.Command{
		Use:   "summary",
		Short: "Generate an analytics summary and print it",
		Long: `Send analytics/summary.generate, wait for its run and print the report:
total views, unique posts and visitors, top posts with their titles, top
referrers, milestones reached and trending posts. -o json prints the raw
summary, the run's output.

Without --from and --to the period is the one before today, as the cron
jobs choose it: yesterday, the previous week (Monday to Sunday) or the
previous month. --from alone is the period that starts that day (a day,
seven days, a month); --to ends it elsewhere. The summary of a whole
period (a day, a week from a Monday, a month from the 1st) is stored where
the site reads it, as the cron jobs' are; any other range is printed only,
so an ad-hoc report never replaces a stored one.`,
		Example: `  cyberdrew summary --period weekly
  cyberdrew summary --period daily --from 2025-03-01 --to 2025-03-07 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out, o.ErrOut = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runSummary(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.Period, "period", "p", jobs.PeriodDaily, "daily, weekly or monthly")
	fs.StringVar(&o.From, "from", "", "first day, YYYY-MM-DD (default: by the period)")
	fs.StringVar(&o.To, "to", "", "last day, YYYY-MM-DD (default: by the period)")
	fs.DurationVar(&o.Timeout, "timeout", time.Minute, "how long to wait for the summary")
	_ = cmd.RegisterFlagCompletionFunc("period", fixedCompletion(jobs.PeriodDaily, jobs.PeriodWeekly, jobs.PeriodMonthly))
	o.register(cmd, false)
	return clientCommand(cmd)
}

func runSummary(ctx context.Context, o *summaryOptions) error {
	switch o.Period {
	case jobs.PeriodDaily, jobs.PeriodWeekly, jobs.PeriodMonthly:
	default:
		return usageErrorf("--period %q: want daily, weekly or monthly", o.Period)
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	start, end := jobs.SummaryPeriod(o.Period, o.Now().UTC())
	if o.From != "" {
		// --from alone: the whole period that starts that day.
		day, err := parseDay("from", o.From)
		if err != nil {
			return err
		}
		start, end = jobs.PeriodFrom(o.Period, day)
	}
	if o.To != "" {
		if end, err = parseDay("to", o.To); err != nil {
			return err
		}
		if end.Before(start) {
			return usageErrorf("--to %s is before --from %s", o.To, start.Format(time.DateOnly))
		}
	}
	from, to := start.Format(time.DateOnly), end.Format(time.DateOnly)
	data, _ := json.Marshal(jobs.SummaryRequest{Period: o.Period, StartDate: from, EndDate: to})
	_, res, err := sendAndWait(ctx, c, client.Event{Name: jobs.EventSummaryGenerate, Data: data}, o.Timeout, o.ErrOut)
	if err != nil {
		return err
	}
	if err := waitOutcome(res, o.Timeout); err != nil {
		printRunResults(o.ErrOut, res.Runs)
		return err
	}
	run, ok := runOf(res, "generate-analytics-summary")
	if !ok {
		return fmt.Errorf("summary: no generate-analytics-summary run")
	}
	if o.json() {
		_, err := fmt.Fprintln(o.Out, compactIndent(run.Output))
		return err
	}
	var s jobs.Summary
	if err := json.Unmarshal(run.Output, &s); err != nil {
		return fmt.Errorf("summary: read the run's output: %w", err)
	}
	return printSummary(o.Out, s)
}

// parseDay reads the date YYYY-MM-DD of the flag --name.
func parseDay(name, v string) (time.Time, error) {
	day, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return day, usageErrorf("--%s %q: want a date YYYY-MM-DD", name, v)
	}
	return day, nil
}

func compactIndent(raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// printSummary renders a summary as a readable report.
func printSummary(w io.Writer, s jobs.Summary) error {
	title := fmt.Sprintf("Analytics summary, %s: %s to %s", s.Period, s.StartDate, s.EndDate)
	if s.StartDate == s.EndDate {
		title = fmt.Sprintf("Analytics summary, %s: %s", s.Period, s.StartDate)
	}
	start, errStart := time.Parse(time.DateOnly, s.StartDate)
	end, errEnd := time.Parse(time.DateOnly, s.EndDate)
	if errStart == nil && errEnd == nil && !jobs.WholePeriod(s.Period, start, end) {
		// The job stores only whole periods (see the command's help).
		title = fmt.Sprintf("Analytics summary, %s to %s (not a whole %s: printed, not stored)", s.StartDate, s.EndDate, periodNoun(s.Period))
	}
	fmt.Fprintln(w, title)
	fmt.Fprintln(w)
	t := newTable(w)
	fmt.Fprintf(t, "  total views\t%d\n", s.TotalViews)
	fmt.Fprintf(t, "  posts viewed\t%d\n", s.UniquePosts)
	fmt.Fprintf(t, "  unique visitors\t%d\n", s.UniqueVisitors)
	if err := t.Flush(); err != nil {
		return err
	}
	section := func(name string, n int) bool {
		fmt.Fprintf(w, "\n%s\n", name)
		if n == 0 {
			fmt.Fprintln(w, "  none")
			return false
		}
		return true
	}
	if section("Top posts", len(s.TopPosts)) {
		t = newTable(w)
		for i, p := range s.TopPosts {
			fmt.Fprintf(t, "  %d.\t%s\t%s\t/%s\n", i+1, titleOr(p.Title, p.Slug), plural(p.Views, "view"), p.Slug)
		}
		_ = t.Flush()
	}
	if section("Top referrers", len(s.TopReferrers)) {
		t = newTable(w)
		for _, r := range s.TopReferrers {
			fmt.Fprintf(t, "  %s\t%s\n", r.Host, plural(r.Views, "view"))
		}
		_ = t.Flush()
	}
	if section("Milestones", len(s.NewMilestones)) {
		t = newTable(w)
		for _, m := range s.NewMilestones {
			fmt.Fprintf(t, "  %s\t%s\t%s\n", titleOr(m.Title, m.Slug), plural(m.Milestone, "view"), m.Date)
		}
		_ = t.Flush()
	}
	if section("Trending", len(s.Trending)) {
		t = newTable(w)
		for i, p := range s.Trending {
			fmt.Fprintf(t, "  %d.\t%s\t%s recently\t%d in all\n", i+1, titleOr(p.Title, p.Slug), plural(p.RecentViews, "view"), p.Views)
		}
		_ = t.Flush()
	}
	return nil
}

func titleOr(title, slug string) string {
	if title == "" {
		return slug
	}
	return title
}

func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// periodNoun names the calendar period of a summary kind.
func periodNoun(period string) string {
	switch period {
	case jobs.PeriodWeekly:
		return "Monday-to-Sunday week"
	case jobs.PeriodMonthly:
		return "calendar month"
	default:
		return "day"
	}
}
