package store

import (
	"encoding/json"
	"fmt"
)

// Validate checks what every backend refuses with ErrInvalid before storing
// a publication: an event without a name, data or user that is not JSON, a
// run spec without an id or function.
func (p Publication) Validate() error {
	ev := p.Event
	if ev.Name == "" {
		return fmt.Errorf("%w: event name is empty", ErrInvalid)
	}
	if len(ev.Data) > 0 && !json.Valid(ev.Data) {
		return fmt.Errorf("%w: event %q: data is not JSON", ErrInvalid, ev.Name)
	}
	if len(ev.User) > 0 && !json.Valid(ev.User) {
		return fmt.Errorf("%w: event %q: user is not JSON", ErrInvalid, ev.Name)
	}
	return ValidateRunSpecs(p.Runs)
}

// ValidateRunSpecs checks that every spec names its run and function.
func ValidateRunSpecs(specs []RunSpec) error {
	for _, r := range specs {
		if r.ID == "" || r.FunctionID == "" {
			return fmt.Errorf("%w: run spec needs an id and a function id", ErrInvalid)
		}
	}
	return nil
}
