package jobs

import (
	"encoding/json"
	"fmt"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// schemas check the data of the site's known events at intake, so a
// malformed event is refused with a 400 naming the field instead of failing
// a run later. Unknown event names pass unchecked.
var schemas = map[string]func(data map[string]json.RawMessage) (field, reason string){
	"test/hello.world": func(d map[string]json.RawMessage) (string, string) {
		return requireString(d, "email")
	},
}

// Validate is the engine's intake validator for the site's events.
func Validate(index int, ev engine.IncomingEvent) error {
	check, ok := schemas[ev.Name]
	if !ok {
		return nil
	}
	var data map[string]json.RawMessage
	if len(ev.Data) > 0 {
		if err := json.Unmarshal(ev.Data, &data); err != nil {
			return &engine.ValidationError{Index: index, Field: "data", Reason: "must be an object"}
		}
	}
	if field, reason := check(data); field != "" {
		return &engine.ValidationError{Index: index, Field: "data." + field, Reason: reason}
	}
	return nil
}

func requireString(d map[string]json.RawMessage, key string) (string, string) {
	raw, ok := d[key]
	if !ok {
		return key, "is required"
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return key, fmt.Sprintf("must be a string, got %s", raw)
	}
	if s == "" {
		return key, "must not be empty"
	}
	return "", ""
}
