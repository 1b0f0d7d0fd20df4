package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	goredis "github.com/redis/go-redis/v9"
)

// asynqQueue is the one queue asynq's rows use (its default).
const asynqQueue = "default"

// taskType names the benchmark's asynq tasks.
const (
	taskNoop  = "bench:noop"
	taskChain = "bench:chain"
	taskCrash = "bench:crash"
)

// asynqConn is how asynq reaches the shared redis-server.
func asynqConn(addr string) asynq.RedisClientOpt { return asynq.RedisClientOpt{Addr: addr} }

// newAsynqServer returns a server with the settings the table notes:
// default everything but Concurrency, one queue, quiet logs.
func newAsynqServer(addr string, concurrency int) *asynq.Server {
	return asynq.NewServer(asynqConn(addr), asynq.Config{
		Concurrency: concurrency,
		Queues:      map[string]int{asynqQueue: 1},
		LogLevel:    asynq.FatalLevel,
	})
}

// asynqProcessed is asynq's own count of processed tasks in the queue: one
// GET, so waiting on it costs the measured Redis next to nothing.
func asynqProcessed(ctx context.Context, rs *redisServer) (int, error) {
	v, err := rs.client.Get(ctx, "asynq:{"+asynqQueue+"}:processed").Result()
	if err != nil {
		if errors.Is(err, goredis.Nil) {
			return 0, nil
		}
		return 0, fmt.Errorf("asynq: processed count: %w", err)
	}
	return strconv.Atoi(v)
}

// waitProcessed returns once asynq has acknowledged n tasks, checking every
// millisecond (asynq announces nothing a client could wait on).
func waitProcessed(ctx context.Context, rs *redisServer, n int) (polls int, err error) {
	for {
		polls++
		got, err := asynqProcessed(ctx, rs)
		if err != nil {
			return polls, err
		}
		if got >= n {
			return polls, nil
		}
		select {
		case <-ctx.Done():
			return polls, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}
