package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// maxLimit is the largest page a listing serves.
const maxLimit = 1000

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

// jsonTime is a time in RFC 3339 (UTC, nanoseconds when present), or null
// when zero.
type jsonTime time.Time

func (t jsonTime) MarshalJSON() ([]byte, error) {
	tt := time.Time(t)
	if tt.IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + tt.UTC().Format(time.RFC3339Nano) + `"`), nil
}

// eventView is an event as the admin API shows it.
type eventView struct {
	InternalID string          `json:"internal_id"`
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Data       json.RawMessage `json:"data"`
	User       json.RawMessage `json:"user"`
	TS         int64           `json:"ts"`
	V          string          `json:"v"`
	ReceivedAt jsonTime        `json:"received_at"`
}

func viewEvent(e store.Event) eventView {
	v := eventView{
		InternalID: e.ID,
		ID:         e.PublicID(),
		Name:       e.Name,
		Data:       e.Data,
		User:       e.User,
		TS:         e.TS,
		V:          e.Version,
		ReceivedAt: jsonTime(e.ReceivedAt),
	}
	if len(v.Data) == 0 {
		v.Data = json.RawMessage("{}")
	}
	if len(v.User) == 0 {
		v.User = json.RawMessage("{}")
	}
	return v
}

// runView is a run as the admin API shows it: Inngest's REST v1 fields
// first, then cyberdrew's own.
type runView struct {
	RunID        string          `json:"run_id"`
	EventID      string          `json:"event_id"`
	FunctionID   string          `json:"function_id"`
	Status       store.Status    `json:"status"`
	RunStartedAt jsonTime        `json:"run_started_at"`
	EndedAt      jsonTime        `json:"ended_at"`
	Output       json.RawMessage `json:"output"`
	Error        string          `json:"error,omitempty"`
	Attempt      int             `json:"attempt"`
	CreatedAt    jsonTime        `json:"created_at"`
	EventIDs     []string        `json:"event_ids"`
	AvailableAt  jsonTime        `json:"available_at"`
}

func viewRun(r store.Run) runView {
	v := runView{
		RunID:        r.ID,
		EventID:      r.EventID,
		FunctionID:   r.FunctionID,
		Status:       r.Status,
		RunStartedAt: jsonTime(r.StartedAt),
		EndedAt:      jsonTime(r.EndedAt),
		Output:       r.Output,
		Error:        r.Error,
		Attempt:      r.Attempt,
		CreatedAt:    jsonTime(r.CreatedAt),
		EventIDs:     r.EventIDs,
		AvailableAt:  jsonTime(r.AvailableAt),
	}
	if v.EventIDs == nil {
		v.EventIDs = []string{}
		if r.EventID != "" {
			v.EventIDs = []string{r.EventID}
		}
	}
	return v
}

func viewRuns(runs []store.Run) []runView {
	out := make([]runView, len(runs))
	for i, r := range runs {
		out[i] = viewRun(r)
	}
	return out
}

// runDetail is a run with its steps.
type runDetail struct {
	runView
	Steps []stepView `json:"steps"`
}

type stepView struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Kind      store.StepKind  `json:"kind"`
	Status    store.Status    `json:"status"`
	Attempts  []attemptView   `json:"attempts"`
	StartedAt jsonTime        `json:"started_at"`
	EndedAt   jsonTime        `json:"ended_at"`
	Output    json.RawMessage `json:"output"`
	Error     string          `json:"error,omitempty"`
	WakeAt    jsonTime        `json:"wake_at"`
	Wait      *store.Wait     `json:"wait,omitempty"`
}

type attemptView struct {
	StartedAt jsonTime `json:"started_at"`
	EndedAt   jsonTime `json:"ended_at"`
	Error     string   `json:"error,omitempty"`
}

func viewStep(s store.Step) stepView {
	v := stepView{
		ID:        s.ID,
		Name:      s.Name,
		Kind:      s.Kind,
		Status:    s.Status,
		Attempts:  make([]attemptView, len(s.Attempts)),
		StartedAt: jsonTime(s.StartedAt),
		EndedAt:   jsonTime(s.EndedAt),
		Output:    s.Output,
		Error:     s.Error,
		WakeAt:    jsonTime(s.WakeAt),
		Wait:      s.Wait,
	}
	for i, a := range s.Attempts {
		v.Attempts[i] = attemptView{StartedAt: jsonTime(a.StartedAt), EndedAt: jsonTime(a.EndedAt), Error: a.Error}
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
	out := make([]eventView, len(p.Items))
	for i, e := range p.Items {
		out[i] = viewEvent(e)
	}
	writeJSON(w, http.StatusOK, page{Data: out, Cursor: p.Cursor})
	return nil
}

// skipView is a function the event matched that started no run for it:
// a Skipped run with its reason, or the pending run a debounce folded the
// event into.
type skipView struct {
	FunctionID string `json:"function_id"`
	RunID      string `json:"run_id"`
	Reason     string `json:"reason"`
}

// eventDetail is an event with the functions it started no run of.
type eventDetail struct {
	eventView
	Skipped []skipView `json:"skipped"`
}

// GET /v1/events/{id}
func (s *server) getEvent(w http.ResponseWriter, r *http.Request) error {
	e, err := s.st.GetEvent(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	runs, err := s.runsOf(r.Context(), e.ID)
	if err != nil {
		return err
	}
	d := eventDetail{eventView: viewEvent(e), Skipped: []skipView{}}
	for _, run := range runs {
		switch {
		case run.Status == store.StatusSkipped:
			d.Skipped = append(d.Skipped, skipView{FunctionID: run.FunctionID, RunID: run.ID, Reason: run.Error})
		case len(run.EventIDs) > 0 && run.EventIDs[0] != e.ID:
			d.Skipped = append(d.Skipped, skipView{FunctionID: run.FunctionID, RunID: run.ID,
				Reason: "debounce: folded into run " + run.ID})
		}
	}
	writeJSON(w, http.StatusOK, data{Data: d})
	return nil
}

// GET /v1/events/{id}/runs: every run the event fed, Skipped ones (with
// their reason as error) and those a debounce folded it into included.
func (s *server) eventRuns(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.st.GetEvent(r.Context(), id); err != nil {
		return err
	}
	runs, err := s.runsOf(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, data{Data: viewRuns(runs)})
	return nil
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
	writeJSON(w, http.StatusOK, page{Data: viewRuns(p.Items), Cursor: p.Cursor})
	return nil
}

// GET /v1/runs/{id}: the run with its steps.
func (s *server) getRun(w http.ResponseWriter, r *http.Request) error {
	run, err := s.st.GetRun(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	steps, err := s.st.Steps(r.Context(), run.ID)
	if err != nil {
		return err
	}
	d := runDetail{runView: viewRun(run), Steps: make([]stepView, len(steps))}
	for i, st := range steps {
		d.Steps[i] = viewStep(st)
	}
	writeJSON(w, http.StatusOK, data{Data: d})
	return nil
}

// DELETE /v1/runs/{id}: cancel.
func (s *server) cancelRun(w http.ResponseWriter, r *http.Request) error {
	run, err := s.eng.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, data{Data: viewRun(run)})
	return nil
}

type runRefView struct {
	RunID      string       `json:"run_id"`
	FunctionID string       `json:"function_id"`
	Status     store.Status `json:"status"`
}

// POST /v1/runs/{id}/rerun
func (s *server) rerun(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.eng.Rerun(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, data{Data: runRefView{RunID: ref.ID, FunctionID: ref.FunctionID, Status: ref.Status}})
	return nil
}

// GET /v1/functions
func (s *server) listFunctions(w http.ResponseWriter, _ *http.Request) error {
	fns := s.eng.Functions()
	if fns == nil {
		fns = []engine.FunctionInfo{}
	}
	writeJSON(w, http.StatusOK, data{Data: fns})
	return nil
}

type invokeResult struct {
	EventID string   `json:"event_id"`
	RunIDs  []string `json:"run_ids"`
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
	res := invokeResult{EventID: acc.EventID, RunIDs: make([]string, len(acc.Runs))}
	for i, ref := range acc.Runs {
		res.RunIDs[i] = ref.ID
	}
	writeJSON(w, http.StatusOK, data{Data: res})
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
