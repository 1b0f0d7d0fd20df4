package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/wire"
)

// maxLimit is the largest page a listing serves.
const maxLimit = store.MaxPageLimit

// runStatuses are the statuses a run can have.
var runStatuses = []store.Status{
	store.StatusQueued, store.StatusRunning, store.StatusSleeping, store.StatusCompleted,
	store.StatusFailed, store.StatusCancelled, store.StatusSkipped,
}

// parseRunStatus finds a run status by name, in any case.
func parseRunStatus(name string) (store.Status, bool) {
	for _, st := range runStatuses {
		if strings.EqualFold(name, string(st)) {
			return st, true
		}
	}
	return "", false
}

// viewEvent is an event as the admin API shows it.
func viewEvent(e store.Event) wire.Event {
	v := wire.Event{
		InternalID: e.ID,
		ID:         e.PublicID(),
		Name:       e.Name,
		Data:       e.Data,
		User:       e.User,
		TS:         e.TS,
		V:          e.Version,
		ReceivedAt: wire.TimeOf(e.ReceivedAt),
	}
	if len(v.Data) == 0 {
		v.Data = json.RawMessage("{}")
	}
	if len(v.User) == 0 {
		v.User = json.RawMessage("{}")
	}
	return v
}

// viewRun is a run as the admin API shows it.
func viewRun(r store.Run) wire.Run {
	v := wire.Run{
		RunID:        r.ID,
		EventID:      r.EventID,
		FunctionID:   r.FunctionID,
		Status:       string(r.Status),
		RunStartedAt: wire.TimeOf(r.StartedAt),
		EndedAt:      wire.TimeOf(r.EndedAt),
		Output:       r.Output,
		Error:        r.Error,
		Attempt:      r.Attempt,
		CreatedAt:    wire.TimeOf(r.CreatedAt),
		EventIDs:     r.EventIDs,
		AvailableAt:  wire.TimeOf(r.AvailableAt),
	}
	if v.EventIDs == nil {
		v.EventIDs = []string{}
		if r.EventID != "" {
			v.EventIDs = []string{r.EventID}
		}
	}
	return v
}

func viewRuns(runs []store.Run) []wire.Run {
	out := make([]wire.Run, len(runs))
	for i, r := range runs {
		out[i] = viewRun(r)
	}
	return out
}

func viewStep(s store.Step) wire.Step {
	v := wire.Step{
		ID:        s.ID,
		Name:      s.Name,
		Kind:      string(s.Kind),
		Status:    string(s.Status),
		Attempts:  make([]wire.Attempt, len(s.Attempts)),
		StartedAt: wire.TimeOf(s.StartedAt),
		EndedAt:   wire.TimeOf(s.EndedAt),
		Output:    s.Output,
		Error:     s.Error,
		WakeAt:    wire.TimeOf(s.WakeAt),
	}
	if w := s.Wait; w != nil {
		v.Wait = &wire.Wait{Event: w.Event, MatchPath: w.MatchPath, MatchValue: w.MatchValue}
	}
	for i, a := range s.Attempts {
		v.Attempts[i] = wire.Attempt{StartedAt: wire.TimeOf(a.StartedAt), EndedAt: wire.TimeOf(a.EndedAt), Error: a.Error}
	}
	return v
}

// viewFunction is a registered function as the admin API shows it.
func viewFunction(f engine.FunctionInfo) wire.Function {
	v := wire.Function{
		ID:            f.ID,
		Name:          f.Name,
		Triggers:      make([]wire.Trigger, len(f.Triggers)),
		Retries:       f.Retries,
		Idempotency:   f.Idempotency,
		FinishTimeout: f.FinishTimeout,
		Disabled:      f.Disabled,
		NextCron:      wire.TimeOf(f.NextCron),
		Stats: wire.FunctionStats{
			RunsLastHour:     f.Stats.RunsLastHour,
			FailuresLastHour: f.Stats.FailuresLastHour,
			LastStatus:       string(f.Stats.LastStatus),
			LastRunAt:        wire.TimeOf(f.Stats.LastRunAt),
		},
	}
	for i, t := range f.Triggers {
		v.Triggers[i] = wire.Trigger{Event: t.Event, Cron: t.Cron}
	}
	if c := f.Concurrency; c != nil {
		v.Concurrency = &wire.Concurrency{Limit: c.Limit, Key: c.Key}
	}
	if r := f.RateLimit; r != nil {
		v.RateLimit = &wire.RateLimit{Limit: r.Limit, Period: r.Period, Key: r.Key}
	}
	if d := f.Debounce; d != nil {
		v.Debounce = &wire.Debounce{Period: d.Period, Key: d.Key, MaxWait: d.MaxWait}
	}
	if s := f.Singleton; s != nil {
		v.Singleton = &wire.Singleton{Key: s.Key}
	}
	return v
}

// queryWindow reads the since, until and limit parameters of a listing.
func queryWindow(q url.Values) (since, until time.Time, limit int, err error) {
	if since, err = queryTime(q, "since"); err != nil {
		return
	}
	if until, err = queryTime(q, "until"); err != nil {
		return
	}
	limit, err = queryLimit(q)
	return
}

// GET /v1/events?name=&since=&until=&limit=&cursor=
func (s *server) listEvents(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.EventFilter{Name: q.Get("name"), Cursor: q.Get("cursor")}
	var err error
	if f.Since, f.Until, f.Limit, err = queryWindow(q); err != nil {
		return err
	}
	p, err := s.st.ListEvents(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]wire.Event, len(p.Items))
	for i, e := range p.Items {
		out[i] = viewEvent(e)
	}
	writeJSON(w, http.StatusOK, wire.Page[wire.Event]{Data: out, Cursor: p.Cursor})
	return nil
}

// GET /v1/events/{id}
func (s *server) getEvent(w http.ResponseWriter, r *http.Request) error {
	e, err := s.event(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	runs, err := s.runsOf(r.Context(), e.ID)
	if err != nil {
		return err
	}
	d := viewEvent(e)
	d.Skipped = []wire.Skip{}
	for _, run := range runs {
		switch {
		case run.Status == store.StatusSkipped:
			d.Skipped = append(d.Skipped, wire.Skip{FunctionID: run.FunctionID, RunID: run.ID, Reason: run.Error})
		case len(run.EventIDs) > 0 && run.EventIDs[0] != e.ID:
			d.Skipped = append(d.Skipped, wire.Skip{FunctionID: run.FunctionID, RunID: run.ID,
				Reason: "debounce: folded into run " + run.ID})
		}
	}
	writeJSON(w, http.StatusOK, wire.Data[wire.Event]{Data: d})
	return nil
}

// GET /v1/events/{id}/runs: every run the event fed, Skipped ones (with
// their reason as error) and those a debounce folded it into included.
func (s *server) eventRuns(w http.ResponseWriter, r *http.Request) error {
	e, err := s.event(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	runs, err := s.runsOf(r.Context(), e.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.Data[[]wire.Run]{Data: viewRuns(runs)})
	return nil
}

// event finds the event an admin route names: by its id, else by the
// client id it was sent with (the event API's "id") while that id still
// deduplicates, as `cyberdrew send --id` users know it.
func (s *server) event(ctx context.Context, id string) (store.Event, error) {
	e, err := s.st.GetEvent(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		e, err = s.st.EventByClientID(ctx, id)
	}
	return e, notFound(err, "event %q not found (by id, nor by the client id it was sent with)", id)
}

// notFound turns store.ErrNotFound into a 404 whose message names what
// was looked for (format, args); other errors pass unchanged.
func notFound(err error, format string, args ...any) error {
	if errors.Is(err, store.ErrNotFound) {
		return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
	}
	return err
}

// runsOf lists every run event id fed.
func (s *server) runsOf(ctx context.Context, id string) ([]store.Run, error) {
	runs := []store.Run{}
	f := store.RunFilter{EventID: id, Limit: maxLimit}
	for {
		p, err := s.st.ListRuns(ctx, f)
		if err != nil {
			return nil, err
		}
		runs = append(runs, p.Items...)
		if p.Cursor == "" {
			return runs, nil
		}
		f.Cursor = p.Cursor
	}
}

// GET /v1/runs?function=&status=&event_id=&since=&until=&limit=&cursor=
// (event_id: an event's id or the client id it was sent with)
func (s *server) listRuns(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.RunFilter{FunctionID: q.Get("function"), EventID: q.Get("event_id"), Cursor: q.Get("cursor")}
	var err error
	if f.Statuses, err = queryStatuses(q); err != nil {
		return err
	}
	if f.Since, f.Until, f.Limit, err = queryWindow(q); err != nil {
		return err
	}
	p, err := s.st.ListRuns(r.Context(), f)
	if err != nil {
		return err
	}
	if f.EventID != "" && f.Cursor == "" && len(p.Items) == 0 {
		// No runs for that id: it may be the client id the event was
		// sent with. Looked up only then, not on every listing.
		if e, err := s.st.EventByClientID(r.Context(), f.EventID); err == nil {
			f.EventID = e.ID
			if p, err = s.st.ListRuns(r.Context(), f); err != nil {
				return err
			}
		}
	}
	writeJSON(w, http.StatusOK, wire.Page[wire.Run]{Data: viewRuns(p.Items), Cursor: p.Cursor})
	return nil
}

// GET /v1/runs/{id}: the run with its steps.
func (s *server) getRun(w http.ResponseWriter, r *http.Request) error {
	run, err := s.st.GetRun(r.Context(), r.PathValue("id"))
	if err != nil {
		return notFound(err, "run %q not found", r.PathValue("id"))
	}
	steps, err := s.st.Steps(r.Context(), run.ID)
	if err != nil {
		return err
	}
	d := wire.RunDetail{Run: viewRun(run), Steps: make([]wire.Step, len(steps))}
	for i, st := range steps {
		// A cancelled run's unfinished steps (a retry pending, a sleep, a
		// wait) ended with it: none of them runs again.
		if run.Status == store.StatusCancelled && !st.Status.Finished() {
			st.Status = store.StatusCancelled
		}
		d.Steps[i] = viewStep(st)
	}
	if s.cfg.Deliveries != nil {
		if d.Deliveries, err = s.cfg.Deliveries.Deliveries(r.Context(), run.ID); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, wire.Data[wire.RunDetail]{Data: d})
	return nil
}

// DELETE /v1/runs/{id}: cancel.
func (s *server) cancelRun(w http.ResponseWriter, r *http.Request) error {
	run, err := s.eng.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		return notFound(err, "run %q not found", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, wire.Data[wire.Run]{Data: viewRun(run)})
	return nil
}

// POST /v1/runs/{id}/rerun
func (s *server) rerun(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.eng.Rerun(r.Context(), r.PathValue("id"))
	if errors.Is(err, engine.ErrEventGone) {
		return &httpError{status: http.StatusConflict, msg: fmt.Sprintf("run %q cannot be rerun: %s (deleted by retention)", r.PathValue("id"), engine.ErrEventGone)}
	}
	if err != nil {
		return notFound(err, "run %q not found", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, wire.Data[wire.RunRef]{Data: wire.RunRef{RunID: ref.ID, FunctionID: ref.FunctionID, Status: string(ref.Status)}})
	return nil
}

// GET /v1/functions
func (s *server) listFunctions(w http.ResponseWriter, _ *http.Request) error {
	fns := s.eng.Functions()
	out := make([]wire.Function, len(fns))
	for i, f := range fns {
		out[i] = viewFunction(f)
	}
	writeJSON(w, http.StatusOK, wire.Data[[]wire.Function]{Data: out})
	return nil
}

// POST /v1/functions/{id}/invoke with an optional body {"data": {…}}.
func (s *server) invoke(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r, s.cfg.MaxEventSize)
	if err != nil {
		return err
	}
	payload := json.RawMessage("{}")
	if body = bytes.TrimSpace(body); len(body) > 0 {
		var in struct {
			Data json.RawMessage `json:"data"`
		}
		if body[0] != '{' {
			return badRequest(`the body must be an object {"data": {…}}`)
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return badRequest("malformed JSON: " + err.Error())
		}
		switch {
		case absent(in.Data):
		case in.Data[0] != '{':
			return badRequest("data: must be an object")
		default:
			payload = in.Data
		}
	}
	acc, err := s.eng.Invoke(r.Context(), r.PathValue("id"), payload)
	if err != nil {
		return err
	}
	res := wire.Invocation{EventID: acc.EventID, RunIDs: make([]string, len(acc.Runs))}
	for i, ref := range acc.Runs {
		res.RunIDs[i] = ref.ID
	}
	writeJSON(w, http.StatusOK, wire.Data[wire.Invocation]{Data: res})
	return nil
}

// queryTime reads an RFC 3339 time parameter; zero when absent.
func queryTime(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badRequest(name + ": must be an RFC 3339 time such as 2025-01-02T15:04:05Z")
	}
	return t, nil
}

// queryLimit reads limit (1..maxLimit); 0 (the store's default) when absent.
func queryLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, badRequest("limit: must be an integer from 1 to " + strconv.Itoa(maxLimit))
	}
	return n, nil
}

// queryStatuses reads status, a comma-separated list of run statuses in any
// case.
func queryStatuses(q url.Values) ([]store.Status, error) {
	v := q.Get("status")
	if v == "" {
		return nil, nil
	}
	var out []store.Status
	for name := range strings.SplitSeq(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		st, ok := parseRunStatus(name)
		if !ok {
			return nil, badRequest("status: unknown run status " + strconv.Quote(name) +
				" (one of Queued, Running, Sleeping, Completed, Failed, Cancelled, Skipped)")
		}
		out = append(out, st)
	}
	return out, nil
}
