package redis

import (
	"testing"

	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// TestScriptsLoadedAtOpen: after Open every script answers to EVALSHA,
// so no call pays for sending its source.
func TestScriptsLoadedAtOpen(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, false)
	s, err := Open(t.Context(), srv.URL(0), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	for i, sc := range []interface {
		Hash() string
	}{scriptPublish, scriptClaim, scriptKVTTL} {
		ok, err := s.rdb.ScriptExists(t.Context(), sc.Hash()).Result()
		if err != nil || len(ok) != 1 || !ok[0] {
			t.Errorf("script %d (%s) not loaded after Open: %v, %v", i, sc.Hash(), ok, err)
		}
	}
}
