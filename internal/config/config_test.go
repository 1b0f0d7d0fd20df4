package config_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/config"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func valid() config.Serve {
	return config.DefaultServe(env(map[string]string{"HOME": "/home/drew"}))
}

func TestDefaultServe(t *testing.T) {
	t.Parallel()
	c := valid()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.Addr != "127.0.0.1:8288" || c.DataDir != "/home/drew/.local/share/cyberdrew" || c.Workers != 16 || c.Lease != 5*time.Second ||
		c.Retention != 720*time.Hour || c.ShutdownTimeout != 30*time.Second || c.LogFormat != "auto" ||
		c.LogLevel != slog.LevelInfo || c.MaxEventSize != 256<<10 || c.MaxRequestSize != 10<<20 || c.MaxBatch != 5000 {
		t.Errorf("defaults = %+v", c)
	}
}

func TestDefaultDataDir(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"XDG_DATA_HOME": "/data", "HOME": "/home/drew"}, "/data/cyberdrew"},
		{map[string]string{"XDG_DATA_HOME": "relative", "HOME": "/home/drew"}, "/home/drew/.local/share/cyberdrew"},
		{map[string]string{"HOME": "/home/drew"}, "/home/drew/.local/share/cyberdrew"},
		{map[string]string{"USERPROFILE": "/users/drew"}, "/users/drew/.local/share/cyberdrew"},
		{map[string]string{}, ""},
	}
	for _, tt := range tests {
		if got := config.DefaultDataDir(env(tt.env)); got != tt.want {
			t.Errorf("DefaultDataDir(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(c *config.Serve)
		want   []string // every problem reported, in order
	}{
		{"defaults", func(*config.Serve) {}, nil},
		{"localhost", func(c *config.Serve) { c.Addr = "localhost:9000" }, nil},
		{"IPv6 loopback", func(c *config.Serve) { c.Addr = "[::1]:8288" }, nil},
		{"public with both keys", func(c *config.Serve) {
			c.Addr, c.EventKeys, c.SigningKey = "0.0.0.0:8288", []string{"ek"}, "sk"
		}, nil},
		{"public without keys", func(c *config.Serve) { c.Addr = "0.0.0.0:8288" }, []string{
			"set INNGEST_EVENT_KEY (--event-key)", "set INNGEST_SIGNING_KEY (--signing-key)",
		}},
		{"every interface without the signing key", func(c *config.Serve) { c.Addr, c.EventKeys = ":8288", []string{"ek"} }, []string{
			"--addr :8288 is not a loopback address: set INNGEST_SIGNING_KEY (--signing-key)",
		}},
		{"host name without the event key", func(c *config.Serve) { c.Addr, c.SigningKey = "example.com:80", "sk" }, []string{
			"--addr example.com:80 is not a loopback address: set INNGEST_EVENT_KEY (--event-key)",
		}},
		{"no port", func(c *config.Serve) { c.Addr = "127.0.0.1" }, []string{`--addr "127.0.0.1": must be host:port`}},
		{"bad port", func(c *config.Serve) { c.Addr = "127.0.0.1:99999" }, []string{"port must be a number"}},
		{"fallback without primary", func(c *config.Serve) { c.SigningKeyFallback = "old" }, []string{"--signing-key-fallback is set without --signing-key"}},
		{"bad store", func(c *config.Serve) { c.Store = "postgres://u:hunter2@db/x" }, []string{`--store: unsupported scheme "postgres"`}},
		{"blank signing key", func(c *config.Serve) { c.Addr, c.EventKeys, c.SigningKey = "0.0.0.0:8288", []string{"k"}, "   " }, []string{"--signing-key: is blank"}},
		{"signing key with a line break", func(c *config.Serve) { c.SigningKey = "secret\n" }, []string{"--signing-key: has spaces or a line break"}},
		{"no data dir", func(c *config.Serve) { c.DataDir = "" }, []string{"--data-dir: not set"}},
		{"no data dir needed with a store path", func(c *config.Serve) { c.DataDir, c.Store = "", "/srv/c.db" }, nil},
		{"zero workers", func(c *config.Serve) { c.Workers = 0 }, []string{"--workers: must be at least 1, got 0"}},
		{"negative workers", func(c *config.Serve) { c.Workers = -3 }, []string{"--workers: must be at least 1, got -3"}},
		{"short lease", func(c *config.Serve) { c.Lease = 500 * time.Millisecond }, []string{"--lease: must be at least 1s, got 500ms"}},
		{"retention zero keeps forever", func(c *config.Serve) { c.Retention = 0 }, nil},
		{"negative retention", func(c *config.Serve) { c.Retention = -time.Hour }, []string{"--retention: must not be negative"}},
		{"negative shutdown timeout", func(c *config.Serve) { c.ShutdownTimeout = -time.Second }, []string{"--shutdown-timeout: must not be negative"}},
		{"log format", func(c *config.Serve) { c.LogFormat = "yaml" }, []string{`--log-format: must be auto, text or json, got "yaml"`}},
		{"event size", func(c *config.Serve) { c.MaxEventSize = 0 }, []string{"--max-event-size: must be positive"}},
		{"request smaller than an event", func(c *config.Serve) { c.MaxRequestSize = 128 * config.KiB }, []string{
			"--max-request-size (128KiB) must be at least --max-event-size (256KiB)",
		}},
		{"batch", func(c *config.Serve) { c.MaxBatch = 0 }, []string{"--max-batch: must be at least 1"}},
		{"min replicas on Redis", func(c *config.Serve) { c.Store, c.RedisMinReplicas = "redis+sentinel://10.0.0.7:26379/m", 1 }, nil},
		{"min replicas on SQLite", func(c *config.Serve) { c.RedisMinReplicas = 1 }, []string{"--redis-min-replicas: needs a Redis store"}},
		{"negative min replicas", func(c *config.Serve) { c.RedisMinReplicas = -1 }, []string{"--redis-min-replicas: must not be negative"}},
		{"partitions on Redis", func(c *config.Serve) { c.Store, c.RedisPartitions = "redis://10.0.0.7:6379,10.0.0.8:6379", 12 }, nil},
		{"partitions on SQLite", func(c *config.Serve) { c.RedisPartitions = 3 }, []string{"--redis-partitions: needs a Redis store"}},
		{"no partitions", func(c *config.Serve) { c.Store, c.RedisPartitions = "redis://localhost:6379", 0 }, []string{"--redis-partitions: must be 1 to 32, got 0"}},
		{"too many partitions", func(c *config.Serve) { c.Store, c.RedisPartitions = "redis://localhost:6379", 33 }, []string{"--redis-partitions: must be 1 to 32, got 33"}},
		{"replica timeout past intake's", func(c *config.Serve) {
			c.Store, c.RedisMinReplicas, c.RedisReplicaTimeout = "redis://localhost:6379", 1, 2*time.Second
		}, []string{"--redis-replica-timeout: must be at least 1ms and shorter than --intake-timeout (2s), got 2s"}},
		{"streams", func(c *config.Serve) { c.MaxStreams = 0 }, []string{"--stream-max-subscribers: must be at least 1"}},
		{"site settings", func(c *config.Serve) {
			c.ResendAPIKey, c.ContactTo, c.ResendBaseURL, c.GitHubAPIURL = "re_x", "me@example.com", "http://127.0.0.1:9/", "https://ghe.example/api/graphql"
			c.CORSOrigins, c.TrustedProxies = []string{"https://cyberdrew.dev", "*"}, []string{"10.0.0.0/8", "192.0.2.1", "::1"}
		}, nil},
		{"webhook secrets", func(c *config.Serve) {
			c.ResendWebhookSecret, c.GitHubWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "any string GitHub was given"
		}, nil},
		{"a Resend webhook secret not from Resend", func(c *config.Serve) { c.ResendWebhookSecret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }, []string{
			"--resend-webhook-secret: must be the endpoint's signing secret as Resend shows it, whsec_ then base64",
		}},
		{"a Resend webhook secret cut short", func(c *config.Serve) { c.ResendWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8" }, []string{"--resend-webhook-secret"}},
		{"resend key without an owner", func(c *config.Serve) { c.ResendAPIKey = "re_x" }, []string{"--contact-to (CYBERDREW_CONTACT_TO): required when RESEND_API_KEY is set"}},
		{"bad site settings", func(c *config.Serve) {
			c.ResendBaseURL, c.ContactFrom, c.ContactTo, c.MilestoneWebhook = "ftp://x", "Drew <d@x.io>", "nobody", "hooks.slack.com/secret"
			c.CORSOrigins, c.TrustedProxies = []string{"cyberdrew.dev"}, []string{"10.0.0.0/33"}
		}, []string{`--resend-base-url "ftp://x": must be an http(s) URL`, "--milestone-webhook: must be an http(s) URL", `--contact-from "Drew <d@x.io>"`, `--contact-to "nobody"`, `--cors-origins "cyberdrew.dev"`, `--trusted-proxies: "10.0.0.0/33"`}},
		{"analytics page elsewhere", func(c *config.Serve) { c.AnalyticsPath = "/stats/site" }, nil},
		{"analytics page off", func(c *config.Serve) { c.AnalyticsPath = config.AnalyticsOff }, nil},
		{"analytics page on an API path", func(c *config.Serve) { c.AnalyticsPath = "/api/analytics" }, []string{`--analytics-path "/api/analytics": want a path such as /analytics`}},
		{"analytics page not a path", func(c *config.Serve) { c.AnalyticsPath = "analytics" }, []string{`--analytics-path "analytics"`}},
		{"analytics page unclean", func(c *config.Serve) { c.AnalyticsPath = "/a/../analytics" }, []string{`--analytics-path "/a/../analytics"`}},
		{"everything at once", func(c *config.Serve) {
			c.Addr, c.Workers, c.Retention, c.LogFormat, c.MaxBatch = "10.0.0.5:8288", -1, -time.Hour, "xml", -1
		}, []string{"INNGEST_EVENT_KEY", "INNGEST_SIGNING_KEY", "--workers", "--retention", "--log-format", "--max-batch"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("Validate() reported %d problems, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, lines[i], w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Validate() shows a password: %v", err)
			}
		})
	}
}

func TestParseStore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw     string
		want    config.StoreSpec
		wantErr string
	}{
		{"", config.StoreSpec{Kind: "sqlite", Path: "/data/cyberdrew.db"}, ""},
		{"sqlite:///var/lib/c.db", config.StoreSpec{Kind: "sqlite", Path: "/var/lib/c.db"}, ""},
		{"sqlite://rel/c.db", config.StoreSpec{Kind: "sqlite", Path: "rel/c.db"}, ""},
		{"sqlite:///srv/my%20site/c.db", config.StoreSpec{Kind: "sqlite", Path: "/srv/my site/c.db"}, ""},
		{"sqlite:///srv/100%/c.db", config.StoreSpec{}, "write % as %25"},
		{"/srv/my site/100%.db", config.StoreSpec{Kind: "sqlite", Path: "/srv/my site/100%.db"}, ""},
		{"./c.db", config.StoreSpec{Kind: "sqlite", Path: "./c.db"}, ""},
		{"redis://:pw@localhost:6379/0", config.StoreSpec{Kind: "redis", URL: "redis://:pw@localhost:6379/0"}, ""},
		{"rediss://cache.example.com:6380", config.StoreSpec{Kind: "redis", URL: "rediss://cache.example.com:6380"}, ""},
		{"redis+sentinel://:pw@10.0.0.7:26379,10.0.0.8:26379/mymaster/2", config.StoreSpec{Kind: "redis", URL: "redis+sentinel://:pw@10.0.0.7:26379,10.0.0.8:26379/mymaster/2"}, ""},
		{"redis+sentinel:///mymaster", config.StoreSpec{}, "malformed Redis Sentinel URL"},
		{"redis://:pw@10.0.0.7:7000,10.0.0.8:7000", config.StoreSpec{Kind: "redis", URL: "redis://:pw@10.0.0.7:7000,10.0.0.8:7000"}, ""},
		{"redis://10.0.0.7:7000,10.0.0.8", config.StoreSpec{}, `malformed Redis URL: cluster URL: node "10.0.0.8" needs host:port`},
		{"redis://:pw@10.0.0.7:7000,10.0.0.8:7000/3", config.StoreSpec{}, "a Redis Cluster has only database 0"},
		{"redis://10.0.0.7:7000?cluster=yes", config.StoreSpec{}, "want cluster=true"},
		{"redis+sentinel://10.0.0.7:0/mymaster", config.StoreSpec{}, "malformed Redis Sentinel URL"},
		{"rediss://10.0.0.7:7000?cluster=true", config.StoreSpec{Kind: "redis", URL: "rediss://10.0.0.7:7000?cluster=true"}, ""},
		{"sqlite://", config.StoreSpec{}, "needs a file path"},
		{"redis://", config.StoreSpec{}, "malformed Redis URL"},
		{"mysql://x", config.StoreSpec{}, `unsupported scheme "mysql"`},
	}
	for _, tt := range tests {
		got, err := config.ParseStore(tt.raw, "/data")
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseStore(%q) error = %v, want %q", tt.raw, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseStore(%q) = %+v, %v; want %+v", tt.raw, got, err, tt.want)
		}
	}
	spec, _ := config.ParseStore("redis://user:hunter2@localhost:6379", "")
	if s := spec.String(); strings.Contains(s, "hunter2") {
		t.Errorf("StoreSpec.String() = %q shows the password", s)
	}
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want config.ByteSize
		str  string
	}{
		{"262144", 256 << 10, "256KiB"},
		{"256KiB", 256 << 10, "256KiB"},
		{"256kib", 256 << 10, "256KiB"},
		{"256K", 256 << 10, "256KiB"},
		{"10MiB", 10 << 20, "10MiB"},
		{"10 MiB", 10 << 20, "10MiB"},
		{"1GiB", 1 << 30, "1GiB"},
		{"1MB", 1_000_000, "1000000"},
		{"100kb", 100_000, "100000"},
		{"512B", 512, "512"},
		{"0", 0, "0"},
	}
	for _, tt := range tests {
		var b config.ByteSize
		if err := b.Set(tt.in); err != nil || b != tt.want || b.String() != tt.str {
			t.Errorf("Set(%q) = %d (%s), %v; want %d (%s)", tt.in, b, b.String(), err, tt.want, tt.str)
		}
	}
	for _, bad := range []string{"", "abc", "-1KiB", "1.5MiB", "10TB", "99999999999GiB"} {
		var b config.ByteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) = %d, want an error", bad, b)
		}
	}
}

func TestLogValueHidesSecrets(t *testing.T) {
	t.Parallel()
	c := valid()
	c.EventKeys = []string{"evkey-secret-1"}
	c.SigningKey = "signkey-prod-secret-2"
	c.SigningKeyFallback = "signkey-prod-secret-3"
	c.Store = "redis://:secret-4@localhost:6379"
	c.ResendWebhookSecret = "whsec_c2VjcmV0LTU="
	c.GitHubWebhookSecret = "gh-secret-6"
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	for _, v := range []string{"secret-1", "secret-2", "secret-3", "secret-4", c.ResendWebhookSecret, c.GitHubWebhookSecret} {
		if strings.Contains(buf.String(), v) {
			t.Errorf("log shows the secret %s: %s", v, buf.String())
		}
	}
	if !strings.Contains(buf.String(), `"signing_key":true`) || !strings.Contains(buf.String(), `"event_keys":1`) {
		t.Errorf("log does not say which keys are set: %s", buf.String())
	}
}

func TestSigningKeys(t *testing.T) {
	t.Parallel()
	c := valid()
	if keys := c.SigningKeys(); len(keys) != 0 {
		t.Errorf("SigningKeys() = %v, want none", keys)
	}
	c.SigningKey, c.SigningKeyFallback = "new", "old"
	if keys := c.SigningKeys(); len(keys) != 2 || keys[0] != "new" || keys[1] != "old" {
		t.Errorf("SigningKeys() = %v, want [new old]", keys)
	}
}
