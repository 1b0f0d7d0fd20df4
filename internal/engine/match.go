package engine

import (
	"fmt"
	"strings"
)

// eventPattern matches event names: an exact name, or a prefix ending in
// "/" or "." followed by a final "*" ("blog/*", "contact/form.*"), which
// matches any non-empty rest.
type eventPattern struct {
	exact  string
	prefix string
}

func parseEventPattern(p string) (eventPattern, error) {
	if p == "" {
		return eventPattern{}, fmt.Errorf("empty event name")
	}
	i := strings.IndexByte(p, '*')
	if i < 0 {
		return eventPattern{exact: p}, nil
	}
	if i != len(p)-1 || i == 0 || (p[i-1] != '/' && p[i-1] != '.') {
		return eventPattern{}, fmt.Errorf("event %q: a wildcard must be a final * after %q or %q", p, "/", ".")
	}
	return eventPattern{prefix: p[:i]}, nil
}

func (m eventPattern) match(name string) bool {
	if m.prefix == "" {
		return name == m.exact
	}
	return len(name) > len(m.prefix) && strings.HasPrefix(name, m.prefix)
}
