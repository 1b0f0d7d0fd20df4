package daemon_test

import (
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// TestRedisEndToEnd runs hello-world on a daemon whose store is a real
// redis-server, then checks readiness follows Redis going away and back.
func TestRedisEndToEnd(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, true)
	cfg := testConfig(t.TempDir())
	cfg.Store = srv.URL(0)
	c := client{t: t, base: start(t, cfg, nil)}

	changes := c.stream("")
	var acc struct {
		IDs []string `json:"ids"`
	}
	if code := c.do("POST", "/e/anykey", `{"name":"test/hello.world","data":{"email":"a@b.c"}}`, &acc); code != 200 || len(acc.IDs) != 1 {
		t.Fatalf("intake answered %d %+v", code, acc)
	}
	var runs runsAnswer
	c.do("GET", "/v1/events/"+acc.IDs[0]+"/runs", "", &runs)
	if len(runs.Data) != 1 {
		t.Fatalf("runs of the event = %+v", runs.Data)
	}
	if st := awaitRun(t, changes, runs.Data[0].RunID, 10*time.Second); st != store.StatusCompleted {
		t.Fatalf("run ended %s", st)
	}

	srv.Stop()
	if code := c.do("GET", "/readyz", "", nil); code != 503 {
		t.Errorf("/readyz with Redis down = %d, want 503", code)
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart redis: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.do("GET", "/readyz", "", nil) != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not recover within 10 s of Redis coming back")
		}
		time.Sleep(50 * time.Millisecond) // a guard between probes
	}
}
