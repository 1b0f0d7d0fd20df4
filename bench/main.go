// Command bench measures cyberdrew against hibiken/asynq on the same
// machine, the same redis-server and in the same run, and prints one
// markdown table (docs/BENCHMARKS.md explains every figure).
//
// It is a module of its own so that the cyberdrew release binary never
// links asynq. It starts its own redis-server on a free loopback port
// (REDIS_SERVER or PATH); without one it runs the SQLite rows only.
//
//	go run . -quick                 # every scenario, small: under a minute
//	go run . -out ../docs/run.md    # the full run that gets published
//	go run . -only burn-down,latency -persistence aof
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role, os.Args[1:]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // a scenario failed
	exitUsage = 2
)

// options are the command line.
type options struct {
	quick       bool
	only        []string
	persistence []persistence
	out         string
	cpuProfile  string
}

// scenario is one named measurement that adds rows to the report.
type scenario struct {
	name string
	run  func(ctx context.Context, e *env) ([]row, error)
}

// scenarios in the order they run and print.
var scenarios = []scenario{
	{"enqueue", runEnqueue},
	{"burn-down", runBurnDown},
	{"latency", runLatency},
	{"steps", runSteps},
	{"site-workload", runSiteWorkload},
	{"history", runHistory},
	{"crash", runCrash},
	{"rss", runRSS},
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.quick, "quick", false, "run every scenario small enough to finish in under a minute")
	only := fs.String("only", "", "comma-separated scenarios to run: "+scenarioNames())
	pers := fs.String("persistence", "", "comma-separated Redis settings for the Redis rows: aof (appendonly yes, appendfsync always), none; default aof,none (aof with -quick)")
	fs.StringVar(&o.out, "out", "", "also write the table to this file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the harness process (in-process rows) to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *only != "" {
		for name := range strings.SplitSeq(*only, ",") {
			if !slices.ContainsFunc(scenarios, func(s scenario) bool { return s.name == name }) {
				return o, fmt.Errorf("-only: unknown scenario %q (want %s)", name, scenarioNames())
			}
			o.only = append(o.only, name)
		}
	}
	switch {
	case *pers != "":
		for p := range strings.SplitSeq(*pers, ",") {
			switch p {
			case "aof":
				o.persistence = append(o.persistence, aofAlways)
			case "none":
				o.persistence = append(o.persistence, noAOF)
			default:
				return o, fmt.Errorf("-persistence: unknown setting %q (want aof or none)", p)
			}
		}
	case o.quick:
		o.persistence = []persistence{aofAlways}
	default:
		o.persistence = []persistence{aofAlways, noAOF}
	}
	return o, nil
}

func scenarioNames() string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return strings.Join(names, ",")
}

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return exitFail
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return exitFail
		}
		defer pprof.StopCPUProfile()
	}
	rp, err := measure(ctx, o, args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return exitFail
	}
	if err := rp.markdown(stdout); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return exitFail
	}
	if o.out != "" {
		f, err := os.Create(o.out)
		if err == nil {
			err = errors.Join(rp.markdown(f), f.Close())
		}
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return exitFail
		}
	}
	for _, r := range rp.rows {
		for _, c := range []cell{r.sqlite, r.redis, r.asynq} {
			if strings.HasPrefix(c.text, "error:") {
				return exitFail
			}
		}
	}
	return exitOK
}

// measure runs the chosen scenarios and builds the report.
func measure(ctx context.Context, o options, args []string, stderr io.Writer) (*report, error) {
	dir, err := os.MkdirTemp("", "cyberdrew-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the program to re-run as a worker: %w", err)
	}
	e := &env{opts: o, size: sizesFor(o.quick), dir: dir, exe: exe, log: stderr}
	rs, err := startRedis(ctx, dir)
	switch {
	case errors.Is(err, errNoRedis):
		fmt.Fprintf(stderr, "bench: no redis-server: %s. Running the SQLite rows only.\n", redisHint)
	case err != nil:
		return nil, err
	default:
		defer rs.stop()
		e.redis = rs
	}
	rp := &report{
		title:   "cyberdrew vs asynq, " + time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		machine: machine(e),
		command: strings.TrimSpace("go run . " + strings.Join(args, " ")),
		notes:   e.notes(),
	}
	for _, s := range scenarios {
		if len(o.only) > 0 && !slices.Contains(o.only, s.name) {
			continue
		}
		started := time.Now()
		fmt.Fprintf(stderr, "bench: %s ...\n", s.name)
		rows, err := s.run(ctx, e)
		if err != nil {
			rows = append(rows, row{scenario: s.name, sqlite: failure(err), redis: failure(err), asynq: failure(err)})
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		fmt.Fprintf(stderr, "bench: %s done in %v\n", s.name, time.Since(started).Round(100*time.Millisecond))
		rp.rows = append(rp.rows, rows...)
	}
	return rp, nil
}
