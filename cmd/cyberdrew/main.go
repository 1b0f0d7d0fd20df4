// Command cyberdrew is a self-hosted durable background-job engine with an
// Inngest-compatible event API, in one binary. See `cyberdrew --help`.
package main

import (
	"os"

	"github.com/dcyfr/cyberdrew/internal/cli"
	"github.com/dcyfr/cyberdrew/internal/daemon"
)

// Set by release builds: -ldflags "-X main.version=v1.0.0 -X main.commit=… -X main.date=…".
var (
	version string
	commit  string
	date    string
)

func main() {
	os.Exit(cli.Main(cli.Options{
		Serve: daemon.Serve,
		Build: cli.Build{Version: version, Commit: commit, Date: date},
	}))
}
