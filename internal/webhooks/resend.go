package webhooks

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/resend/resend-go/v2"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// resendTypes lists the webhook types taken, for the unknown-type refusal.
var resendTypes = func() string {
	types := make([]string, len(jobs.DeliveryStatuses))
	for i, status := range jobs.DeliveryStatuses {
		types[i] = "email." + status
	}
	return strings.Join(types, ", ")
}()

// resendReport is the part of a Resend webhook body that is read.
type resendReport struct {
	Type      string `json:"type"`
	CreatedAt string `json:"created_at"`
	Data      struct {
		EmailID string   `json:"email_id"`
		To      []string `json:"to"`
		Bounce  struct {
			Message string `json:"message"`
		} `json:"bounce"`
		Failed struct {
			Reason string `json:"reason"`
		} `json:"failed"`
	} `json:"data"`
}

// verifier checks Svix signatures with resend-go's own Webhooks.Verify; no
// API key is needed for that.
var verifier = resend.NewClient("").Webhooks

// resend takes one Resend webhook: it checks the Svix signature and its
// timestamp, reads the report, finds the contact run that sent the email,
// records the status under the run and stores the event, its id the
// svix-id, so that a replayed report is a duplicate.
func (s *Server) resend(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.ResendSecret == "" {
		return refuse(http.StatusNotFound, "Resend webhooks are off: set RESEND_WEBHOOK_SECRET (--resend-webhook-secret) to the endpoint's signing secret to turn them on")
	}
	raw, err := readBody(w, r, MaxResendBody)
	if err != nil {
		return err
	}
	svixID := r.Header.Get("svix-id")
	err = verifier.Verify(&resend.VerifyWebhookOptions{
		Payload: string(raw),
		Headers: resend.WebhookHeaders{
			Id: svixID, Timestamp: r.Header.Get("svix-timestamp"), Signature: r.Header.Get("svix-signature"),
		},
		WebhookSecret: s.cfg.ResendSecret,
	})
	if err != nil {
		// resend-go's errors are plain strings: a missing header, an
		// empty body or a timestamp outside its tolerance is the request's
		// shape (400); anything else is a signature that does not match.
		if msg := err.Error(); strings.Contains(msg, "timestamp") || strings.Contains(msg, "required") || strings.Contains(msg, "empty") {
			return refuse(http.StatusBadRequest, "Svix signature check: %s", msg)
		}
		return refuse(http.StatusUnauthorized, "Svix signature check: %s", err)
	}
	var rep resendReport
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&rep); err != nil {
		return refuse(http.StatusBadRequest, "the body is not a JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return refuse(http.StatusBadRequest, "the body holds more than one JSON value")
	}
	status, ok := strings.CutPrefix(rep.Type, "email.")
	name, known := jobs.DeliveryEvent(status)
	if !ok || !known {
		return refuse(http.StatusBadRequest, "unknown webhook type %q: cyberdrew takes %s; subscribe the endpoint to those only", rep.Type, resendTypes)
	}
	// The status's time is Resend's; a report without a readable one
	// (never seen) is dated on receipt rather than lost.
	at, err := time.Parse(time.RFC3339, rep.CreatedAt)
	if err != nil {
		at = s.clock.Now()
	}
	if rep.Data.EmailID == "" || len(rep.Data.To) == 0 {
		return refuse(http.StatusBadRequest, "data.email_id or data.to is missing")
	}
	sent, err := jobs.LookupSentEmail(r.Context(), s.kv, s.keys, rep.Data.EmailID)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusAccepted, map[string]string{"ignored": "email " + rep.Data.EmailID + " was not sent by a contact run tracked here"})
		return nil
	}
	if err != nil {
		return err
	}
	if err := jobs.RecordDelivery(r.Context(), s.kv, s.keys, sent.RunID, jobs.Delivery{
		Email: sent.Type, Status: status, At: at.UTC(), EventID: svixID,
	}); err != nil {
		return err
	}
	outcome := jobs.EmailOutcome{
		Email: rep.Data.To[0], Type: sent.Type, MessageID: rep.Data.EmailID, RunID: sent.RunID,
		At: at.UTC().Format(time.RFC3339Nano), Error: cmp.Or(rep.Data.Bounce.Message, rep.Data.Failed.Reason),
	}
	data, _ := json.Marshal(outcome)
	acc, err := s.publish(r.Context(), engine.IncomingEvent{ID: svixID, Name: name, Data: data})
	if err != nil {
		return err
	}
	if !acc.Duplicate {
		s.obs.EmailDelivery(sent.Type, status)
		if sent.Type == jobs.EmailNotification && (status == "bounced" || status == "complained") {
			s.log.Warn("the owner's contact notification "+status+": contact messages may not reach the owner; check CYBERDREW_CONTACT_TO",
				"run", sent.RunID, "email_id", rep.Data.EmailID, "reason", outcome.Error)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": acc.EventID, "duplicate": acc.Duplicate, "run": sent.RunID})
	return nil
}
