package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/wire"
)

// MaxNameLength bounds an event's name and its id, in bytes.
const MaxNameLength = 512

// intake is POST /e/{eventKey}: it validates the whole request before
// publishing any of it.
func (s *server) intake(w http.ResponseWriter, r *http.Request) error {
	if err := jsonContent(r); err != nil {
		return err
	}
	body, err := readBody(w, r, s.cfg.MaxRequestSize)
	if err != nil {
		return err
	}
	evs, err := decodeEvents(body, s.cfg.MaxEventSize, s.cfg.MaxBatch)
	if err != nil {
		return err
	}
	// A client retrying a request sends the same seed: the same ids make
	// the store answer the first attempt's ids and store nothing twice.
	for i, id := range s.seededIDs(r, len(evs)) {
		evs[i].InternalID = id
	}
	accepted, err := s.publish(r, evs)
	if err != nil {
		return err
	}
	if len(accepted) != len(evs) {
		return fmt.Errorf("api: engine accepted %d of %d events", len(accepted), len(evs))
	}
	sent := wire.Sent{IDs: make([]string, len(accepted)), Status: http.StatusOK}
	for i, a := range accepted {
		sent.IDs[i] = a.EventID
		if a.Duplicate {
			sent.Duplicates = append(sent.Duplicates, i)
		}
	}
	s.cfg.Observer.EventsAccepted(len(sent.IDs))
	writeJSON(w, http.StatusOK, sent)
	return nil
}

// maxSeedAhead is how far ahead of the engine's clock a client's event id
// seed may be dated: the dedupe window of event ids. An id dates its event
// (listings sort by it, and an event a later seed dated would head them
// and outlive its retention), so a seed further ahead is not used: its
// events get ids of their own, and a retry of that request may store them
// again.
const maxSeedAhead = 24 * time.Hour

// seededIDs are the ids the request's seed header gives its n events, or
// none (Engine.SeededIDs, and maxSeedAhead).
func (s *server) seededIDs(r *http.Request, n int) []string {
	ids := s.eng.SeededIDs(r.Header.Get(engine.SeedHeader), n)
	if len(ids) == 0 {
		return nil
	}
	if u, err := ulid.Parse(ids[0]); err != nil || ulid.Time(u.Time()).After(s.cfg.Clock.Now().Add(maxSeedAhead)) {
		s.log.Debug("intake: event id seed dated too far ahead; ids minted instead", "seed", r.Header.Get(engine.SeedHeader))
		return nil
	}
	return ids
}

// publish stores evs, waiting at most IntakeTimeout for the store. A store
// that fails or does not confirm in time gives an *unconfirmedError.
func (s *server) publish(r *http.Request, evs []engine.IncomingEvent) ([]engine.Accepted, error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.IntakeTimeout)
	defer cancel()
	accepted, err := s.eng.Publish(ctx, evs)
	switch {
	case err == nil, r.Context().Err() != nil:
		return accepted, err
	case ctx.Err() != nil:
		s.log.Warn("intake: the store did not confirm in time", "events", len(evs), "timeout", s.cfg.IntakeTimeout, "err", err)
		return nil, &unconfirmedError{msg: fmt.Sprintf("the store did not confirm the events within %s", s.cfg.IntakeTimeout)}
	case errors.Is(err, store.ErrNotReplicated):
		s.log.Warn("intake: too few replicas confirmed", "events", len(evs), "err", err)
		return nil, &unconfirmedError{msg: "too few Redis replicas confirmed the events in time (--redis-min-replicas)"}
	case errors.Is(err, store.ErrUnavailable):
		s.log.Warn("intake: store unavailable", "events", len(evs), "err", err)
		return nil, &unconfirmedError{msg: "store unavailable"}
	}
	return nil, err
}

// unconfirmedError is intake's 503 when the store failed or did not answer
// in time: the events may have been stored (the store may still commit
// them), and resending them with the same ids stores none of them twice.
type unconfirmedError struct{ msg string }

func (e *unconfirmedError) Error() string { return e.msg }

// unconfirmedBody is the event API's 503: Inngest's error shape, plus
// whether the events were stored and how to retry.
type unconfirmedBody struct {
	Error  string `json:"error"`
	Status int    `json:"status"`
	Stored string `json:"stored"`
	Retry  string `json:"retry"`
}

// retryAdvice is the retry field of intake's 503.
const retryAdvice = "resend the same events with the same id: an id already stored is not stored or run twice"

func (e *unconfirmedError) write(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, unconfirmedBody{
		Error:  e.msg + ": the events may have been stored",
		Status: http.StatusServiceUnavailable,
		Stored: "unknown",
		Retry:  retryAdvice,
	})
}

// jsonContent refuses a body whose Content-Type says it is not JSON. An
// absent type, text/plain and the form type curl sends by default with -d
// are taken as JSON; the body itself is checked next. (In dev mode the
// cross-site check has refused them already: auth.go.)
func jsonContent(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil {
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			err = errors.New("charset")
		}
	}
	if err == nil && (isJSONMediaType(mt) || mt == "text/plain" || mt == "application/x-www-form-urlencoded") {
		return nil
	}
	return &httpError{status: http.StatusUnsupportedMediaType, msg: "the body must be JSON in UTF-8 (Content-Type: application/json)"}
}

// readBody reads the whole body, at most limit bytes (413 beyond).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge(limit)
		}
		return nil, badRequest("read body: " + err.Error())
	}
	return body, nil
}

func tooLarge(limit int64) error {
	return &httpError{
		status: http.StatusRequestEntityTooLarge,
		msg:    fmt.Sprintf("request body exceeds %d bytes", limit),
	}
}

// wireEvent is an event as sent, each field kept raw so that its JSON type
// can be checked. Unknown fields (the npm client's "meta") are ignored.
type wireEvent struct {
	ID   json.RawMessage `json:"id"`
	Name json.RawMessage `json:"name"`
	Data json.RawMessage `json:"data"`
	User json.RawMessage `json:"user"`
	TS   json.RawMessage `json:"ts"`
	V    json.RawMessage `json:"v"`
}

// decodeEvents parses an intake body: one event object or an array of
// 1..maxBatch of them, each at most maxEvent bytes. Any fault rejects the
// whole body: a 413 httpError for sizes, a 400 httpError for a body that is
// not JSON, a *engine.ValidationError for a faulty event.
func decodeEvents(body []byte, maxEvent int64, maxBatch int) ([]engine.IncomingEvent, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, badRequest("request body is empty: send an event object or an array of events")
	}
	if !utf8.Valid(body) {
		return nil, badRequest("the body is not valid UTF-8")
	}
	if !json.Valid(body) {
		var v any
		return nil, badRequest("malformed JSON: " + json.Unmarshal(body, &v).Error())
	}
	var raws []json.RawMessage
	switch body[0] {
	case '[':
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, badRequest("malformed JSON: " + err.Error())
		}
		if len(raws) == 0 {
			return nil, badRequest("no events: the array is empty")
		}
		if len(raws) > maxBatch {
			return nil, &httpError{
				status: http.StatusRequestEntityTooLarge,
				msg:    fmt.Sprintf("%d events exceed the limit of %d per request", len(raws), maxBatch),
			}
		}
	case '{':
		raws = []json.RawMessage{body}
	default:
		return nil, badRequest("the body must be an event object or an array of events")
	}

	evs := make([]engine.IncomingEvent, len(raws))
	for i, raw := range raws {
		if int64(len(raw)) > maxEvent {
			return nil, &httpError{
				status: http.StatusRequestEntityTooLarge,
				msg:    fmt.Sprintf("event %d is %d bytes, over the limit of %d", i, len(raw), maxEvent),
			}
		}
		ev, err := decodeEvent(i, raw)
		if err != nil {
			return nil, err
		}
		evs[i] = ev
	}
	return evs, nil
}

// decodeEvent checks one event's fields: name a non-empty string outside the
// reserved prefixes, data and user objects (data defaults to {}), ts a
// non-negative integer, id and v strings. null counts as absent.
func decodeEvent(i int, raw json.RawMessage) (engine.IncomingEvent, error) {
	fault := func(field, reason string) error {
		return &engine.ValidationError{Index: i, Field: field, Reason: reason}
	}
	if len(raw) == 0 || raw[0] != '{' {
		return engine.IncomingEvent{}, fault("", "must be a JSON object")
	}
	var we wireEvent
	if err := json.Unmarshal(raw, &we); err != nil {
		return engine.IncomingEvent{}, fault("", "malformed JSON: "+err.Error())
	}

	var ev engine.IncomingEvent
	name, ok, err := jsonString(we.Name)
	switch {
	case err != nil:
		return ev, fault("name", err.Error())
	case !ok:
		return ev, fault("name", "is required")
	case name == "":
		return ev, fault("name", "must not be empty")
	case len(name) > MaxNameLength:
		return ev, fault("name", fmt.Sprintf("is longer than %d bytes", MaxNameLength))
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return ev, fault("name", "must not hold control characters")
	}
	if p := engine.ReservedPrefix(name); p != "" {
		return ev, fault("name", "the "+p+" prefix is reserved for internal events")
	}
	ev.Name = name

	if ev.ID, _, err = jsonString(we.ID); err != nil {
		return ev, fault("id", err.Error())
	}
	if len(ev.ID) > MaxNameLength {
		return ev, fault("id", fmt.Sprintf("is longer than %d bytes", MaxNameLength))
	}
	if ev.V, _, err = jsonString(we.V); err != nil {
		return ev, fault("v", err.Error())
	}
	switch {
	case absent(we.Data):
		ev.Data = json.RawMessage("{}")
	case we.Data[0] != '{':
		return ev, fault("data", "must be an object")
	default:
		ev.Data = we.Data
	}
	switch {
	case absent(we.User):
	case we.User[0] != '{':
		return ev, fault("user", "must be an object")
	default:
		ev.User = we.User
	}
	if !absent(we.TS) {
		ts, ok := millis(we.TS)
		if !ok {
			return ev, fault("ts", "must be a non-negative integer (milliseconds since the epoch)")
		}
		if ts > store.MaxMS {
			return ev, fault("ts", fmt.Sprintf("must be no later than %d (%s)", store.MaxMS, store.MaxTime.Format(time.RFC3339Nano)))
		}
		ev.TS = ts
	}
	return ev, nil
}

// absent reports whether a field is missing or null.
func absent(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// jsonString decodes a string field; ok is false when it is absent.
func jsonString(raw json.RawMessage) (s string, ok bool, err error) {
	if absent(raw) {
		return "", false, nil
	}
	if raw[0] != '"' {
		return "", false, errors.New("must be a string")
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, errors.New("must be a string")
	}
	return s, true, nil
}

// millis reads a JSON number that holds a non-negative integer, written
// plainly (1700000000000) or not (1.7e12).
func millis(raw json.RawMessage) (int64, bool) {
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, n >= 0
	}
	if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < 0 || f != math.Trunc(f) || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}
