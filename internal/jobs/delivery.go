package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// Delivery tracking (docs/site.md, "Webhooks"): the contact function
// indexes each email Resend accepted by Resend's id (SentEmail), and the
// Resend webhook records each delivery status an email reaches under its
// run (RecordDelivery). Each status has a key of its own, written with a
// plain set, so webhooks arriving out of order or twice need no
// read-modify-write: the latest status is the one with the latest time.

// DeliveryTTL is how long an email's delivery is tracked after it was
// sent, and how long its statuses are kept.
const DeliveryTTL = 30 * 24 * time.Hour

// DeliveryStatuses are the statuses Resend's webhooks report (their type
// is email.<status>), in the order a mail meets them: at equal times the
// later one is the latest.
var DeliveryStatuses = []string{"delivery_delayed", "delivered", "bounced", "complained", "failed"}

// deliveryEvents is the event each status becomes.
var deliveryEvents = map[string]string{
	"delivery_delayed": EventEmailDeliveryDelayed,
	"delivered":        EventEmailDelivered,
	"bounced":          EventEmailBounced,
	"complained":       EventEmailComplained,
	"failed":           EventEmailFailed,
}

// DeliveryEvent is the event a delivery status becomes; ok is false for a
// status not tracked.
func DeliveryEvent(status string) (name string, ok bool) {
	name, ok = deliveryEvents[status]
	return name, ok
}

// Email kinds of the contact function, as SentEmail.Type and the events'
// data.type name them.
const (
	EmailNotification = "notification"
	EmailConfirmation = "confirmation"
)

// SentEmail is what the index keeps of one email Resend accepted.
type SentEmail struct {
	RunID string `json:"runId"`
	Type  string `json:"type"`
}

// RecordSentEmail indexes Resend's email id to the run that sent it.
func RecordSentEmail(ctx context.Context, kv store.KV, keys Keys, emailID string, s SentEmail) error {
	raw, _ := json.Marshal(s)
	if err := kv.Set(ctx, keys.SentEmail(emailID), string(raw), DeliveryTTL); err != nil {
		return fmt.Errorf("index sent email: %w", err)
	}
	return nil
}

// LookupSentEmail finds the run that sent Resend's email id;
// store.ErrNotFound when no contact run did (or its tracking expired).
func LookupSentEmail(ctx context.Context, kv store.KV, keys Keys, emailID string) (SentEmail, error) {
	raw, err := kv.Get(ctx, keys.SentEmail(emailID))
	if err != nil {
		return SentEmail{}, fmt.Errorf("look up sent email: %w", err)
	}
	var s SentEmail
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return SentEmail{}, fmt.Errorf("look up sent email %s: %w", emailID, err)
	}
	return s, nil
}

// Delivery is a delivery status one of a run's emails reached.
type Delivery struct {
	// Email is the kind of email: notification or confirmation.
	Email  string `json:"email"`
	Status string `json:"status"`
	// At is when Resend saw the status (the webhook's created_at).
	At time.Time `json:"at"`
	// EventID is the event that reported it (the svix-id).
	EventID string `json:"eventId"`
}

// RecordDelivery records that a run's email reached a status.
func RecordDelivery(ctx context.Context, kv store.KV, keys Keys, runID string, d Delivery) error {
	raw, _ := json.Marshal(d)
	if err := kv.Set(ctx, keys.Delivery(runID, d.Email, d.Status), string(raw), DeliveryTTL); err != nil {
		return fmt.Errorf("record delivery: %w", err)
	}
	return nil
}

// LatestDeliveries is the latest status of each of a run's emails,
// notification first; none when no webhook reported on them. It reads the
// ten keys a run's statuses can have, never a scan.
func LatestDeliveries(ctx context.Context, kv store.KV, keys Keys, runID string) ([]Delivery, error) {
	var out []Delivery
	for _, email := range []string{EmailNotification, EmailConfirmation} {
		var latest *Delivery
		for _, status := range DeliveryStatuses {
			raw, err := kv.Get(ctx, keys.Delivery(runID, email, status))
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("deliveries: %w", err)
			}
			var d Delivery
			if err := json.Unmarshal([]byte(raw), &d); err != nil {
				return nil, fmt.Errorf("deliveries: %s %s: %w", email, status, err)
			}
			if latest == nil || !d.At.Before(latest.At) {
				latest = &d
			}
		}
		if latest != nil {
			out = append(out, *latest)
		}
	}
	return out, nil
}
