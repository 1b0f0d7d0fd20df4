package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// ContactSubmission is the data of contact/form.submitted.
type ContactSubmission struct {
	Name        string `json:"name"`
	Email       string `json:"email"`
	Message     string `json:"message"`
	SubmittedAt string `json:"submittedAt"`
	IP          string `json:"ip,omitempty"`
}

// EmailOutcome is the data of contact/email.sent, contact/email.failed and
// the delivery events the Resend webhook reports (RunID and At set).
type EmailOutcome struct {
	Email     string `json:"email"`
	Type      string `json:"type"`
	MessageID string `json:"messageId,omitempty"`
	Error     string `json:"error,omitempty"`
	RunID     string `json:"runId,omitempty"`
	At        string `json:"at,omitempty"`
}

// ContactFormSubmitted mails the owner a contact form submission, then
// confirms it to the submitter, and reports each email's fate as an event.
// A failed email fails the run after both were tried.
func ContactFormSubmitted(d Deps) engine.Function {
	return engine.Function{
		ID:          "contact-form-submitted",
		Name:        "Contact form submitted",
		Triggers:    []engine.Trigger{{Event: EventContactSubmitted}},
		Retries:     retries(3),
		Idempotency: "event.id",
		Handler: func(ctx context.Context, run *engine.Run) (any, error) {
			var sub ContactSubmission
			if err := json.Unmarshal(run.Event.Data, &sub); err != nil {
				return nil, engine.NonRetriable(errors.New("contact-form-submitted: malformed event data"))
			}
			// A name is one line: CR, LF and runs of spaces become one space.
			sub.Name, sub.Email, sub.Message = strings.Join(strings.Fields(sub.Name), " "), strings.TrimSpace(sub.Email), strings.TrimSpace(sub.Message)
			if !ValidEmail(sub.Email) {
				return nil, engine.NonRetriable(errors.New("contact-form-submitted: data.email is not a valid address"))
			}
			emails := []struct {
				step, kind string
				mail       string
				email      Email
			}{
				{"send-notification-email", EmailNotification, MailContact, Email{
					From: d.Config.ContactFrom, To: []string{d.Config.ContactTo}, ReplyTo: sub.Email,
					Subject: "Contact form: " + sub.Name,
				}},
				{"send-confirmation-email", EmailConfirmation, MailConfirmation, Email{
					From: d.Config.ContactFrom, To: []string{sub.Email}, ReplyTo: d.Config.ContactTo,
					Subject: "Thanks for reaching out!",
				}},
			}
			out := map[string]SendResult{}
			var failed []error
			for _, m := range emails {
				// StepTx: the record the Resend webhook finds the run by commits with
				// the step's result, so a sent email is indexed exactly once.
				sent, err := engine.StepTx(ctx, run, m.step, func(ctx context.Context, tx *store.Tx) (SendResult, error) {
					m.email.IdempotencyKey = idempotencyKey(run, m.step)
					e, err := d.Templates.Render(m.mail, m.email, ContactMail{
						Site: d.Config.Site, Name: sub.Name, Email: sub.Email, Message: sub.Message, SubmittedAt: sub.SubmittedAt,
					})
					if err != nil {
						return SendResult{}, engine.NonRetriable(err)
					}
					sent, err := d.Mailer.Send(ctx, e)
					if err == nil && sent.ID != "" {
						// The Resend webhook finds the run by the email's id.
						err = RecordSentEmail(ctx, tx, Keys{Prefix: d.Config.Prefix}, sent.ID, SentEmail{RunID: run.ID, Type: m.kind})
					}
					return sent, err
				})
				var stepErr *engine.StepError
				switch {
				case errors.As(err, &stepErr):
					failed = append(failed, err)
					data, _ := json.Marshal(EmailOutcome{Email: sub.Email, Type: m.kind, Error: stepErr.Message})
					if _, err := run.SendEvent(ctx, "emit-"+m.kind+"-failed", engine.IncomingEvent{Name: EventEmailFailed, Data: data}); err != nil {
						return nil, err
					}
				case err != nil:
					return nil, err
				case sent.Sent && !run.Completed("emit-"+m.kind+"-delivered"):
					// (A release before 2026-12-05 announced it as
					// contact/email.delivered, in a step of that name.)
					data, _ := json.Marshal(EmailOutcome{Email: sub.Email, Type: m.kind, MessageID: sent.ID})
					if _, err := run.SendEvent(ctx, "emit-"+m.kind+"-sent", engine.IncomingEvent{Name: EventEmailSent, Data: data}); err != nil {
						return nil, err
					}
				}
				out[m.kind] = sent
			}
			if len(failed) > 0 {
				return nil, engine.NonRetriable(errors.Join(failed...))
			}
			return out, nil
		},
	}
}
