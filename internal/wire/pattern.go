package wire

import (
	"fmt"
	"strings"
)

// EventPattern matches event names: an exact name, or a prefix ending in
// "/" or "." followed by a final "*" ("blog/*", "contact/form.*"), which
// matches any non-empty rest. It is the one rule for triggers, used by the
// engine to route events and by the client to predict which functions an
// event starts.
type EventPattern struct {
	exact  string
	prefix string
}

// ParseEventPattern checks a trigger's event pattern.
func ParseEventPattern(p string) (EventPattern, error) {
	if p == "" {
		return EventPattern{}, fmt.Errorf("empty event name")
	}
	i := strings.IndexByte(p, '*')
	if i < 0 {
		return EventPattern{exact: p}, nil
	}
	if i != len(p)-1 || i == 0 || (p[i-1] != '/' && p[i-1] != '.') {
		return EventPattern{}, fmt.Errorf("event %q: a wildcard must be a final * after %q or %q", p, "/", ".")
	}
	return EventPattern{prefix: p[:i]}, nil
}

// Match reports whether name matches the pattern.
func (m EventPattern) Match(name string) bool {
	if m.prefix == "" {
		return name == m.exact
	}
	return len(name) > len(m.prefix) && strings.HasPrefix(name, m.prefix)
}

// MatchEvent reports whether pattern matches name; an invalid pattern, which
// the engine refuses to register, matches nothing.
func MatchEvent(pattern, name string) bool {
	p, err := ParseEventPattern(pattern)
	return err == nil && p.Match(name)
}
