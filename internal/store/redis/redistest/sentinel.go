package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// MasterName is the name the harness's sentinels monitor.
const MasterName = "cyberdrew"

// Sentinel is a master, one replica and three sentinels (redis-server
// --sentinel), each on a free loopback port.
type Sentinel struct {
	Master, Replica *Server
	Sentinels       []*Server
}

// StartSentinel starts the topology in dir and returns once the replica is
// in sync and every sentinel knows it, so a failover can pick it.
func StartSentinel(dir string) (*Sentinel, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrMissing
	}
	t := &Sentinel{}
	ok := false
	defer func() {
		if !ok {
			t.Stop()
		}
	}()
	sub := func(name string) (string, error) {
		d := filepath.Join(dir, name)
		return d, os.MkdirAll(d, 0o755)
	}
	d, err := sub("master")
	if err != nil {
		return nil, err
	}
	if t.Master, err = start(d, false); err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	host, port, _ := strings.Cut(t.Master.Addr, ":")
	if d, err = sub("replica"); err != nil {
		return nil, err
	}
	if t.Replica, err = start(d, false, "--replicaof", host, port); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startGuard)
	defer cancel()
	if err := await(ctx, "the replica's link to the master", func() (bool, error) {
		info, err := info(ctx, t.Replica.Addr, "replication")
		return strings.Contains(info, "master_link_status:up"), err
	}); err != nil {
		return nil, err
	}
	for i := range 3 {
		if d, err = sub(fmt.Sprintf("sentinel%d", i)); err != nil {
			return nil, err
		}
		s, err := startSentinel(bin, d, t.Master.Addr)
		if err != nil {
			return nil, fmt.Errorf("sentinel %d: %w", i, err)
		}
		t.Sentinels = append(t.Sentinels, s)
	}
	for _, s := range t.Sentinels {
		c := goredis.NewSentinelClient(&goredis.Options{Addr: s.Addr})
		err := await(ctx, "sentinel "+s.Addr+" to know the replica", func() (bool, error) {
			replicas, err := c.Replicas(ctx, MasterName).Result()
			if err != nil {
				return false, err
			}
			for _, r := range replicas {
				if r["ip"]+":"+r["port"] == t.Replica.Addr && r["flags"] == "slave" && r["master-link-status"] == "ok" {
					return true, nil
				}
			}
			return false, nil
		})
		c.Close()
		if err != nil {
			return nil, err
		}
	}
	ok = true
	return t, nil
}

// startSentinel runs one sentinel monitoring master, from a config file in
// dir (sentinels rewrite theirs).
func startSentinel(bin, dir, master string) (*Server, error) {
	host, port, _ := strings.Cut(master, ":")
	var lastErr error
	for range 5 { // the free port may be taken between probe and start
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"+
			"sentinel monitor %s %s %s 2\n"+
			"sentinel down-after-milliseconds %[3]s 1000\n"+
			"sentinel failover-timeout %[3]s 10000\n",
			p, dir, MasterName, host, port)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(p), dir: dir, args: []string{conf, "--sentinel"}}
		if lastErr = s.run(bin); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// StartSentinelT starts the topology for one test in t.TempDir() and stops
// it when the test ends; it skips or fails the test as Skip does when it
// cannot.
func StartSentinelT(t testing.TB) *Sentinel {
	t.Helper()
	s, err := StartSentinel(t.TempDir())
	if err != nil {
		Skip(t, err)
	}
	t.Cleanup(s.Stop)
	return s
}

// URL is the redis+sentinel:// URL of database db.
func (t *Sentinel) URL(db int) string {
	var addrs []string
	for _, s := range t.Sentinels {
		addrs = append(addrs, s.Addr)
	}
	return fmt.Sprintf("redis+sentinel://%s/%s/%d", strings.Join(addrs, ","), MasterName, db)
}

// Failover forces a failover (SENTINEL FAILOVER) and returns once the
// sentinels have switched to the new master, with its address.
func (t *Sentinel) Failover(ctx context.Context) (string, error) {
	c := goredis.NewSentinelClient(&goredis.Options{Addr: t.Sentinels[0].Addr})
	defer c.Close()
	ps := c.Subscribe(ctx, "+switch-master")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		return "", fmt.Errorf("failover: subscribe: %w", err)
	}
	if err := c.Failover(ctx, MasterName).Err(); err != nil {
		return "", fmt.Errorf("failover: %w", err)
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil {
		return "", fmt.Errorf("failover: await +switch-master: %w", err)
	}
	// "<name> <old ip> <old port> <new ip> <new port>"
	f := strings.Fields(msg.Payload)
	if len(f) != 5 {
		return "", fmt.Errorf("failover: +switch-master %q", msg.Payload)
	}
	return f[3] + ":" + f[4], nil
}

// Stop kills every process.
func (t *Sentinel) Stop() {
	for _, s := range append([]*Server{t.Master, t.Replica}, t.Sentinels...) {
		if s != nil {
			s.Stop()
		}
	}
}

// await re-checks cond until it holds or ctx ends; a harness's start-up
// wait, checked every 10 ms.
func await(ctx context.Context, what string, cond func() (bool, error)) error {
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, errors.Join(ctx.Err(), last))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// info is the INFO section of the server at addr.
func info(ctx context.Context, addr, section string) (string, error) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	return c.Info(ctx, section).Result()
}
