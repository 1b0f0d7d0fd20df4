package redis

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// SentinelScheme is the URL scheme of a Redis reached through Sentinel:
//
//	redis+sentinel://[[user]:password@]host:port[,host:port…]/master[/db][?sentinel_username=…&sentinel_password=…]
//
// The hosts are the sentinels' (at least one; list them all), master is the
// name they monitor, db the database number (default 0). The user and
// password are the master's and replicas'; sentinel_username and
// sentinel_password are the sentinels' own, when they require AUTH. The
// store talks to whichever server the sentinels name master, through
// go-redis's failover client, and follows a failover.
const SentinelScheme = "redis+sentinel"

// clientOptions reads a store URL: redis:// or rediss:// (one server, as
// go-redis parses it) or SentinelScheme. Its errors never repeat the URL,
// which may hold a password.
func clientOptions(raw string) (*goredis.UniversalOptions, error) {
	if !strings.HasPrefix(raw, SentinelScheme+"://") {
		o, err := goredis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("malformed URL: %w", errors.Unwrap(err))
		}
		return &goredis.UniversalOptions{
			Addrs: []string{o.Addr}, DB: o.DB, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
		}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("malformed " + SentinelScheme + " URL")
	}
	o := &goredis.UniversalOptions{}
	for _, addr := range strings.Split(u.Host, ",") {
		host, port, ok := strings.Cut(addr, ":")
		if !ok || host == "" {
			return nil, fmt.Errorf("%s URL: sentinel %q needs host:port", SentinelScheme, addr)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil, fmt.Errorf("%s URL: sentinel %q: bad port", SentinelScheme, addr)
		}
		o.Addrs = append(o.Addrs, addr)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if parts[0] == "" || len(parts) > 2 {
		return nil, fmt.Errorf("%s URL: want /master or /master/db after the sentinels", SentinelScheme)
	}
	o.MasterName = parts[0]
	if len(parts) == 2 {
		if o.DB, err = strconv.Atoi(parts[1]); err != nil || o.DB < 0 {
			return nil, fmt.Errorf("%s URL: database %q is not a number", SentinelScheme, parts[1])
		}
	}
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	for k, v := range u.Query() {
		switch k {
		case "sentinel_username":
			o.SentinelUsername = v[0]
		case "sentinel_password":
			o.SentinelPassword = v[0]
		default:
			return nil, fmt.Errorf("%s URL: unknown option %q (sentinel_username, sentinel_password)", SentinelScheme, k)
		}
	}
	return o, nil
}
