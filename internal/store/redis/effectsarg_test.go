package redis

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// effectsArgByReflection is effectsArg's argument as encoding/json writes
// it, the form the savestep script was written against: the same rows,
// encoded by reflection.
func effectsArgByReflection(s *Store, fx store.Effects) string {
	index := map[string]int{}
	for i, k := range fx.Keys() {
		index[k] = i + 1
	}
	type doc struct {
		Native int     `json:"n,omitempty"`
		R      [][]any `json:"r"`
		W      [][]any `json:"w"`
	}
	d := doc{R: [][]any{}, W: [][]any{}}
	if s.nativeTTL {
		d.Native = 1
	}
	flag := map[bool]string{true: "1", false: "0"}
	for _, r := range fx.Reads {
		d.R = append(d.R, []any{index[r.Key], string(r.Kind), flag[r.Exists], readArg(r)})
	}
	for _, w := range fx.Writes {
		ttlMS, _ := store.KeyTTL(w.TTL)
		arg, ok := writeArg(w)
		if !ok {
			continue
		}
		row := []any{index[w.Key], string(w.Op), arg, strconv.FormatInt(ttlMS, 10), flag[w.Blind]}
		for _, m := range w.Members {
			row = append(row, m)
		}
		d.W = append(d.W, row)
	}
	b, _ := json.Marshal(d)
	return string(b)
}

// TestEffectsArgAsJSON: the hand-written effects argument is byte for byte
// what encoding/json writes, whatever the keys, values and members hold
// (quotes, backslashes, control characters, HTML characters, non-ASCII and
// invalid UTF-8), on both clocks.
func TestEffectsArgAsJSON(t *testing.T) {
	odd := []string{"", "plain", `q"uote`, `back\slash`, "tab\tnew\nline\x01", "a<b", "c>d", "e&f", "é✓", "bad\xff\xfeutf8", "\u2028"}
	fx := store.Effects{}
	for i, v := range odd {
		key := "k:" + v
		fx.Reads = append(fx.Reads,
			store.Read{Key: key, Kind: store.ReadString, Exists: i%2 == 0, Value: v},
			store.Read{Key: key, Kind: store.ReadMember, Exists: true, Member: v},
			store.Read{Key: "card" + v, Kind: store.ReadCard, Card: int64(i * 7)})
		fx.Writes = append(fx.Writes,
			store.Write{Op: store.OpSet, Key: key, Value: v, TTL: time.Duration(i) * time.Second},
			store.Write{Op: store.OpIncrBy, Key: "n" + v, Delta: int64(-i), Blind: true},
			store.Write{Op: store.OpSetAdd, Key: "s" + v, Members: odd[:i], TTL: time.Hour, Blind: i%3 == 0},
			store.Write{Op: store.OpDelete, Key: "d" + v})
	}
	for _, native := range []bool{false, true} {
		s := &Store{keys: newKeys("p:", "site:", 1), nativeTTL: native}
		for _, fx := range []store.Effects{fx, {Writes: fx.Writes[:3]}, {Reads: fx.Reads[:1]}} {
			_, got, err := s.effectsArg(s.keys.engine, fx)
			if err != nil {
				t.Fatal(err)
			}
			if want := effectsArgByReflection(s, fx); got != want {
				t.Errorf("native %v:\n got %s\nwant %s", native, got, want)
			}
		}
	}
}
