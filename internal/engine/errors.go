package engine

import (
	"errors"
	"strconv"
)

// ErrUnknownFunction: no registered function has the requested id.
var ErrUnknownFunction = errors.New("unknown function")

// ValidationError rejects a whole intake request: Index is the event's
// position in the request (0 for a single event), Field the JSON field at
// fault ("data.email"; empty when the event as a whole is at fault).
type ValidationError struct {
	Index  int
	Field  string
	Reason string
}

// Error reads "event 3: data.email: must be a string".
func (e *ValidationError) Error() string {
	msg := "event " + strconv.Itoa(e.Index) + ": "
	if e.Field != "" {
		msg += e.Field + ": "
	}
	return msg + e.Reason
}
