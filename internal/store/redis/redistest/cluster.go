package redistest

import (
	"context"
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

// clusterGuard bounds how long the cluster may take to form (nodes
// meeting, slots agreed, replicas in sync) or to fail over.
const clusterGuard = 30 * time.Second

// manualFailoverWait is how long Failover waits for a replica to take over
// before it asks again: past twice the node timeout the replica has given
// the manual failover up.
const manualFailoverWait = 12 * time.Second

// Cluster is a Redis Cluster of three masters, each with one replica: six
// redis-server --cluster-enabled processes on free loopback ports.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts six nodes in dir, makes them a cluster with
// redis-cli --cluster create (three masters, one replica each) and returns
// once every node reports cluster_state:ok, agrees on who serves every
// slot, and every replica is in sync with its master.
func StartCluster(dir string) (*Cluster, error) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("redis-cli not found on PATH: %w", err)
	}
	c := &Cluster{}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	for i := range 6 {
		d := filepath.Join(dir, fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		s, err := startClusterNode(d)
		if err != nil {
			return nil, fmt.Errorf("cluster node %d: %w", i, err)
		}
		c.Nodes = append(c.Nodes, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.Nodes {
		args = append(args, s.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterGuard)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
	}
	if err := c.awaitSettled(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// startClusterNode starts one cluster-enabled node in dir, with its
// cluster bus on a free port of its own (the default, port+10000, may be
// out of range or taken).
func startClusterNode(dir string) (*Server, error) {
	var lastErr error
	for range 5 { // the bus port may be taken between probe and start
		bus, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := start(dir, false, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "5000",
			// A replica syncs at once, not 5 s later, and is listed in CLUSTER
			// SLOTS (which waits for its first replication offset) within 1 s.
			"--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1")
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// StartClusterT starts a cluster for one test in t.TempDir() and stops it
// when the test ends; it skips or fails the test as Skip does when it
// cannot.
func StartClusterT(t testing.TB) *Cluster {
	t.Helper()
	c, err := StartCluster(t.TempDir())
	if err != nil {
		Skip(t, err)
	}
	t.Cleanup(c.Stop)
	return c
}

// URL is the redis:// URL listing every node as a seed.
func (c *Cluster) URL() string {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr
	}
	return "redis://" + strings.Join(addrs, ",")
}

// Stop kills every node.
func (c *Cluster) Stop() {
	for _, s := range c.Nodes {
		s.Stop()
	}
}

// slotOwners is, as the node at addr sees it, the address of the master
// serving each slot that has one, and each master's replicas.
func slotOwners(ctx context.Context, addr string) (owners map[int]string, replicas map[string][]string, err error) {
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rdb.Close()
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, nil, err
	}
	owners, replicas = map[int]string{}, map[string][]string{}
	for _, r := range slots {
		if len(r.Nodes) == 0 {
			continue
		}
		m := r.Nodes[0].Addr
		for s := r.Start; s <= r.End; s++ {
			owners[s] = m
		}
		replicas[m] = nil
		for _, n := range r.Nodes[1:] {
			replicas[m] = append(replicas[m], n.Addr)
		}
	}
	return owners, replicas, nil
}

// awaitSettled waits until every node reports cluster_state:ok and the
// same master for every slot, and every replica's link to its master is
// up.
func (c *Cluster) awaitSettled(ctx context.Context) error {
	return await(ctx, "the cluster to settle", func() (bool, error) {
		var first map[int]string
		var reps map[string][]string
		for _, s := range c.Nodes {
			in, err := clusterInfo(ctx, s.Addr)
			if err != nil || !strings.Contains(in, "cluster_state:ok") {
				return false, err
			}
			owners, replicas, err := slotOwners(ctx, s.Addr)
			if err != nil {
				return false, err
			}
			if len(owners) != 16384 {
				return false, fmt.Errorf("%s knows %d slots", s.Addr, len(owners))
			}
			// Every node lists every other in CLUSTER SLOTS: a client reads
			// its nodes from whichever it asks, once, and would leave out a
			// replica that node does not list yet.
			listed := map[string]bool{}
			for _, m := range owners {
				listed[m] = true
				for _, r := range replicas[m] {
					listed[r] = true
				}
			}
			if len(listed) != len(c.Nodes) {
				return false, nil
			}
			if first == nil {
				first, reps = owners, replicas
				continue
			}
			for slot, m := range owners {
				if first[slot] != m {
					return false, fmt.Errorf("%s and %s disagree on slot %d", c.Nodes[0].Addr, s.Addr, slot)
				}
			}
		}
		for m, rs := range reps {
			if len(rs) == 0 {
				return false, fmt.Errorf("master %s has no replica yet", m)
			}
			for _, r := range rs {
				in, err := info(ctx, r, "replication")
				if err != nil || !strings.Contains(in, "master_link_status:up") {
					return false, err
				}
			}
		}
		return true, nil
	})
}

func clusterInfo(ctx context.Context, addr string) (string, error) {
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rdb.Close()
	return rdb.ClusterInfo(ctx).Result()
}

// MasterOf returns the address of the master serving key's slot and of its
// replica.
func (c *Cluster) MasterOf(ctx context.Context, key string) (master, replica string, err error) {
	master, replicas, err := c.masterSeenBy(ctx, c.Nodes[0].Addr, key)
	if err != nil {
		return "", "", err
	}
	if len(replicas) == 0 {
		return "", "", fmt.Errorf("master %s of key %q has no replica", master, key)
	}
	return master, replicas[0], nil
}

// Failover runs CLUSTER FAILOVER on the replica of the master serving
// key's slot and returns, with the replica's address, once every node
// names it master of that slot and the old master is its replica, in sync.
func (c *Cluster) Failover(ctx context.Context, key string) (string, error) {
	_, replica, err := c.MasterOf(ctx, key)
	if err != nil {
		return "", fmt.Errorf("failover: %w", err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: replica})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, clusterGuard)
	defer cancel()
	// A manual failover that the master does not join in time is aborted
	// by the replica, silently (its log says so): ask again until the
	// replica calls itself master.
	for promoted := false; !promoted; {
		if err := rdb.ClusterFailover(ctx).Err(); err != nil {
			return "", fmt.Errorf("failover: CLUSTER FAILOVER on %s: %w", replica, err)
		}
		attempt, stop := context.WithTimeout(ctx, manualFailoverWait)
		promoted = await(attempt, replica+" to call itself master", func() (bool, error) {
			role, err := rdb.Do(attempt, "ROLE").Slice()
			return err == nil && len(role) > 0 && role[0] == "master", err
		}) == nil
		stop()
		if !promoted && ctx.Err() != nil {
			return "", fmt.Errorf("failover: %s never became master: %w", replica, ctx.Err())
		}
	}
	if err := await(ctx, "every node to name "+replica+" master", func() (bool, error) {
		for _, s := range c.Nodes {
			m, _, err := c.masterSeenBy(ctx, s.Addr, key)
			if err != nil || m != replica {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return "", fmt.Errorf("failover: %w", err)
	}
	return replica, c.awaitSettled(ctx)
}

// masterSeenBy is the master of key's slot, and its replicas, as the node
// at addr sees them.
func (c *Cluster) masterSeenBy(ctx context.Context, addr, key string) (string, []string, error) {
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rdb.Close()
	slot, err := rdb.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return "", nil, err
	}
	owners, replicas, err := slotOwners(ctx, addr)
	if err != nil {
		return "", nil, err
	}
	m := owners[int(slot)]
	return m, replicas[m], nil
}
