package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/config"
)

// Fixed settings shared by every scenario.
const (
	producers   = 16 // concurrent producers in the enqueue rows
	workers     = 50 // cyberdrew workers, asynq Concurrency
	payloadSize = 100
	latencyRate = 50 // events per second in the latency rows
	stepsCount  = 10 // steps of the multi-step function, tasks of the chain
	stepsRate   = 10 // flows per second in the multi-step latency row
)

// sizes scale every scenario; -quick picks the small ones.
type sizes struct {
	enqueue       int           // events per enqueue cell
	burnDown      int           // queued no-op jobs
	latency       time.Duration // open-loop window
	flows         int           // multi-step flows started at once
	flowWindow    time.Duration // open-loop window of the multi-step latency row
	crash         int           // in-flight jobs killed
	crashLease    time.Duration // cyberdrew's lease in the crash rows; 0: the default
	asynqRecovery time.Duration // how long to wait for asynq to recover; 0: not measured
	queued        int           // runs queued for the RSS row
	settle        time.Duration // before reading an RSS
	siteViews     int           // page views of the site workload
	history       int           // events (each with its run) stored before the history rows
	historyIntake int           // events posted per intake cell of the history rows
	historyBurn   int           // no-op runs per burn-down cell of the history rows
	historyRounds int           // rounds of empty, history, history, empty phases behind each history ratio
	siteRounds    int           // rounds of the site workload behind each of its cells (their median)
	historyDepth  int           // items before the deep page of a history listing
	historySample int           // requests per history listing page
}

func sizesFor(quick bool) sizes {
	if quick {
		return sizes{
			enqueue: 3000, burnDown: 5000, latency: 3 * time.Second, flows: 200, flowWindow: 2 * time.Second,
			crash: 50, crashLease: 2 * time.Second, queued: 10000, settle: time.Second, siteViews: 500, siteRounds: 1,
			history: 10000, historyIntake: 1000, historyBurn: 2000, historyRounds: 1, historyDepth: 100, historySample: 20,
		}
	}
	return sizes{
		enqueue: 50000, burnDown: 50000, latency: 20 * time.Second, flows: 2000, flowWindow: 10 * time.Second,
		crash: 200, asynqRecovery: 5 * time.Minute, queued: 100000, settle: 5 * time.Second, siteViews: 10000, siteRounds: 3,
		history: 500000, historyIntake: 10000, historyBurn: 20000, historyRounds: 3, historyDepth: 5000, historySample: 300,
	}
}

// env is what every scenario shares.
type env struct {
	opts  options
	size  sizes
	dir   string       // scratch directory, removed at the end
	exe   string       // this program, re-run as worker processes
	redis *redisServer // nil: no redis-server, SQLite rows only
	log   io.Writer    // progress
	seq   int          // numbers scratch subdirectories
}

// scratch returns a fresh directory for one cell.
func (e *env) scratch() (string, error) {
	e.seq++
	d := fmt.Sprintf("%s/%d", e.dir, e.seq)
	return d, os.MkdirAll(d, 0o700)
}

// logf reports progress on stderr.
func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "bench:   "+format+"\n", args...)
}

// noRedis is the cell of a Redis row when no redis-server runs.
var noRedis = note("skipped: no redis-server")

// machine describes where the figures come from.
func machine(e *env) []string {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		f.Close()
	}
	redis := "none (" + redisHint + ")"
	if e.redis != nil {
		redis = e.redis.version + " on loopback, started by the program (RDB snapshots off)"
	}
	asynqVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/hibiken/asynq" {
				asynqVersion = d.Version
			}
		}
	}
	load := "unknown"
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(raw)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return []string{
		fmt.Sprintf("machine: %s, %d cores (GOMAXPROCS %d), %s/%s, load average at start %s", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, load),
		"Go: " + runtime.Version(),
		"redis-server: " + redis,
		"asynq: " + asynqVersion,
	}
}

// notes explain the settings behind the rows.
func (e *env) notes() []string {
	lease := "the daemon's default " + config.DefaultLease.String() + " lease"
	if e.size.crashLease > 0 {
		lease = "a " + e.size.crashLease.String() + " lease (-quick; the daemon's default is " + config.DefaultLease.String() + ")"
	}
	return []string{
		fmt.Sprintf("cyberdrew: %d workers, built in-process as the daemon wires it (store, engine, worker pool); SQLite is WAL with synchronous=FULL, so every intake row is acknowledged after fsync. HTTP rows go through the real daemon on loopback, one event per request.", workers),
		fmt.Sprintf("asynq: Concurrency %d, one queue (default), Client.Enqueue with default options (MaxRetry 25, Timeout 30 min, no Retention), TaskCheckInterval 1 s (default: an idle processor sleeps 0.5–1.5 s before it looks again), lease 30 s, recoverer every minute.", workers),
		"Redis rows: both systems run against the same redis-server with the same setting, named in the row; FLUSHALL and CONFIG RESETSTAT before each cell.",
		"Redis commands: the INFO commandstats delta over the phase divided by its jobs; it counts each FCALL or EVALSHA and, inside it, each command the function or script calls. The harness's own INFO calls and asynq completion GETs are subtracted; cyberdrew's few end-of-phase NextWake checks are not.",
		"Redis server CPU: the INFO cpu delta (used_cpu_user + used_cpu_sys) over the same phase divided by its jobs, in µs: all the server did for them, network and pub/sub included.",
		fmt.Sprintf("crash rows: cyberdrew with %s; on SQLite, which one daemon serves at a time, the second worker starts after the kill (a restart) and its start-up counts; asynq's figure is capped at the wait named in the cell.", lease),
		fmt.Sprintf("payloads are %d bytes of JSON; ratios are cyberdrew Redis / asynq (higher is better for rates, lower for latencies, commands and memory).", payloadSize),
	}
}

// payload returns 100 bytes of JSON carrying a job number and a send time.
func payload(i int, sent time.Time) []byte {
	head := `{"job":` + strconv.Itoa(i) + `,"sent":` + strconv.FormatInt(sent.UnixNano(), 10) + `,"pad":"`
	return []byte(head + strings.Repeat("x", payloadSize-len(head)-2) + `"}`)
}

// parsed is what payload carries.
type parsed struct {
	Job  int   `json:"job"`
	Sent int64 `json:"sent"`
}

// percentile returns the p-th (0–1) of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1)+0.5)]
}
