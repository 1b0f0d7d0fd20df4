package jobs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
// notification first; none when no webhook reported on them.
func LatestDeliveries(ctx context.Context, kv store.KV, keys Keys, runID string) ([]Delivery, error) {
	prefix := keys.DeliveryPrefix(runID)
	latest := map[string]Delivery{}
	cursor := ""
	for {
		found, next, err := kv.Scan(ctx, prefix, cursor, 100)
		if err != nil {
			return nil, fmt.Errorf("deliveries: %w", err)
		}
		for _, key := range found {
			raw, err := kv.Get(ctx, key)
			if errors.Is(err, store.ErrNotFound) {
				continue // expired between the scan and the read
			}
			if err != nil {
				return nil, fmt.Errorf("deliveries: %w", err)
			}
			var d Delivery
			if err := json.Unmarshal([]byte(raw), &d); err != nil {
				return nil, fmt.Errorf("deliveries: %s: %w", key, err)
			}
			if cur, ok := latest[d.Email]; !ok || d.At.After(cur.At) {
				latest[d.Email] = d
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	out := make([]Delivery, 0, len(latest))
	for _, d := range latest {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Delivery) int { return cmp.Compare(emailOrder(a.Email), emailOrder(b.Email)) })
	return out, nil
}

func emailOrder(kind string) int {
	if kind == EmailNotification {
		return 0
	}
	return 1
}
