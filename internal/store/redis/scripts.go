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
// lua/kv.lua instead.
var (
	scriptPublish    = engineScript("publish")
	scriptCreateRuns = engineScript("createruns")
	scriptClaim      = engineScript("claim")
	scriptRenew      = engineScript("renew")
	scriptSaveStep   = engineScript("savestep")
	scriptSuspend    = engineScript("suspend")
	scriptFinish     = engineScript("finish")
	scriptRelease    = engineScript("release")
	scriptCancel     = engineScript("cancel")
	scriptPrune      = engineScript("prune")

	scriptKVGet      = kvScript("kv_get")
	scriptKVSet      = kvScript("kv_set")
	scriptKVSetNX    = kvScript("kv_setnx")
	scriptKVIncrBy   = kvScript("kv_incrby")
	scriptKVSAdd     = kvScript("kv_sadd")
	scriptKVSCard    = kvScript("kv_scard")
	scriptKVSMembers = kvScript("kv_smembers")
	scriptKVTTL      = kvScript("kv_ttl")

	allScripts = []*goredis.Script{
		scriptPublish, scriptCreateRuns, scriptClaim, scriptRenew, scriptSaveStep,
		scriptSuspend, scriptFinish, scriptRelease, scriptCancel, scriptPrune,
		scriptKVGet, scriptKVSet, scriptKVSetNX, scriptKVIncrBy, scriptKVSAdd,
		scriptKVSCard, scriptKVSMembers, scriptKVTTL,
	}
)

func engineScript(name string) *goredis.Script {
	return goredis.NewScript(lua("common") + "\n" + lua(name))
}

func kvScript(name string) *goredis.Script {
	return goredis.NewScript(lua("kv") + "\n" + lua(name))
}

// loadScripts loads every script (SCRIPT LOAD), so calls and pipelines can
// use EVALSHA at once. Run still falls back to EVAL after a server restart.
func loadScripts(ctx context.Context, c goredis.UniversalClient) error {
	_, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, s := range allScripts {
			s.Load(ctx, p)
		}
		return nil
	})
	return err
}
