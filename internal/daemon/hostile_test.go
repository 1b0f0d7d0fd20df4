package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/daemon/daemontest"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// rawRequest sends head (request line and headers, without the blank line)
// and body over a fresh connection, exactly as given, and reads the answer.
func rawRequest(t *testing.T, addr, head string, body []byte) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	// A head with its own Content-Length may announce more than the body
	// holds: the connection is then half-closed after the body. (Others
	// keep it open: the server takes a half-close for a client gone away.)
	short := strings.Contains(strings.ToLower(head), "\ncontent-length:")
	if !short && body != nil {
		head += fmt.Sprintf("\r\nContent-Length: %d", len(body))
	}
	go func() {
		// The server may answer before reading the whole body (413), so
		// the write runs beside the read.
		fmt.Fprintf(conn, "%s\r\nHost: test\r\nConnection: close\r\n\r\n", head)
		conn.Write(body)
		if short {
			conn.(*net.TCPConn).CloseWrite()
		}
	}()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%q: reading the answer: %v", firstLine(head), err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res, raw
}

func firstLine(s string) string { line, _, _ := strings.Cut(s, "\r\n"); return line }

// counts is how many events and runs the store holds.
func counts(t *testing.T, st store.Store) (events, runs int) {
	t.Helper()
	ctx := context.Background()
	for cursor := ""; ; {
		p, err := st.ListEvents(ctx, store.EventFilter{Limit: 1000, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		events += len(p.Items)
		if cursor = p.Cursor; cursor == "" {
			break
		}
	}
	for cursor := ""; ; {
		p, err := st.ListRuns(ctx, store.RunFilter{Limit: 1000, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		runs += len(p.Items)
		if cursor = p.Cursor; cursor == "" {
			break
		}
	}
	return events, runs
}

func TestHostileRequests(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.EventKeys = []string{"ek"}
	cfg.SigningKey = "sk"
	cfg.CORSOrigins = []string{"https://cyberdrew.dev"}
	// The first daemon sits behind a trusted proxy (this test) that gives
	// each request its own client address, so the site's per-address rate
	// limits do not hide the cases; the second trusts no proxy.
	cfg.TrustedProxies = []string{"127.0.0.1"}
	d := daemontest.Run(t, cfg, slog.New(slog.DiscardHandler), daemon.Options{})
	cfg.TrustedProxies, cfg.DataDir = nil, t.TempDir()
	direct := daemontest.Run(t, cfg, slog.New(slog.DiscardHandler), daemon.Options{})

	nested := func(n int) []byte {
		return []byte(`{"name":"test/x","data":{"a":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}}`)
	}
	contact := func(name, email, msg string) []byte {
		b, _ := json.Marshal(map[string]string{"name": name, "email": email, "message": msg})
		return b
	}
	const (
		intake     = "POST /e/ek HTTP/1.1\r\nContent-Type: application/json"
		contactReq = "POST /api/contact HTTP/1.1\r\nContent-Type: application/json"
		views      = "POST /api/views HTTP/1.1\r\nContent-Type: application/json\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"
		bearer     = "\r\nAuthorization: Bearer sk"
	)
	cases := []struct {
		name   string
		head   string
		body   []byte
		want   int
		direct bool // sent to the daemon that trusts no proxy
	}{
		// Intake.
		{"truncated body", intake, []byte(`{"name":"test/x","data":{"a":`), 400, false},
		{"truncated array", intake, []byte(`[{"name":"test/x"},`), 400, false},
		{"body shorter than Content-Length", intake + "\r\nContent-Length: 100", []byte(`{"name":"test/x"}`), 400, false},
		{"huge body", intake, []byte(`{"name":"test/x","data":{"a":"` + strings.Repeat("x", 11<<20) + `"}}`), 413, false},
		{"huge declared length", intake + "\r\nContent-Length: 999999999999", []byte{}, 413, false},
		{"huge event in a batch", intake, []byte(`[{"name":"test/x","data":{"a":"` + strings.Repeat("x", 300<<10) + `"}}]`), 413, false},
		{"too many events", intake, []byte("[" + strings.TrimSuffix(strings.Repeat(`{"name":"test/x"},`, 5001), ",") + "]"), 413, false},
		{"empty body", intake, []byte{}, 400, false},
		{"wrong content type xml", "POST /e/ek HTTP/1.1\r\nContent-Type: application/xml", []byte(`{"name":"test/x"}`), 415, false},
		{"wrong content type multipart", "POST /e/ek HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=x", []byte(`{"name":"test/x"}`), 415, false},
		{"wrong charset", "POST /e/ek HTTP/1.1\r\nContent-Type: application/json; charset=latin1", []byte(`{"name":"test/x"}`), 415, false},
		{"100 000 nested arrays", intake, nested(100000), 400, false},
		{"11 000 nested arrays", intake, nested(11000), 400, false},
		{"invalid UTF-8 in data", intake, []byte("{\"name\":\"test/x\",\"data\":{\"a\":\"\xff\xfe\"}}"), 400, false},
		{"invalid UTF-8 in name", intake, []byte("{\"name\":\"test/\xc3\x28\"}"), 400, false},
		{"raw NUL byte", intake, []byte("{\"name\":\"test/x\x00\"}"), 400, false},
		{"escaped NUL in name", intake, []byte(`{"name":"test/x\u0000y"}`), 400, false},
		{"CRLF in name", intake, []byte(`{"name":"test/x\r\nX-Injected: 1"}`), 400, false},
		{"oversized name", intake, []byte(`{"name":"test/` + strings.Repeat("n", 2000) + `"}`), 400, false},
		{"oversized id", intake, []byte(`{"name":"test/x","id":"` + strings.Repeat("i", 2000) + `"}`), 400, false},
		{"name not a string", intake, []byte(`{"name":["test/x"]}`), 400, false},
		{"reserved name", intake, []byte(`{"name":"inngest/function.failed"}`), 400, false},
		{"second event bad", intake, []byte(`[{"name":"test/x"},{"name":""}]`), 400, false},
		{"data a string", intake, []byte(`{"name":"test/x","data":"x"}`), 400, false},
		{"negative ts", intake, []byte(`{"name":"test/x","ts":-1}`), 400, false},
		{"huge ts", intake, []byte(`{"name":"test/x","ts":1e400}`), 400, false},
		{"trailing garbage", intake, []byte(`{"name":"test/x"} {"name":"test/y"}`), 400, false},
		{"scalar body", intake, []byte(`"test/x"`), 400, false},
		{"wrong event key", "POST /e/nope HTTP/1.1\r\nContent-Type: application/json", []byte(`{"name":"test/x"}`), 401, false},
		{"no event key", "POST /e HTTP/1.1\r\nContent-Type: application/json", []byte(`{"name":"test/x"}`), 401, false},
		{"event key path trick", "POST /e/ek/../ek HTTP/1.1\r\nContent-Type: application/json", []byte(`{"name":"test/x"}`), 400, false},
		{"intake GET", "GET /e/ek HTTP/1.1", nil, 405, false},
		// Admin.
		{"no bearer", "GET /v1/runs HTTP/1.1", nil, 401, false},
		{"wrong bearer", "GET /v1/runs HTTP/1.1\r\nAuthorization: Bearer nope", nil, 401, false},
		{"bearer prefix of the key", "GET /v1/runs HTTP/1.1\r\nAuthorization: Bearer s", nil, 401, false},
		{"key with a suffix", "GET /v1/runs HTTP/1.1\r\nAuthorization: Bearer skk", nil, 401, false},
		{"basic scheme", "GET /v1/runs HTTP/1.1\r\nAuthorization: Basic c2s6c2s=", nil, 401, false},
		{"empty bearer", "GET /v1/runs HTTP/1.1\r\nAuthorization: Bearer ", nil, 401, false},
		{"huge bearer", "GET /v1/runs HTTP/1.1\r\nAuthorization: Bearer " + strings.Repeat("k", 40<<10), nil, 401, false},
		{"bearer without key: stream", "GET /v1/stream HTTP/1.1", nil, 401, false},
		{"bearer without key: metrics", "GET /metrics HTTP/1.1", nil, 401, false},
		{"invoke without key", "POST /v1/functions/hello-world/invoke HTTP/1.1", []byte(`{}`), 401, false},
		{"cancel without key", "DELETE /v1/runs/01J00000000000000000000000 HTTP/1.1", nil, 401, false},
		{"dot-dot path", "GET /v1/runs/../events HTTP/1.1", nil, 400, false},
		{"encoded dot-dot", "GET /v1/runs/%2e%2e/events HTTP/1.1" + bearer, nil, 400, false},
		{"encoded slash", "GET /v1/runs/x%2Fy HTTP/1.1" + bearer, nil, 400, false},
		{"double slash", "GET //v1/runs HTTP/1.1" + bearer, nil, 400, false},
		{"double slash inside", "GET /v1//runs HTTP/1.1" + bearer, nil, 400, false},
		{"dot segment", "GET /v1/./runs HTTP/1.1" + bearer, nil, 400, false},
		{"unknown run", "GET /v1/runs/nope HTTP/1.1" + bearer, nil, 404, false},
		{"run id with an encoded slash", "GET /v1/runs/a%2Fb HTTP/1.1" + bearer, nil, 400, false},
		{"unknown route", "GET /v2/runs HTTP/1.1" + bearer, nil, 404, false},
		{"bad limit", "GET /v1/runs?limit=-5 HTTP/1.1" + bearer, nil, 400, false},
		{"bad status", "GET /v1/runs?status=Nope HTTP/1.1" + bearer, nil, 400, false},
		{"bad since", "GET /v1/runs?since=yesterday HTTP/1.1" + bearer, nil, 400, false},
		{"bad cursor", "GET /v1/runs?cursor=%00%ff HTTP/1.1" + bearer, nil, 400, false},
		{"invoke unknown function", "POST /v1/functions/nope/invoke HTTP/1.1" + bearer, []byte(`{}`), 404, false},
		{"invoke with bad data", "POST /v1/functions/hello-world/invoke HTTP/1.1" + bearer, []byte(`{"data":`), 400, false},
		{"rerun unknown run", "POST /v1/runs/nope/rerun HTTP/1.1" + bearer, nil, 404, false},
		// Site.
		{"contact truncated", contactReq, []byte(`{"name":"Eve","email":`), 400, false},
		{"contact huge", contactReq, []byte(`{"name":"` + strings.Repeat("x", 1<<20) + `"}`), 413, false},
		{"contact wrong type", "POST /api/contact HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded", []byte("name=Eve"), 415, false},
		{"contact header injection in name", contactReq, contact("Eve\r\nBcc: victim@example.com", "eve@example.com", "hello there, friend"), 400, false},
		{"contact header injection in email", contactReq, contact("Eve", "eve@example.com\r\nBcc: victim@example.com", "hello there, friend"), 400, false},
		{"contact NUL in message", contactReq, contact("Eve", "eve@example.com", "hello\x00there, friend"), 400, false},
		{"contact invalid UTF-8", contactReq, []byte("{\"name\":\"Eve\xff\",\"email\":\"eve@example.com\",\"message\":\"hello there, friend\"}"), 400, false},
		{"contact trailing data", contactReq, append(contact("Eve", "eve@example.com", "hello there, friend"), []byte(`{"x":1}`)...), 400, false},
		{"contact deep nesting", contactReq, []byte(`{"name":` + strings.Repeat("[", 30000) + `}`), 400, false},
		{"contact forged XFF 1", contactReq + "\r\nX-Forwarded-For: 10.0.0.1", []byte(`{}`), 400, true},
		{"contact forged XFF 2", contactReq + "\r\nX-Forwarded-For: 10.0.0.2", []byte(`{}`), 400, true},
		{"contact forged XFF 3", contactReq + "\r\nX-Forwarded-For: 10.0.0.3", []byte(`{}`), 400, true},
		{"contact forged XFF: limited by the real peer", contactReq + "\r\nX-Forwarded-For: 10.0.0.4", contact("Eve", "eve@example.com", "hello there, friend"), 429, true},
		{"views oversized slug", views, []byte(`{"slug":"` + strings.Repeat("a", 5000) + `","sessionId":"abcdefghijkl","isVisible":true,"timeOnPage":9000}`), 400, false},
		{"views slug path trick", views, []byte(`{"slug":"../../etc/passwd","sessionId":"abcdefghijkl","isVisible":true,"timeOnPage":9000}`), 400, false},
		{"views NUL in session", views, []byte(`{"slug":"post","sessionId":"abcdefghij\u0000kl","isVisible":true,"timeOnPage":9000}`), 400, false},
		{"views array body", views, []byte(`[1,2,3]`), 400, false},
		{"views path trick", "GET /api/views/../analytics HTTP/1.1", nil, 400, false},
		{"views encoded slash", "GET /api/views/a%2F..%2Fb HTTP/1.1", nil, 400, false},
		{"contributions other user", "GET /api/github-contributions?username=torvalds HTTP/1.1", nil, 403, false},
		{"contributions bad user", "GET /api/github-contributions?username=%0d%0aX:1 HTTP/1.1", nil, 400, false},
		{"daily bad days", "GET /api/analytics/daily?days=-1 HTTP/1.1", nil, 400, false},
		{"preflight from another origin", "OPTIONS /api/contact HTTP/1.1\r\nOrigin: https://evil.example", nil, 403, false},
	}
	events0, runs0 := counts(t, d.Store())
	for i, tc := range cases {
		addr, head := d.Addr(), tc.head+fmt.Sprintf("\r\nX-Forwarded-For: 198.51.%d.%d", i/250, i%250+1)
		if tc.direct {
			addr, head = direct.Addr(), tc.head
		}
		res, body := rawRequest(t, addr, head, tc.body)
		var e struct {
			Error string `json:"error"`
		}
		jsonErr := json.Unmarshal(body, &e) == nil && e.Error != ""
		if res.StatusCode != tc.want || !jsonErr {
			t.Errorf("%s: %d %q, want %d with a JSON error", tc.name, res.StatusCode, cutBody(body), tc.want)
		}
	}
	if events, runs := counts(t, d.Store()); events != events0 || runs != runs0 {
		t.Errorf("the store went from %d events and %d runs to %d and %d", events0, runs0, events, runs)
	}
	if events, runs := counts(t, direct.Store()); events != 0 || runs != 0 {
		t.Errorf("the direct daemon's store holds %d events and %d runs, want none", events, runs)
	}
	t.Logf("%d hostile requests", len(cases))
}

func cutBody(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
