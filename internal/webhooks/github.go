package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
)

// githubRefreshes are the GitHub events that can change the contribution
// calendar: each becomes a github/data.refresh.
var githubRefreshes = map[string]bool{"push": true, "create": true, "public": true, "release": true}

// githubRefresh is the refresh a push asks for: past the cache check (the
// push is news the cache cannot have), debounced by the refresh function
// so that a burst of pushes is one refresh.
const githubRefresh = `{"manual":true,"force":true}`

// github takes one GitHub webhook: it checks X-Hub-Signature-256 against
// the secret in constant time, answers ping, turns push, create, public
// and release into a refresh event (its id the X-GitHub-Delivery, so a
// redelivery is a duplicate) and answers every other event 202, ignored.
func (s *Server) github(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.GitHubSecret == "" {
		return refuse(http.StatusNotFound, "GitHub webhooks are off: set GITHUB_WEBHOOK_SECRET (--github-webhook-secret) to the webhook's secret to turn them on")
	}
	raw, err := readBody(w, r, MaxGitHubBody)
	if err != nil {
		return err
	}
	sig, ok := strings.CutPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256=")
	if !ok {
		return refuse(http.StatusUnauthorized, "X-Hub-Signature-256 is missing or not sha256=<hex>")
	}
	got, err := hex.DecodeString(sig)
	mac := hmac.New(sha256.New, []byte(s.cfg.GitHubSecret))
	mac.Write(raw)
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return refuse(http.StatusUnauthorized, "X-Hub-Signature-256 does not match the body signed with GITHUB_WEBHOOK_SECRET")
	}
	event, delivery := r.Header.Get("X-GitHub-Event"), r.Header.Get("X-GitHub-Delivery")
	switch {
	case event == "":
		return refuse(http.StatusBadRequest, "X-GitHub-Event is missing")
	case event == "ping":
		writeJSON(w, http.StatusOK, map[string]any{"pong": true})
		return nil
	case !githubRefreshes[event]:
		writeJSON(w, http.StatusAccepted, map[string]string{"ignored": "event " + event + " does not change the contributions; cyberdrew acts on push, create, public and release"})
		return nil
	case delivery == "":
		return refuse(http.StatusBadRequest, "X-GitHub-Delivery is missing")
	case s.cfg.RefreshDisabled != "":
		return refuse(http.StatusServiceUnavailable, "refreshes are disabled on this server: %s", s.cfg.RefreshDisabled)
	}
	acc, err := s.publish(r.Context(), engine.IncomingEvent{ID: delivery, Name: jobs.EventGitHubRefresh, Data: []byte(githubRefresh)})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": acc.EventID, "duplicate": acc.Duplicate})
	return nil
}
