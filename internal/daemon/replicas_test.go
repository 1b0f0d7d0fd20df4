package daemon_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// TestMinReplicasAcknowledgesOnlyReplicatedEvents sends an event, as a
// client does, to two daemons started with --redis-min-replicas 1: one on
// a Redis without replicas answers 503 saying the event may have been
// stored (and it was, on the master); one on a Sentinel setup (a master
// and a replica) answers 200 and its run completes.
func TestMinReplicasAcknowledgesOnlyReplicatedEvents(t *testing.T) {
	t.Parallel()
	lone := redistest.StartT(t, false)
	topo := redistest.StartSentinelT(t)
	for _, tc := range []struct {
		name, url string
		want      int
	}{
		{"no replica", lone.URL(0), 503},
		{"sentinel", topo.URL(0), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			cfg.Store = tc.url
			cfg.RedisMinReplicas = 1
			cfg.RedisReplicaTimeout = time.Second // ample for a replica on loopback, under -race
			c := client{t: t, base: start(t, cfg, nil)}
			changes := c.stream("")
			var answer struct {
				IDs    []string `json:"ids"`
				Error  string   `json:"error"`
				Stored string   `json:"stored"`
				Retry  string   `json:"retry"`
			}
			code := c.do("POST", "/e/anykey", `{"id":"replicated-1","name":"test/hello.world","data":{"email":"a@b.c"}}`, &answer)
			if code != tc.want {
				t.Fatalf("intake answered %d %+v, want %d", code, answer, tc.want)
			}
			var events struct {
				Data []store.Event `json:"data"`
			}
			c.do("GET", "/v1/events?name=test/hello.world", "", &events)
			if len(events.Data) != 1 {
				t.Fatalf("%d events stored, want 1 (on the master, acknowledged or not)", len(events.Data))
			}
			if code == 503 {
				if !strings.Contains(answer.Error, "replicas") || answer.Stored != "unknown" || !strings.Contains(answer.Retry, "same id") {
					t.Errorf("503 body %+v: want the unconfirmed shape naming the replicas", answer)
				}
				return
			}
			var runs runsAnswer
			c.do("GET", "/v1/events/"+answer.IDs[0]+"/runs", "", &runs)
			if len(runs.Data) != 1 {
				t.Fatalf("runs of the event = %+v", runs.Data)
			}
			if st := awaitRun(t, changes, runs.Data[0].RunID, 10*time.Second); st != store.StatusCompleted {
				t.Fatalf("run ended %s", st)
			}
		})
	}
}
