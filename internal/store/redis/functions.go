package redis

import (
	"context"
	"errors"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// The engine's function library (scripts.go). Open loads it; a server
// that has lost it (restarted without persistence, FUNCTION FLUSH, a node
// added to a cluster) gets it again at the first call that misses it, and
// a server without functions (before Redis 7, or whose ACL forbids them)
// runs the same code as scripts from then on. A library is replicated and
// persisted with the data, so a promoted replica has it.

// run calls an engine script on the store's client: as a function, in
// the next pipeline (pipeline.go) unless it is grouped, while the server
// may have functions.
func (s *Store) run(ctx context.Context, sc *script, keys []string, args ...any) *goredis.Cmd {
	if !s.functions.Load() {
		return sc.Run(ctx, s.rdb, keys, args...)
	}
	var cmd *goredis.Cmd
	if sc.grouped {
		cmd = s.rdb.FCall(ctx, sc.function, keys, args...)
	} else {
		cmds, err := s.pipelined(ctx, call{function: sc.function, keys: keys, args: args})
		if err != nil {
			return failedCmd(ctx, err)
		}
		cmd = cmds[0]
	}
	if !libraryMissing(cmd.Err()) {
		return cmd
	}
	return s.afterMissing(ctx, s.rdb, sc, keys, args...)
}

// afterMissing calls an engine script on c after its function was found
// missing, which means it did not run, so running it again cannot apply
// it twice: the function once the library is loaded again, else the
// script.
func (s *Store) afterMissing(ctx context.Context, c goredis.Cmdable, sc *script, keys []string, args ...any) *goredis.Cmd {
	if s.loadLibrary(ctx) {
		if cmd := c.FCall(ctx, sc.function, keys, args...); !libraryMissing(cmd.Err()) {
			return cmd
		}
	}
	return sc.Run(ctx, c, keys, args...)
}

// loadLibrary loads the engine's library on the server, or on every
// master of a cluster, and reports whether it did. A server that refuses
// it (no functions before Redis 7, an ACL without them, a library it
// cannot compile) has the store run its code as scripts from then on; one
// that cannot take it now (unreachable, loading, a failover) is asked
// again at the next call that misses it.
//
// Callers that all find the library missing at once (fifty workers after
// a restart) load it once: a caller that waited while another loaded it
// takes that load for its own.
func (s *Store) loadLibrary(ctx context.Context) bool {
	loads := s.library.loads.Load()
	s.library.Lock()
	defer s.library.Unlock()
	if s.library.loads.Load() != loads {
		return true
	}
	err := s.eachMaster(ctx, func(ctx context.Context, c goredis.Cmdable) error {
		return c.FunctionLoadReplace(ctx, librarySource).Err()
	})
	if err == nil {
		s.library.loads.Add(1)
		return true
	}
	if !transient(err) && s.functions.CompareAndSwap(true, false) {
		s.log.Info("redis: the server does not take the engine's function library; its code runs as scripts", "err", err)
	}
	return false
}

// transient reports whether err may go away by itself: the server could
// not be reached or could not answer now, rather than refusing.
func transient(err error) bool {
	var reply goredis.Error
	if !errors.As(err, &reply) {
		return true // the network, a timeout, a closed client
	}
	for _, p := range []string{"LOADING", "BUSY", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

// libraryMissing reports whether a call failed because the server has no
// such function: its library is not loaded, or the server has no FCALL.
func libraryMissing(err error) bool {
	return err != nil && (strings.HasPrefix(err.Error(), "ERR Function not found") || functionsRefused(err))
}

// functionsRefused reports whether the server refused a function command
// itself: unknown before Redis 7, or not allowed to this user.
func functionsRefused(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "ERR unknown command") || strings.HasPrefix(msg, "ERR unknown subcommand") ||
		strings.HasPrefix(msg, "NOPERM")
}
