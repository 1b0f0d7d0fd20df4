package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// The environment variables that close each side; the messages of dev mode
// name them.
const (
	EventKeyVariable   = "INNGEST_EVENT_KEY"
	SigningKeyVariable = "INNGEST_SIGNING_KEY"
)

// devSide is one side of the API whose key is unset: it answers only
// requests straight from this machine (see local).
type devSide struct {
	area     string // what it guards, for messages
	variable string // the environment variable that closes it
	send     string // how a client then sends the key
}

var (
	devEvents = devSide{area: "the event API (/e)", variable: EventKeyVariable, send: "put one of its keys in the path, /e/<key>"}
	devAdmin  = devSide{area: "the admin API (/v1)", variable: SigningKeyVariable, send: "send it as Authorization: Bearer <key>"}
)

// admit lets a request straight from this machine through and refuses any
// other: 401 naming the variable to set, or 403 for a local peer asking for
// a foreign Host (DNS rebinding).
func (d devSide) admit(r *http.Request) *httpError {
	reason, status := local(r)
	if reason == "" {
		return nil
	}
	return &httpError{status: status, msg: fmt.Sprintf(
		"%s is not set, so %s answers only requests straight from this machine, and %s; set %s on the daemon and %s",
		d.variable, d.area, reason, d.variable, d.send)}
}

// logDevMode says once, at start-up, which sides are in dev mode and what
// that means.
func (s *server) logDevMode() {
	const rule = "answers only requests straight from this machine (a loopback peer and Host, no Forwarded, X-Forwarded-* or Via header); anything else gets 401"
	if len(s.eventKeys) == 0 {
		s.log.Warn("dev mode: "+EventKeyVariable+" is not set: the event API accepts any key but "+rule, "side", "events")
	}
	if len(s.signingKeys) == 0 {
		area := "the admin API (/v1 and /metrics)"
		if s.cfg.MetricsPublic || s.cfg.Metrics == nil {
			area = "the admin API (/v1)"
		}
		s.log.Warn("dev mode: "+SigningKeyVariable+" is not set: "+area+" needs no bearer but "+rule, "side", "admin")
	}
}

// local reports why r did not come straight from this machine, and the
// status to refuse it with; reason is empty when it did. Straight from this
// machine means: a loopback peer, no header a proxy adds, and a loopback
// Host. A reverse proxy on this machine is a loopback peer, so its headers
// are what give it away; CYBERDREW_TRUSTED_PROXIES opens nothing here.
func local(r *http.Request) (reason string, status int) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !peer.Addr().Unmap().IsLoopback() {
		return fmt.Sprintf("this request came from %s", r.RemoteAddr), http.StatusUnauthorized
	}
	if h := proxyHeader(r.Header); h != "" {
		return fmt.Sprintf("this request carries a %s header: it came through a proxy", h), http.StatusUnauthorized
	}
	if !loopbackHost(r.Host) {
		return fmt.Sprintf("this request's Host %q is not 127.0.0.1, ::1 or localhost", r.Host), http.StatusForbidden
	}
	return "", 0
}

// proxyHeader names the first (in sorted order) header of h that a proxy
// adds: Forwarded, Via, X-Real-Ip or any X-Forwarded-*; empty when there is
// none.
func proxyHeader(h http.Header) string {
	var found []string
	for name := range h {
		if name == "Forwarded" || name == "Via" || name == "X-Real-Ip" || strings.HasPrefix(name, "X-Forwarded-") {
			found = append(found, name)
		}
	}
	if len(found) == 0 {
		return ""
	}
	return slices.Min(found)
}

// loopbackHost reports whether a Host header names this machine: localhost
// or a loopback address, with or without a port.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Zone() == "" && a.Unmap().IsLoopback()
}

// crossSite refuses a write that a web page on another site could have made
// the browser send: one whose Sec-Fetch-Site or Origin says it comes from
// another origin, or one without a header that a browser sends to another
// origin only after a CORS preflight — a JSON Content-Type or an
// Authorization header. cyberdrew answers no preflight on these routes, so
// a page can send neither. GET, HEAD and OPTIONS pass: they change nothing.
func (s *server) crossSite(r *http.Request) error {
	if err := s.crossOrigin.Check(r); err != nil {
		return &httpError{status: http.StatusForbidden, msg: "cross-site request refused: its Origin or Sec-Fetch-Site is not this server"}
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if jsonContentType(r.Header.Get("Content-Type")) || r.Header.Get("Authorization") != "" {
		return nil
	}
	return &httpError{status: http.StatusForbidden, msg: "cross-site request refused: a write needs Content-Type: application/json (or an Authorization header)"}
}

// jsonContentType reports whether a Content-Type names JSON:
// application/json or any +json type.
func jsonContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && isJSONMediaType(mt)
}

func isJSONMediaType(mt string) bool {
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// admin guards a route with the bearer signing key, or, while none is set,
// with dev mode's local-only rule; its writes must not be cross-site.
func (s *server) admin(fn handlerFunc) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if len(s.signingKeys) > 0 {
			token, ok := bearer(r.Header.Get("Authorization"))
			if !ok || !matchKey(s.signingKeys, token) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="cyberdrew"`)
				return &httpError{status: http.StatusUnauthorized, msg: "missing or invalid bearer signing key"}
			}
		} else if he := devAdmin.admit(r); he != nil {
			if he.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="cyberdrew"`)
			}
			return he
		}
		if err := s.crossSite(r); err != nil {
			return err
		}
		return fn(w, r)
	})
}

// events guards the event API with the event key in the path, or, while
// none is set, with dev mode's local-only rule and the cross-site check: a
// web page must not be able to send events to a developer's daemon.
func (s *server) events(fn handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if len(s.eventKeys) > 0 {
			if !matchKey(s.eventKeys, r.PathValue("eventKey")) {
				return &httpError{status: http.StatusUnauthorized, msg: "event key not found"}
			}
			return fn(w, r)
		}
		if he := devEvents.admit(r); he != nil {
			return he
		}
		if err := s.crossSite(r); err != nil {
			return err
		}
		return fn(w, r)
	}
}

// bearer reads the token of an "Authorization: Bearer <token>" header; the
// scheme is case-insensitive.
func bearer(header string) (string, bool) {
	const scheme = "bearer "
	if len(header) < len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	token := strings.TrimSpace(header[len(scheme):])
	return token, token != ""
}

// keyDigest is a key's SHA-256: comparing digests takes the same time
// whatever the key's length.
type keyDigest [sha256.Size]byte

func digests(keys []string) []keyDigest {
	var out []keyDigest
	for _, k := range keys {
		if k != "" {
			out = append(out, sha256.Sum256([]byte(k)))
		}
	}
	return out
}

// matchKey compares candidate with every key in constant time.
func matchKey(keys []keyDigest, candidate string) bool {
	d := sha256.Sum256([]byte(candidate))
	match := 0
	for i := range keys {
		match |= subtle.ConstantTimeCompare(keys[i][:], d[:])
	}
	return match == 1
}
