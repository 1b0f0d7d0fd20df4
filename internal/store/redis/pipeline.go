package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"
)

// Automatic pipelining. The engine's calls that are not grouped into one
// script (a run's step commits, its reads of the site's keys, claims) go
// to Redis through one batcher: the calls of concurrent callers are sent
// as one pipeline, so fifty workers each committing a step cost the
// daemon one write and a few reads on the socket rather than fifty of
// each, and Redis reads them in one go. Each call stays its own command,
// with its own answer and error, and runs as it would alone: a caller's
// calls keep their order (the cluster client sends the commands for one
// node in order). The first caller does not wait for others: a call made
// alone goes at once, and only calls that arrive while a pipeline is in
// flight join the next (batch.go).

// call is one command of a pipeline: the library's function named
// function with keys and args, or, when function is "", the command cmd.
type call struct {
	function string
	keys     []string
	args     []any
	cmd      []any
}

// pipelineGroup sends the calls of a group of callers as one pipeline
// and returns each call's command, its answer or error.
func (s *Store) pipelineGroup(ctx context.Context, calls []call) ([]*goredis.Cmd, error) {
	cmds := make([]*goredis.Cmd, len(calls))
	// Each command's error is its caller's.
	_, _ = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, c := range calls {
			if c.function != "" {
				cmds[i] = p.FCall(ctx, c.function, c.keys, c.args...)
			} else {
				cmds[i] = p.Do(ctx, c.cmd...)
			}
		}
		return nil
	})
	return cmds, nil
}

// command sends one command in the next pipeline and returns its answer.
func (s *Store) command(ctx context.Context, args ...any) *goredis.Cmd {
	cmds, err := s.pipelined(ctx, call{cmd: args})
	if err != nil {
		return failedCmd(ctx, err)
	}
	return cmds[0]
}

// pipelined sends calls in the next pipeline and returns their commands.
func (s *Store) pipelined(ctx context.Context, calls ...call) ([]*goredis.Cmd, error) {
	return s.calls.do(ctx, calls)
}

// failedCmd is a command that failed with err before it was sent.
func failedCmd(ctx context.Context, err error) *goredis.Cmd {
	cmd := goredis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}
