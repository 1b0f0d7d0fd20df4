package redis

import (
	"context"
	"crypto/sha1"
	"embed"
	"encoding/hex"
	"strings"

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
// documents its KEYS, ARGV and return values; savestep and effects, which
// apply a step's KV effects, have lua/kvfn.lua between the two. KV scripts start
// with lua/kvfn.lua and lua/kv.lua instead.
//
// Each engine script runs one of two ways (Store.run):
//
//   - as a function of the engine's library (FCALL), on a server that has
//     functions (Redis 7 and later): the library holds lua/common.lua and
//     lua/kvfn.lua once, defined when it loads, and one function per
//     script whose body is the script's own file;
//   - as a script (EVALSHA, EVAL), which runs lua/common.lua afresh on
//     every call: its fifty-odd helpers cost the server 10–15 µs per call
//     before the script does anything, as much as the writes of a small
//     script.
//
// Both start with begin (lua/common.lua), so they behave alike.
var (
	scriptPublish    = groupScript("publish")
	scriptCreateRuns = engineScript("createruns")
	scriptClaim      = engineScript("claim")
	scriptRenew      = engineScript("renew")
	scriptSaveStep   = engineScript("savestep")
	scriptSuspend    = engineScript("suspend")
	scriptFinish     = groupScript("finish")
	scriptRelease    = engineScript("release")
	scriptCancel     = engineScript("cancel")
	scriptPrune      = engineScript("prune")
	scriptPruneFn    = engineScript("prunefn")
	scriptWindow     = engineScript("window")
	scriptMatch      = engineScript("match")
	scriptEffects    = engineScript("effects")

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

// engineScriptNames are the engine scripts, each a function of the
// library: every file of lua/ but the helpers (common, kvfn, kv) and the
// key-value scripts (kv_*).
var engineScriptNames = func() []string {
	entries, err := luaFiles.ReadDir("lua")
	if err != nil {
		panic(err) // embedded: cannot happen
	}
	var names []string
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".lua")
		if name != "common" && name != "kvfn" && name != "kv" && !strings.HasPrefix(name, "kv_") {
			names = append(names, name)
		}
	}
	return names
}()

// helpers is what an engine script starts with: lua/common.lua, and for
// savestep lua/kvfn.lua.
func helpers(name string) string {
	if name == "savestep" || name == "effects" {
		return lua("common") + "\n" + lua("kvfn") + "\n"
	}
	return lua("common") + "\n"
}

// libraryName names the engine's function library after its code, so
// daemons of different versions sharing a server each call their own:
// "cyberdrew_" and 12 hex digits. Its functions are named after it.
var libraryName, librarySource = engineLibrary()

func engineLibrary() (name, src string) {
	var body strings.Builder
	body.WriteString(helpers("savestep"))
	for _, n := range engineScriptNames {
		body.WriteString("\nredis.register_function('@_" + n + "', function(KEYS, ARGV)\nbegin(KEYS, ARGV)\n")
		body.WriteString(lua(n))
		body.WriteString("\nend)\n")
	}
	sum := sha1.Sum([]byte(body.String()))
	name = "cyberdrew_" + hex.EncodeToString(sum[:6])
	return name, "#!lua name=" + name + "\n" + strings.ReplaceAll(body.String(), "'@_", "'"+name+"_")
}

// script is an engine script: its source as a script, and the name of the
// same code in the engine's library. A grouped script's one call already
// carries the items of a group of callers (batch.go): it goes to Redis on
// its own rather than in a pipeline (pipeline.go), which would only add a
// hop.
type script struct {
	*goredis.Script
	function string
	grouped  bool
}

func groupScript(name string) *script {
	sc := engineScript(name)
	sc.grouped = true
	return sc
}

func engineScript(name string) *script {
	return &script{
		Script:   newScript(helpers(name) + "begin(KEYS, ARGV)\n" + lua(name)),
		function: libraryName + "_" + name,
	}
}

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
