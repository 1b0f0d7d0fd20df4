package redis

import (
	"strings"
	"testing"
)

func TestSentinelURLs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url, err       string // err "" when the URL is accepted
		master         string
		addrs          int
		db             int
		user, password string
		sentinelPass   string
	}{
		{url: "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster", master: "mymaster", addrs: 2},
		{url: "redis+sentinel://:pw@127.0.0.1:1/mymaster/3?sentinel_password=s", master: "mymaster", addrs: 1, db: 3, password: "pw", sentinelPass: "s"},
		{url: "redis+sentinel://u:pw@h1:1,h2:2,h3:3/m?sentinel_username=su", master: "m", addrs: 3, user: "u", password: "pw"},
		{url: "redis+sentinel://127.0.0.1:1", err: "want /master"},
		{url: "redis+sentinel://127.0.0.1:1/", err: "want /master"},
		{url: "redis+sentinel://127.0.0.1:1/m/x", err: `database "x"`},
		{url: "redis+sentinel://127.0.0.1:1/m/0/extra", err: "want /master"},
		{url: "redis+sentinel://127.0.0.1/m", err: "needs host:port"},
		{url: "redis+sentinel://127.0.0.1:1,:2/m", err: "needs host:port"},
		{url: "redis+sentinel://127.0.0.1:99999/m", err: "bad port"},
		{url: "redis+sentinel://127.0.0.1:port/m", err: "malformed redis+sentinel URL"},
		{url: "redis+sentinel://:hunter2@127.0.0.1:1/m?tls=true", err: `unknown option "tls"`},
	}
	for _, tc := range tests {
		o, err := clientOptions(tc.url)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error containing %q", tc.url, err, tc.err)
			} else if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("%s: the error repeats the password: %v", tc.url, err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.url, err)
		case o.MasterName != tc.master || len(o.Addrs) != tc.addrs || o.DB != tc.db || o.Username != tc.user ||
			o.Password != tc.password || o.SentinelPassword != tc.sentinelPass:
			t.Errorf("%s: %+v", tc.url, o)
		}
	}
}
