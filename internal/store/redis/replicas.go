package redis

import (
	"context"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// acked runs an acknowledging script. With MinReplicas set, the script
// and a WAIT follow each other on one connection (WAIT counts the replicas
// that have that connection's writes), and fewer confirmations than asked
// turn the script's answer into store.ErrNotReplicated: the write is done
// on the master, but a failover now may lose it. On a cluster that
// connection is to the master serving the engine's slot (engineNode); a
// node that no longer serves it answers MOVED without running the script,
// which is ErrUnavailable.
func (s *Store) acked(ctx context.Context, script *goredis.Script, keys []string, args ...any) *goredis.Cmd {
	if s.minReplicas == 0 {
		return script.Run(ctx, s.rdb, keys, args...)
	}
	type eval func(ctx context.Context, c goredis.Scripter, keys []string, args ...any) *goredis.Cmd
	node, err := s.engineNode(ctx)
	if err != nil {
		cmd := goredis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd
	}
	run := func(e eval) (*goredis.Cmd, *goredis.Cmd) {
		var cmd *goredis.Cmd
		var wait *goredis.Cmd
		// The commands' own errors are read below.
		_, _ = node.Pipelined(ctx, func(p goredis.Pipeliner) error {
			cmd = e(ctx, p, keys, args...)
			wait = p.Do(ctx, "WAIT", s.minReplicas, s.replicaTimeout.Milliseconds())
			return nil
		})
		return cmd, wait
	}
	cmd, wait := run(script.EvalSha)
	if goredis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		cmd, wait = run(script.Eval) // a server that lost its script cache (a restart, a new master)
	}
	if cmd.Err() != nil {
		s.movedOrGone(ctx, cmd.Err())
		return cmd
	}
	if n, err := wait.Int64(); err != nil {
		cmd.SetErr(fmt.Errorf("%w: WAIT: %w", store.ErrNotReplicated, err))
	} else if n < int64(s.minReplicas) {
		cmd.SetErr(fmt.Errorf("%w: %d of %d replicas within %s", store.ErrNotReplicated, n, s.minReplicas, s.replicaTimeout))
	}
	return cmd
}
