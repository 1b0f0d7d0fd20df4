package redis

import (
	"strconv"
	"strings"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// The engine keyspace. Every engine key is the engine prefix
// (Options.Prefix, default "cyberdrew:", then the hash tag "{engine}:")
// followed by one of these names. One hash tag for the whole engine
// keyspace is the simplest correct choice for Redis Cluster: every Lua
// script may touch any engine key, and all of them live in one slot. The
// scripts in lua/ build the same names from KEYS[1] (the engine prefix).
//
// A keyspace of n > 1 partitions (Options.Partitions) has the same names
// in each partition, under the hash tag {engine:<i>/<n>} of partition i:
// the keys of a run or an event in the partition of its id
// (store.PartitionOf), the queue, the indexes, the registries, the waits
// and the changes channel once per partition, and the flow-control keys
// (cid, idem, rate, conc:*, single:*, deb:*) in partition 0; a rate
// limit window (window:*) in the partition of its key's hash.
// The keys of the whole keyspace (layout, partitions, health) keep the tag
// {engine}.
//
//	event:<id>              string: the event as JSON (storedEvent: without its id), then
//	                        "\n<run id>" for each run it fed (earlier versions: store.Event's
//	                        JSON alone, or in a hash {doc, name}); for a queued run it keeps
//	                        (one sharing its id, without flow control: layout 7), the line is
//	                        "\t<created>\t<fn>[\t<ftimeout ms>]", <created> signed ms after
//	                        its id's time when the id is a ULID, else ms (layout 7 wrote
//	                        "<run id>\t<created ms>\t<fn>..."), and run:<id> is written by
//	                        its claim (with its lease) or the first other script that
//	                        loads the run (in_event in lua/common.lua); the line stays,
//	                        and the hash, once written, is the run
//	events:name:<name>      sorted set (lex): "<received ms, 13 digits>:<id>", the events of a name
//	names                   set: the event names that have an index (listings without a
//	                        name merge their indexes)
//	cid, cidexp             hash client id -> event id; sorted set client id -> expiry ms
//	run:<id>                hash: the run (written by lua/common.lua, read by parseRun in
//	                        read.go); its start and end as ms after "created" ("s", "d"), or
//	                        as unix ms ("started", "ended") in a run written before; "w" once
//	                        it has waited for an event (only then has it runwaits or matched)
//	runs:fn:<fn>            sorted set (lex): "<created ms>:<id>", the runs of a function
//	runs:fnst:<fn>:<status> sorted set (lex): the same, per function, for Failed, Cancelled, Skipped
//	prunefrom:<fn>          string: the runs:fn:<fn> entry prune's last walk for Completed runs
//	                        stopped at; the next goes on after it (prune_finished)
//	fns                     set: the functions that have an index (listings without a
//	                        function merge their indexes)
//	runs:ev:<event id>      sorted set (lex): the runs an event fed (layout 3 and before)
//	queue                   sorted set run id -> available at ms (unfinished runs;
//	                        for a leased run the lease expiry)
//	conc:<key>              sorted set run id -> lease expiry: the leases of a concurrency key
//	single:<key>            string: the unfinished run holding a singleton key
//	deb:<key>               string: the run a debounce key feeds while it is queued
//	idem, idemexp           hash idempotency key -> run id; sorted set key -> expiry ms
//	rate                    sorted set rate-limit key -> GCRA theoretical arrival (ms)
//	window:<key>            hash {n, reset}: a fixed-window rate limit shared by the daemons
//	                        (the site routes', key "site:<route>:<client ip>"), expiring with its window
//	steplog:<run>           string: the step records (JSON on one line, stepRecord), each after
//	                        a newline, in the order first recorded; a record saved again is
//	                        replaced in place (save_record in lua/common.lua)
//	steps:<run>, steporder:<run>
//	                        the earlier layout, kept for the runs recorded in it: hash step id
//	                        -> record, and list of step ids in the order first recorded
//	matched:<run>           hash step id -> {"ended_at", "event", "output"}: a wait completed by
//	                        an event (output: the event as stored; earlier versions: as read)
//	waits:<event name>      hash "<run>\n<step>" -> waitArg JSON: pending WaitForEvent steps
//	runwaits:<run>          hash step id -> event name: the run's pending waits
//	changes                 pub/sub channel of committed changes: a time, then one line of
//	                        tab-separated fields per change (decodeChanges in notify.go)
//	health                  string: the time (ms) of the last readiness write (Store.Ping)
//	txgate                  never holds a value: a publication stored as a transaction
//	                        watches it, and its check writes and deletes it to make EXEC
//	                        refuse (publishtx.go)
//	layout                  string: the layout of these keys, "8" (layout.go)
//	partitions              string: n, for a keyspace of n > 1 partitions (layout.go)
//
// The site's keys are not engine keys: they keep their own names under
// Options.SitePrefix. Each one with a ttl has a deadline key
// (kvDeadlineKey) in its own Cluster slot. A partitioned store on a
// Cluster keeps, in the slot of a step's site keys, the receipt of the
// effects it applied ahead of the step's record (ahead.go):
//
//	<prefix>receipt:{<the site keys' tag>}:<run>:<first step>
//	                        string: the value the last increment left, a newline and the
//	                        steps' record arguments (JSON); "" once recorded; expires after
//	                        an hour (receiptTTL)
type keys struct {
	engine string   // the partition's prefix: prefix + "{engine}:", or a partition's tag
	parts  []string // every partition's prefix (partitionTag); one when not partitioned
	global string   // prefix + "{engine}:": the keys of the whole keyspace (layout, health)
	base   string   // the configured prefix, without the hash tag
	site   string   // the site prefix
}

// newKeys returns the keys of n partitions (store.Store.Partitions), in
// partition 0.
func newKeys(prefix, site string, n int) keys {
	k := keys{global: prefix + "{engine}:", base: prefix, site: site}
	if n <= 1 {
		k.parts = []string{k.global}
	} else {
		k.parts = make([]string, n)
		for i := range n {
			k.parts[i] = prefix + partitionTag(i, n) + ":"
		}
	}
	k.engine = k.parts[0]
	return k
}

// partitionTag is the hash tag of partition i of n > 1. It names n, so a
// script finds every partition's prefix from its own (parts in
// lua/common.lua), and a keyspace of another n shares no key with it.
func partitionTag(i, n int) string {
	return "{engine:" + strconv.Itoa(i) + "/" + strconv.Itoa(n) + "}"
}

// in returns k in partition p.
func (k keys) in(p int) keys {
	k.engine = k.parts[p]
	return k
}

// at is the prefix of the partition id belongs to (store.PartitionOf).
func (k keys) at(id string) string {
	if len(k.parts) == 1 {
		return k.parts[0]
	}
	return k.parts[store.PartitionOf(id, len(k.parts))]
}

// The keys of a run or an event are in the partition of its id; the
// others in k's partition.
func (k keys) event(id string) string       { return k.at(id) + "event:" + id }
func (k keys) eventsByName(n string) string { return k.engine + "events:name:" + n }
func (k keys) run(id string) string         { return k.at(id) + "run:" + id }
func (k keys) runsByFunction(fn string) string {
	return k.engine + "runs:fn:" + fn
}
func (k keys) runsByFunctionStatus(fn, st string) string {
	return k.engine + "runs:fnst:" + fn + ":" + st
}
func (k keys) runsByEvent(id string) string { return k.at(id) + "runs:ev:" + id }
func (k keys) queue() string                { return k.engine + "queue" }
func (k keys) queueOf(id string) string     { return k.at(id) + "queue" }
func (k keys) steps(run string) string      { return k.at(run) + "steps:" + run }
func (k keys) stepOrder(run string) string  { return k.at(run) + "steporder:" + run }
func (k keys) stepLog(run string) string    { return k.at(run) + "steplog:" + run }
func (k keys) matched(run string) string    { return k.at(run) + "matched:" + run }
func (k keys) changes() string              { return k.engine + "changes" }
func (k keys) health() string               { return k.global + "health" }
func (k keys) registry(name string) string  { return k.engine + name } // "fns" or "names"
func (k keys) waits(name string) string     { return k.engine + "waits:" + name }
func (k keys) txGate() string               { return k.engine + "txgate" }
func (k keys) layout() string               { return k.global + "layout" }

// partitions is the key holding a partitioned keyspace's n (layout.go).
func (k keys) partitions() string { return k.global + "partitions" }

// siteKey is the Redis name of the site's key.
func (k keys) siteKey(key string) string { return k.site + key }

// kvDeadlineKey is the deadline key of a site key (see lua/kv.lua). Its
// hash tag is the site key's own tag, or the whole site key when it has
// none, so both share a Cluster slot. Site keys holding braces that do not
// form a tag (such as "a{}b") are the exception: on Cluster their deadline
// key may land in another slot.
func (k keys) kvDeadlineKey(siteKey string) string {
	return k.base + "kvttl:{" + hashed(siteKey) + "}:" + siteKey
}

// hashed is the part of key Redis Cluster hashes to pick its slot: the
// text between the first '{' and the first '}' after it when that is not
// empty, else the whole key.
func hashed(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// slot is key's Redis Cluster hash slot: CRC16 (XMODEM) of hashed(key),
// modulo 16384.
func slot(key string) int {
	var crc uint16
	for _, b := range []byte(hashed(key)) {
		crc ^= uint16(b) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// isEngineKey reports whether a Redis key belongs to the engine (including
// deadline keys), not to the site.
func (k keys) isEngineKey(name string) bool { return strings.HasPrefix(name, k.base) }
