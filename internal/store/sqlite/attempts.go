package sqlite

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// A step's attempts column (migrations/0003_lean_records.sql) is NULL for
// the usual step: Completed after one attempt without error that ran from
// the step's started_at to its ended_at. Any other list is a JSON array
// with one array per attempt, [started_at, ended_at] or [started_at,
// ended_at, "error"], in unix milliseconds, null for a time not set. Rows
// written by schema version 2 hold an array of objects {started_at,
// ended_at, error} with RFC 3339 times; decodeAttempts reads both.
//
// Attempt times are kept to the millisecond, as every other time here.

// encodeAttempts is the attempts column of st: nil (NULL) when the step's
// own times say it all.
func encodeAttempts(st store.Step) (any, error) {
	if len(st.Attempts) == 1 && st.Status == store.StatusCompleted {
		a := st.Attempts[0]
		if a.Error == "" && !st.StartedAt.IsZero() && !st.EndedAt.IsZero() &&
			sameMS(a.StartedAt, st.StartedAt) && sameMS(a.EndedAt, st.EndedAt) {
			return nil, nil
		}
	}
	list := make([][]any, len(st.Attempts))
	for i, a := range st.Attempts {
		list[i] = []any{ms(a.StartedAt), ms(a.EndedAt)}
		if a.Error != "" {
			list[i] = append(list[i], a.Error)
		}
	}
	doc, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	return string(doc), nil
}

// stepCode is a step's kind or status as stored: NULL for the usual one.
func stepCode(v, usual string) any {
	if v == usual {
		return nil
	}
	return v
}

// sameMS reports whether a and b are both set and fall in the same
// millisecond.
func sameMS(a, b time.Time) bool {
	return !a.IsZero() && !b.IsZero() && a.UnixMilli() == b.UnixMilli()
}

// decodeAttempts reads the attempts column of a step whose own times are
// started and ended; nil when it has none.
func decodeAttempts(col []byte, started, ended time.Time) ([]store.Attempt, error) {
	if col == nil {
		return []store.Attempt{{StartedAt: started, EndedAt: ended}}, nil
	}
	if bytes.HasPrefix(bytes.TrimSpace(col), []byte("[{")) {
		var old []store.Attempt // schema version 2
		if err := json.Unmarshal(col, &old); err != nil {
			return nil, err
		}
		if len(old) == 0 {
			return nil, nil
		}
		return old, nil
	}
	var list [][]json.RawMessage
	if err := json.Unmarshal(col, &list); err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, nil
	}
	out := make([]store.Attempt, len(list))
	for i, a := range list {
		if len(a) < 2 || len(a) > 3 {
			return nil, fmt.Errorf("attempt %d has %d fields", i, len(a))
		}
		var start, end *int64
		if err := json.Unmarshal(a[0], &start); err != nil {
			return nil, fmt.Errorf("attempt %d: %w", i, err)
		}
		if err := json.Unmarshal(a[1], &end); err != nil {
			return nil, fmt.Errorf("attempt %d: %w", i, err)
		}
		if len(a) == 3 {
			if err := json.Unmarshal(a[2], &out[i].Error); err != nil {
				return nil, fmt.Errorf("attempt %d: %w", i, err)
			}
		}
		if start != nil {
			out[i].StartedAt = time.UnixMilli(*start).UTC()
		}
		if end != nil {
			out[i].EndedAt = time.UnixMilli(*end).UTC()
		}
	}
	return out, nil
}
