package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// errNoRedis means no redis-server binary was found.
var errNoRedis = errors.New("redis-server not found")

// redisHint tells the user how to get a redis-server.
const redisHint = "install it (apt-get install redis-server, brew install redis) or set REDIS_SERVER=/path/to/redis-server"

// persistence is how the shared redis-server keeps its data during a row.
type persistence struct {
	name string // as printed in the table
	aof  bool   // appendonly yes with appendfsync always; else no persistence at all
}

var (
	aofAlways = persistence{name: "AOF, appendfsync always", aof: true}
	noAOF     = persistence{name: "no AOF, no RDB", aof: false}
)

// redisServer is the one redis-server every Redis row of a run shares,
// started by the program on a free loopback port with RDB snapshots off.
type redisServer struct {
	addr    string
	version string
	cmd     *exec.Cmd
	client  *goredis.Client // the harness's own connection: config, flush, stats
}

// redisBinary finds redis-server: $REDIS_SERVER, else on PATH.
func redisBinary() (string, error) {
	if p := os.Getenv("REDIS_SERVER"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errNoRedis
	}
	return p, nil
}

// startRedis runs redis-server in dir and returns once it answers PING.
func startRedis(ctx context.Context, dir string) (*redisServer, error) {
	bin, err := redisBinary()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("redis: free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--appendfsync", "always", "--protected-mode", "no",
		"--maxclients", "10000")
	var out strings.Builder
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("redis: start %s: %w", bin, err)
	}
	s.client = goredis.NewClient(&goredis.Options{Addr: s.addr})
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.client.Ping(ctx).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis: %s did not answer PING: %w: %s", bin, err, out.String())
		}
		time.Sleep(10 * time.Millisecond) // the server is starting; nothing to observe but PING
	}
	info, err := s.client.Info(ctx, "server").Result()
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("redis: info: %w", err)
	}
	s.version = infoField(info, "redis_version")
	return s, nil
}

// url is the redis:// URL of database 0.
func (s *redisServer) url() string { return "redis://" + s.addr + "/0" }

func (s *redisServer) stop() {
	s.client.Close()
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

// reset empties the server and applies p, waiting for any AOF rewrite that
// turning AOF on starts.
func (s *redisServer) reset(ctx context.Context, p persistence) error {
	if err := s.client.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("redis: flushall: %w", err)
	}
	return s.apply(ctx, p)
}

// apply switches the server to p without emptying it, waits for any AOF
// rewrite that turning AOF on starts, and resets the statistics.
func (s *redisServer) apply(ctx context.Context, p persistence) error {
	aof := "no"
	if p.aof {
		aof = "yes"
	}
	if err := s.client.ConfigSet(ctx, "appendonly", aof).Err(); err != nil {
		return fmt.Errorf("redis: config set appendonly: %w", err)
	}
	for {
		info, err := s.client.Info(ctx, "persistence").Result()
		if err != nil {
			return fmt.Errorf("redis: info: %w", err)
		}
		if infoField(info, "aof_rewrite_in_progress") == "0" && infoField(info, "aof_rewrite_scheduled") == "0" {
			break
		}
		time.Sleep(10 * time.Millisecond) // Redis announces no end of rewrite
	}
	if err := s.client.ConfigResetStat(ctx).Err(); err != nil {
		return fmt.Errorf("redis: config resetstat: %w", err)
	}
	return nil
}

// serverUse is what the server has done since its stats were reset: the
// commands it executed, those called from scripts and functions included,
// and the CPU time it used (INFO cpu: user and system), in seconds. The
// CPU per job is the figure that bounds how many daemons one server
// carries, and on a shared machine it moves less than a rate.
type serverUse struct {
	commands int64
	cpu      float64
}

// use reads the server's use so far, in one INFO call.
func (s *redisServer) use(ctx context.Context) (serverUse, error) {
	info, err := s.client.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		return serverUse{}, fmt.Errorf("redis: info: %w", err)
	}
	n, err := redistest.CommandCalls(info)
	if err != nil {
		return serverUse{}, fmt.Errorf("redis: %w", err)
	}
	u := serverUse{commands: n}
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(infoField(info, f), 64)
		if err != nil {
			return serverUse{}, fmt.Errorf("redis: %s: %w", f, err)
		}
		u.cpu += v
	}
	return u, nil
}

// usedMemory is the server's used_memory, in bytes.
func (s *redisServer) usedMemory(ctx context.Context) (int64, error) {
	info, err := s.client.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("redis: info: %w", err)
	}
	n, err := strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redis: used_memory: %w", err)
	}
	return n, nil
}

// infoField returns the value of key in an INFO answer.
func infoField(info, key string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return v
		}
	}
	return ""
}
