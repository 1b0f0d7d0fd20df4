package redis

import (
	"context"
	"embed"

	goredis "github.com/redis/go-redis/v9"
)

//go:embed lua/*.lua
var luaFiles embed.FS

func lua(name string) string {
	b, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic(err) // embedded: cannot happen
	}
	return string(b)
}

// Engine scripts: lua/common.lua followed by the script's own file, which
// documents its KEYS, ARGV and return values. KV scripts start with
// lua/kvfn.lua and lua/kv.lua instead; savestep, which applies a step's KV
// effects, has lua/kvfn.lua between lua/common.lua and its own file.
var (
	scriptPublish    = engineScript("publish")
	scriptCreateRuns = engineScript("createruns")
	scriptClaim      = engineScript("claim")
	scriptRenew      = engineScript("renew")
	scriptSaveStep   = newScript(lua("common") + "\n" + lua("kvfn") + "\n" + lua("savestep"))
	scriptSuspend    = engineScript("suspend")
	scriptFinish     = engineScript("finish")
	scriptRelease    = engineScript("release")
	scriptCancel     = engineScript("cancel")
	scriptPrune      = engineScript("prune")
	scriptPruneFn    = engineScript("prunefn")
	scriptWindow     = engineScript("window")

	scriptKVGet       = kvScript("kv_get")
	scriptKVSet       = kvScript("kv_set")
	scriptKVSetNX     = kvScript("kv_setnx")
	scriptKVIncrBy    = kvScript("kv_incrby")
	scriptKVSAdd      = kvScript("kv_sadd")
	scriptKVSCard     = kvScript("kv_scard")
	scriptKVSMembers  = kvScript("kv_smembers")
	scriptKVTTL       = kvScript("kv_ttl")
	scriptKVSIsMember = kvScript("kv_sismember")

	// scriptSources holds every script's source, for loadScripts.
	scriptSources []string
)

func engineScript(name string) *goredis.Script { return newScript(lua("common") + "\n" + lua(name)) }

func kvScript(name string) *goredis.Script {
	return newScript(lua("kvfn") + "\n" + lua("kv") + "\n" + lua(name))
}

func newScript(src string) *goredis.Script {
	scriptSources = append(scriptSources, src)
	return goredis.NewScript(src)
}

// loadScripts loads every script (SCRIPT LOAD) on the server, or on every
// node of a cluster, so calls and pipelines can use EVALSHA at once. Run
// still falls back to EVAL after a server restart.
func loadScripts(ctx context.Context, c goredis.UniversalClient) error {
	return loadOnShards(ctx, c, func(ctx context.Context, c goredis.Cmdable) error {
		_, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			// SCRIPT LOAD itself: Script.Load on a pipeline would clear the
			// script's hash before the pipeline runs.
			for _, src := range scriptSources {
				p.ScriptLoad(ctx, src)
			}
			return nil
		})
		return err
	})
}
