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

func TestClusterURLs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url, err       string // err "" when the URL is accepted
		addrs          int
		user, password string
		tls            bool
	}{
		{url: "redis://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002", addrs: 3},
		{url: "redis://127.0.0.1:7000,127.0.0.1:7001/0", addrs: 2},
		{url: "redis://127.0.0.1:7000,127.0.0.1:7001/", addrs: 2},
		{url: "redis://u:pw@h1:1,h2:2", addrs: 2, user: "u", password: "pw"},
		{url: "redis://[::1]:7000,[::1]:7001", addrs: 2},
		{url: "redis://:pw@h1:1,h2:2/0", addrs: 2, password: "pw"},
		{url: "redis://127.0.0.1:7000?cluster=true", addrs: 1},
		{url: "redis://:p%40ss@127.0.0.1:7000/0?cluster=true", addrs: 1, password: "p@ss"},
		{url: "rediss://u:pw@h1:1,h2:2", addrs: 2, user: "u", password: "pw", tls: true},
		{url: "rediss://h1:1?cluster=true", addrs: 1, tls: true},
		{url: "redis://:hunter2@h1:1,h2:2/1", err: "only database 0"},
		{url: "redis://:hunter2@h1:1/3?cluster=true", err: "only database 0"},
		{url: "redis://:hunter2@h1:1,h2:2/x", err: `database "x"`},
		{url: "redis://:hunter2@h1:1,h2:99999", err: "bad port"},
		{url: "redis://:hunter2@h1:0,h2:1", err: "bad port"},
		{url: "redis://:hunter2@h1:1,h2", err: "needs host:port"},
		{url: "redis://:hunter2@h1:1,:2", err: "needs host:port"},
		{url: "redis://:hunter2@h1:1,,h2:2", err: "needs host:port"},
		{url: "redis://:hunter2@h1:1,h2:port", err: "bad port"},
		{url: "redis://:hunter2@h1:port,h2:1", err: "bad port"},
		{url: "redis://:hunter2@h1:1,h2:2/%zz", err: "malformed cluster URL"},
		{url: "redis://:hunter2@h1:1,h2:2?dial_timeout=1s", err: `unknown option "dial_timeout"`},
		{url: "redis://:hunter2@h1:1?cluster=true&db=2", err: `unknown option "db"`},
		{url: "redis://:hunter2@h1:1?cluster=false", err: "want cluster=true"},
		{url: "redis://:hunter2@h1:1?cluster=true&cluster=true", err: "want cluster=true"},
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
		case !o.IsClusterMode || o.MasterName != "" || len(o.Addrs) != tc.addrs || o.DB != 0 || o.Username != tc.user ||
			o.Password != tc.password || (o.TLSConfig != nil) != tc.tls:
			t.Errorf("%s: %+v", tc.url, o)
		case tc.tls && o.TLSConfig.ServerName != "":
			t.Errorf("%s: TLS server name %q, want each node checked against its own address", tc.url, o.TLSConfig.ServerName)
		}
	}
	// One host without the option stays a single server, with its database.
	for _, single := range []string{"redis://127.0.0.1:6379/2", "rediss://:pw@h:6380/0", "redis://h:1?dial_timeout=1s"} {
		o, err := clientOptions(single)
		if err != nil || o.IsClusterMode || len(o.Addrs) != 1 {
			t.Errorf("%s: %+v, %v; want one server", single, o, err)
		}
	}
}
