package redis

import (
	"context"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// acked runs an acknowledging script. With MinReplicas set, the script
// and a WAIT follow each other on one connection (WAIT counts the replicas
// that have that connection's writes), and fewer confirmations than asked
// turn the script's answer into store.ErrNotReplicated: the write is done
// on the master, but a failover now may lose it. On a cluster that
// connection is to the master serving the slot of the script's keys
// (nodeOf keys[0], the engine prefix of its partition). A node that no
// longer serves it answers MOVED without running the script:
// acked learns the slots again and runs it once more on the new master (a
// failover just happened), and a second MOVED is ErrUnavailable.
func (s *Store) acked(ctx context.Context, script *script, keys []string, args ...any) *goredis.Cmd {
	if s.minReplicas == 0 {
		return s.run(ctx, script, keys, args...)
	}
	cmd, wait := s.ackedOnce(ctx, script, keys, args)
	if s.cluster != nil && goredis.HasErrorPrefix(cmd.Err(), "MOVED") && s.awaitSlotOwner(ctx, cmd.Err(), keys[0]) {
		// The script did not run: running it on the slot's new master
		// cannot apply it twice.
		cmd, wait = s.ackedOnce(ctx, script, keys, args)
	}
	if cmd.Err() != nil {
		return cmd
	}
	if err := s.replicated(wait); err != nil {
		cmd.SetErr(err)
	}
	return cmd
}

// replicated reads the answer of a WAIT: nil when MinReplicas replicas
// confirmed, else an ErrNotReplicated saying how many did.
func (s *Store) replicated(wait *goredis.Cmd) error {
	n, err := wait.Int64()
	switch {
	case err != nil:
		return fmt.Errorf("%w: WAIT: %w", store.ErrNotReplicated, err)
	case n < int64(s.minReplicas):
		return fmt.Errorf("%w: %d of %d replicas within %s", store.ErrNotReplicated, n, s.minReplicas, s.replicaTimeout)
	}
	return nil
}

// ackedOnce runs script and a WAIT on one connection to the server of
// its keys and returns both answers; after a failed script it has the
// cluster client learn the slots again.
func (s *Store) ackedOnce(ctx context.Context, script *script, keys []string, args []any) (cmd, wait *goredis.Cmd) {
	node, err := s.nodeOf(ctx, keys[0])
	if err != nil {
		cmd = goredis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd, nil
	}
	run := func(call func(p goredis.Pipeliner) *goredis.Cmd) (*goredis.Cmd, *goredis.Cmd) {
		var cmd, wait *goredis.Cmd
		// The commands' own errors are read by the caller.
		_, _ = node.Pipelined(ctx, func(p goredis.Pipeliner) error {
			cmd = call(p)
			wait = p.Do(ctx, "WAIT", s.minReplicas, s.replicaTimeout.Milliseconds())
			return nil
		})
		return cmd, wait
	}
	// As run: the function, loading the library when the server lacks
	// it, else the script.
	fcall := func(p goredis.Pipeliner) *goredis.Cmd { return p.FCall(ctx, script.function, keys, args...) }
	if s.functions.Load() {
		cmd, wait = run(fcall)
		if libraryMissing(cmd.Err()) && s.loadLibrary(ctx) {
			cmd, wait = run(fcall)
		}
	}
	if cmd == nil || libraryMissing(cmd.Err()) {
		cmd, wait = run(func(p goredis.Pipeliner) *goredis.Cmd { return script.EvalSha(ctx, p, keys, args...) })
		if goredis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// a server that lost its script cache (a restart, a new master)
			cmd, wait = run(func(p goredis.Pipeliner) *goredis.Cmd { return script.Eval(ctx, p, keys, args...) })
		}
	}
	if cmd.Err() != nil {
		s.movedOrGone(ctx, cmd.Err())
	}
	return cmd, wait
}

// slotMoveWait bounds how long acked waits for the cluster client to learn
// that a slot moved before it answers ErrUnavailable.
const slotMoveWait = time.Second

// awaitSlotOwner waits until the cluster client names the server a MOVED
// reply named (MOVED <slot> <host:port>) as the master of key, and
// reports whether it did within slotMoveWait: go-redis learns the slots
// again in the background (movedOrGone asked it to).
func (s *Store) awaitSlotOwner(ctx context.Context, moved error, key string) bool {
	fields := strings.Fields(moved.Error())
	if len(fields) != 3 {
		return false
	}
	target := fields[2]
	deadline := time.Now().Add(slotMoveWait)
	for {
		if node, err := s.cluster.MasterForKey(ctx, key); err == nil && node.Options().Addr == target {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		s.cluster.ReloadState(ctx)
		time.Sleep(10 * time.Millisecond)
	}
}
