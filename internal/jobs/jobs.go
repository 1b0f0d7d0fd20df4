// Package jobs holds the site's durable functions (JOBS.md): each is an
// engine.Function built from explicit dependencies and registered by the
// daemon; nothing registers itself.
package jobs

import "github.com/dcyfr/cyberdrew/internal/engine"

// Functions returns every site function, in registration order.
func Functions() []engine.Function {
	return []engine.Function{HelloWorld()}
}
