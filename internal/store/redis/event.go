package redis

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// storedEvent is an event's JSON as event:<id> holds it (layout 5; keys.go):
// without its id, which the key holds, and with the time it was received as
// a lag behind its ts, in ms, left out when there is none (an event sent
// without a ts). Its ts is left out too when it is the time of its id, a
// ULID: an event sent without a ts and given its id on receipt. An event an
// earlier layout stored holds internal_id and received_at instead
// (store.Event's JSON), and always a ts; it is read as well.
type storedEvent struct {
	ClientID string          `json:"id,omitempty"`
	Name     string          `json:"name"`
	Data     json.RawMessage `json:"data"`
	User     json.RawMessage `json:"user,omitempty"`
	TS       *int64          `json:"ts,omitempty"` // nil: idTime
	Version  string          `json:"v,omitempty"`
	Lag      int64           `json:"r,omitempty"`

	InternalID string     `json:"internal_id,omitempty"` // earlier layouts
	ReceivedAt *time.Time `json:"received_at,omitempty"` // earlier layouts
}

// encodeEvent is ev's stored JSON, and whether it leaves out ev's ts.
func encodeEvent(ev store.Event) (doc []byte, noTS bool, err error) {
	se := storedEvent{ClientID: ev.ClientID, Name: ev.Name, Data: ev.Data, User: ev.User,
		Version: ev.Version, Lag: ev.ReceivedAt.UnixMilli() - ev.TS}
	if t, ok := idTime(ev.ID); !ok || t != ev.TS {
		se.TS = &ev.TS
	}
	doc, err = appendStoredEvent(make([]byte, 0, 64+len(ev.Data)+len(ev.User)), &se)
	return doc, se.TS == nil, err
}

// appendStoredEvent appends se's JSON, byte for byte what json.Marshal
// writes for it, without its reflection: an event is encoded on every
// publication, and json.Marshal was most of the Go time the store spends
// on one (docs/BENCHMARKS.md, "The event's JSON by hand"). A string or a
// raw value that json.Marshal would change (escape or compact) goes
// through json.Marshal itself. Only the fields of layout 5 and later are
// written.
func appendStoredEvent(b []byte, se *storedEvent) ([]byte, error) {
	var err error
	b = append(b, '{')
	if se.ClientID != "" {
		b = append(b, `"id":`...)
		b = appendJSONString(b, se.ClientID)
		b = append(b, ',')
	}
	b = append(b, `"name":`...)
	b = appendJSONString(b, se.Name)
	b = append(b, `,"data":`...)
	if b, err = appendRaw(b, se.Data); err != nil {
		return nil, err
	}
	if len(se.User) > 0 {
		b = append(b, `,"user":`...)
		if b, err = appendRaw(b, se.User); err != nil {
			return nil, err
		}
	}
	if se.TS != nil {
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, *se.TS, 10)
	}
	if se.Version != "" {
		b = append(b, `,"v":`...)
		b = appendJSONString(b, se.Version)
	}
	if se.Lag != 0 {
		b = append(b, `,"r":`...)
		b = strconv.AppendInt(b, se.Lag, 10)
	}
	return append(b, '}'), nil
}

// appendRaw appends the JSON value v as json.Marshal writes a
// json.RawMessage: compacted, with <, > and & escaped. v with none of the
// bytes that changes is appended as it is.
func appendRaw(b []byte, v json.RawMessage) ([]byte, error) {
	if len(v) == 0 {
		return append(b, "null"...), nil
	}
	if plainJSON(string(v)) {
		return append(b, v...), nil
	}
	q, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, q...), nil
}

// plainJSON reports whether the JSON value s holds only bytes that
// json.Marshal copies as they are in a json.RawMessage: printable ASCII
// but for the space (which compacting drops outside strings) and <, > and
// & (which it escapes).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ', c >= 0x7f, c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// idTime is the time of an id that is a ULID, in unix ms.
func idTime(id string) (int64, bool) {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return 0, false
	}
	return int64(u.Time()), true
}

// decodeEvent reads the stored JSON doc of event id, of any layout.
func decodeEvent(id, doc string) (store.Event, error) {
	var se storedEvent
	if err := json.Unmarshal([]byte(doc), &se); err != nil {
		return store.Event{}, err
	}
	var ts int64
	if se.TS != nil {
		ts = *se.TS
	} else {
		ts, _ = idTime(id)
	}
	ev := store.Event{ID: id, ClientID: se.ClientID, Name: se.Name, Data: se.Data, User: se.User, TS: ts,
		Version: se.Version, ReceivedAt: fromMS(ts + se.Lag)}
	if se.InternalID != "" {
		ev.ID = se.InternalID
	}
	if se.ReceivedAt != nil {
		ev.ReceivedAt = *se.ReceivedAt
	}
	return ev, nil
}

// splitEvent splits what event:<id> holds (keys.go) into the event's JSON,
// which holds no raw newline, and the ids of the runs it fed, a line each
// after it: a run the event keeps has more on its line, after a tab, and
// leaves out its id, the event's (appendKeptLine), unless layout 7 wrote it.
func splitEvent(id, v string) (doc string, runs []string) {
	doc, rest, ok := strings.Cut(v, "\n")
	if !ok {
		return doc, nil
	}
	runs = strings.Split(rest, "\n")
	for i, line := range runs {
		if runs[i], _, _ = strings.Cut(line, "\t"); runs[i] == "" {
			runs[i] = id
		}
	}
	return doc, runs
}

// ulidTime is the time (unix ms) in the ULID id, as id_time in
// lua/common.lua takes it: idTime's ULIDs, in upper case only (the
// scripts do not decode lower case).
func ulidTime(id string) (int64, bool) {
	if strings.ContainsFunc(id, unicode.IsLower) {
		return 0, false
	}
	return idTime(id)
}

// appendKeptLine appends the line of the run id (its event's) the event
// keeps (event_line in lua/common.lua): "\t<created>\t<fn>", then
// "\t<ftimeout ms>" when set; <created> is signed ms after the id's time
// when it is a ULID, else the time itself.
func appendKeptLine(b []byte, id string, created int64, fn string, ftimeout int64) []byte {
	b = append(b, '\t')
	if t, ok := ulidTime(id); ok {
		if created >= t {
			b = append(b, '+')
		}
		b = strconv.AppendInt(b, created-t, 10)
	} else {
		b = strconv.AppendInt(b, created, 10)
	}
	b = append(b, '\t')
	b = append(b, fn...)
	if ftimeout > 0 {
		b = append(b, '\t')
		b = strconv.AppendInt(b, ftimeout, 10)
	}
	return b
}

// keptRun reads the run id its event keeps (kept_fields in
// lua/common.lua) from the event's value v and the run's queue score: the
// fields its hash will hold once a script loads it, or nil when the event
// keeps no such run (the run is out of the queue, or was never kept). A
// caller looks for the run's hash first.
func keptRun(id, v string, avail float64, queued bool) map[string]string {
	if !queued {
		return nil
	}
	_, rest, ok := strings.Cut(v, "\n\t")
	after, relative := ulidTime(id)
	if !ok {
		_, rest, ok = strings.Cut(v, "\n"+id+"\t") // layout 7's line
		relative = false
	}
	if !ok {
		return nil
	}
	line, _, _ := strings.Cut(rest, "\n")
	created, rest, ok := strings.Cut(line, "\t")
	if !ok {
		return nil
	}
	if relative {
		d, err := strconv.ParseInt(created, 10, 64)
		if err != nil {
			return nil
		}
		created = strconv.FormatInt(after+d, 10)
	}
	fn, ftimeout, _ := strings.Cut(rest, "\t")
	m := map[string]string{"fn": fn, "ev": id, "status": string(store.StatusQueued), "created": created,
		"avail": strconv.FormatInt(int64(avail), 10)}
	if ftimeout != "" {
		m["ftimeout"] = ftimeout
	}
	return m
}

// runRead is a run's hash read with what keeps it in its event (keptRun):
// read in one MULTI, they agree, whether a script loads the run meanwhile
// or not.
type runRead struct {
	hash  *goredis.MapStringStringCmd
	event *goredis.StringCmd
	avail *goredis.FloatCmd
}

func (s *Store) readRun(ctx context.Context, p goredis.Pipeliner, id string) runRead {
	return runRead{p.HGetAll(ctx, s.keys.run(id)), p.Get(ctx, s.keys.event(id)), p.ZScore(ctx, s.keys.queueOf(id), id)}
}

// fields is the run's hash, or the fields its event keeps for it; empty
// when there is no such run.
func (r runRead) fields(id string) (map[string]string, error) {
	m, err := r.hash.Result()
	if err != nil || len(m) > 0 {
		return m, err
	}
	// An error here (an earlier layout's event hash) keeps no run.
	v, _ := r.event.Result()
	return keptRun(id, v, r.avail.Val(), r.avail.Err() == nil), nil
}
