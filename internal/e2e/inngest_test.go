package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// envNode names the variable that makes a missing node or a missing
// `npm ci --prefix internal/e2e/testdata/inngest-client` fatal.
const envNode = "CYBERDREW_TEST_NODE"

// clientDir holds the script that sends with the official inngest client.
const clientDir = "testdata/inngest-client"

// nodeClient is node's path once the official client is installed; it
// skips the test loudly otherwise, or fails it when envNode is "required".
func nodeClient(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(clientDir, "node_modules", "inngest", "package.json"))
	}
	if err != nil {
		msg := "the official inngest client cannot run: " + err.Error() +
			" (install node and run `npm ci --prefix internal/e2e/" + clientDir + "`)"
		if os.Getenv(envNode) == "required" {
			t.Fatalf("%s=required but %s", envNode, msg)
		}
		t.Skipf("SKIPPING INNGEST CLIENT TESTS: %s, or set %s=required to make this fatal", msg, envNode)
	}
	return node
}

// TestOfficialInngestClientSends runs the official inngest npm client's
// send() against the daemon, pointed at it by INNGEST_BASE_URL as the seed
// guide's site would be: three submitters' contact forms, one send() each,
// then two more in one send(). None carries an id; each gets its run and
// its two emails. The daemon runs on the real clock: the client stamps
// each event with its own ts, which a fake clock would see as the future.
func TestOfficialInngestClientSends(t *testing.T) {
	t.Parallel()
	node := nodeClient(t)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			d := deploy(t, backend, clockwork.NewRealClock())
			at := time.Now().UTC().Format(time.RFC3339)
			var sends []json.RawMessage
			event := func(i int) json.RawMessage {
				return json.RawMessage(`{"name":"contact/form.submitted","data":` + submission(forms[i], at, visitorN(i).ip) + `}`)
			}
			for i := range 3 {
				sends = append(sends, event(i))
			}
			batch, _ := json.Marshal([]json.RawMessage{event(3), event(4)})
			sends = append(sends, batch)
			arg, _ := json.Marshal(sends)

			ctx, cancel := context.WithTimeout(t.Context(), waitGuard)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, "send.mjs", string(arg))
			cmd.Dir = clientDir
			cmd.Env = append(os.Environ(), "INNGEST_BASE_URL="+d.base, "INNGEST_EVENT_KEY="+eventKey, "INNGEST_DEV=0")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("node send.mjs: %v\n%s", err, stderr.String())
			}
			var ids [][]string
			if err := json.Unmarshal(out, &ids); err != nil {
				t.Fatalf("node send.mjs printed %q: %v", out, err)
			}
			if len(ids) != 4 || len(ids[0]) != 1 || len(ids[3]) != 2 {
				t.Fatalf("send() answered ids %v, want 1, 1, 1 and 2", ids)
			}

			sent := forms[:5]
			if runs := d.runs(t, "contact-form-submitted"); len(runs) != len(sent) {
				t.Fatalf("%d forms sent with the inngest client started %d runs, want %d", len(sent), len(runs), len(sent))
			}
			d.awaitRuns(t, "contact-form-submitted", len(sent))
			expectContactMail(t, d, sent)
			d.everyEventHasAnID(t)
		})
	}
}
