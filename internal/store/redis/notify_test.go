package redis

import (
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// A notification published by a daemon of an earlier version (JSON) and
// one in today's form (lines of tab-separated fields) read the same.
func TestDecodeChangesBothForms(t *testing.T) {
	at := time.UnixMilli(1796600000123).UTC()
	want := []store.Change{
		{Kind: store.ChangeEvent, EventID: "E1", EventName: "app/x", At: at},
		{Kind: store.ChangeRun, EventID: "E1", RunID: "R1", FunctionID: "fn", Status: store.StatusQueued,
			AvailableAt: time.UnixMilli(1796600000500).UTC(), At: at},
		{Kind: store.ChangeStep, RunID: "R1", FunctionID: "fn", Status: store.StatusCompleted, StepID: "a\tb\\n", At: at},
	}
	forms := map[string]string{
		"json": `["1796600000123",[["event","E1","app/x","","","","",""],` +
			`["run","E1","","R1","fn","Queued","","1796600000500"],` +
			`["step","","","R1","fn","Completed","a\tb\\n",""]]]`,
		"lines": "1796600000123\n" +
			"event\tE1\tapp/x\t\t\t\t\t\n" +
			"run\tE1\t\tR1\tfn\tQueued\t\t1796600000500\n" +
			"step\t\t\tR1\tfn\tCompleted\ta\\tb\\\\n\t",
	}
	for name, payload := range forms {
		got, err := decodeChanges(payload)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d changes, want %d: %+v", name, len(got), len(want), got)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: change %d = %+v, want %+v", name, i, got[i], want[i])
			}
		}
	}
	for _, bad := range []string{"", "x\nrun\tE1", "17\nrun\tE1\t\tR1"} {
		if _, err := decodeChanges(bad); err == nil {
			t.Errorf("decodeChanges(%q) accepted a malformed message", bad)
		}
	}
}
