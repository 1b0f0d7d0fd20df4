package e2e

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/dcyfr/cyberdrew/internal/cli"
)

// cyberdrew runs the command line in-process against d, with the
// environment its owner would set, and returns stdout; a non-zero exit
// fails the test.
func cyberdrew(t *testing.T, d *deployment, args ...string) []byte {
	t.Helper()
	env := map[string]string{
		"CYBERDREW_URL":       d.base,
		"INNGEST_EVENT_KEY":   eventKey,
		"INNGEST_SIGNING_KEY": signingKey,
		"HOME":                t.TempDir(),
		"NO_COLOR":            "1",
	}
	var stdout, stderr bytes.Buffer
	code := cli.Run(t.Context(), args, &stdout, &stderr, cli.Options{Getenv: func(k string) string { return env[k] }})
	if code != cli.ExitOK {
		t.Fatalf("cyberdrew %v: exit %d\nstdout: %s\nstderr: %s", args, code, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// TestSendExampleTwice sends the contact form's example twice with
// `cyberdrew send --example`, as the README suggests trying it: the same
// payload, no id. Each is its own event with its own run and its two
// emails.
func TestSendExampleTwice(t *testing.T) {
	t.Parallel()
	onBoth(t, func(t *testing.T, d *deployment) {
		var runIDs, eventIDs []string
		for range 2 {
			var sent struct {
				ID   string `json:"id"`
				Runs []struct {
					RunID      string `json:"run_id"`
					FunctionID string `json:"function_id"`
				} `json:"runs"`
			}
			out := cyberdrew(t, d, "send", "contact/form.submitted", "--example", "-o", "json")
			if err := json.Unmarshal(out, &sent); err != nil {
				t.Fatalf("send -o json printed %q: %v", out, err)
			}
			if sent.ID == "" || len(sent.Runs) != 1 || sent.Runs[0].FunctionID != "contact-form-submitted" {
				t.Fatalf("send --example: %s", out)
			}
			eventIDs = append(eventIDs, sent.ID)
			runIDs = append(runIDs, sent.Runs[0].RunID)
		}
		if eventIDs[0] == eventIDs[1] || runIDs[0] == runIDs[1] {
			t.Fatalf("two sends share an event or a run: events %v runs %v", eventIDs, runIDs)
		}
		d.awaitRuns(t, "contact-form-submitted", 2)
		if got := d.resend.to("drew@example.com"); len(got) != 2 {
			t.Errorf("the example's submitter got %d confirmations, want 2:\n%s", len(got), describe(got))
		}
		if got := d.resend.to(owner); len(got) != 2 {
			t.Errorf("the owner got %d notifications, want 2:\n%s", len(got), describe(got))
		}
		d.everyEventHasAnID(t)
	})
}

// TestSendWaitSaysSentNotDelivered sends the contact form's example and
// waits for its run, as its operator would: the run's output says each
// email was sent (Resend accepted it), not that it was delivered, which
// only Resend's webhooks can tell later.
func TestSendWaitSaysSentNotDelivered(t *testing.T) {
	t.Parallel()
	onBoth(t, func(t *testing.T, d *deployment) {
		var sent struct {
			Runs []struct {
				Status string                                `json:"status"`
				Output map[string]map[string]json.RawMessage `json:"output"`
			} `json:"runs"`
		}
		out := cyberdrew(t, d, "send", "contact/form.submitted", "--example", "--wait", "-o", "json")
		if err := json.Unmarshal(out, &sent); err != nil || len(sent.Runs) != 1 {
			t.Fatalf("send --wait -o json printed %q: %v", out, err)
		}
		run := sent.Runs[0]
		for _, email := range []string{"notification", "confirmation"} {
			got := run.Output[email]
			if string(got["sent"]) != "true" || got["delivered"] != nil || len(got["id"]) < 3 {
				t.Errorf("run %s: output.%s = %s, want sent:true with Resend's id and no delivered", run.Status, email, out)
			}
		}
	})
}
