package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
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

// A Redis Cluster URL is a redis:// or rediss:// URL that lists several
// nodes, or one node with the option cluster=true:
//
//	redis://[[user]:password@]host:port,host:port…[/0]
//	rediss://[[user]:password@]host:port[/0]?cluster=true
//
// The hosts are seed nodes (any masters or replicas of the cluster; the
// client learns the rest from CLUSTER SLOTS). A cluster has only database
// 0, and cluster is the only option. With rediss://, each node's
// certificate is checked against the address the cluster announces for
// it.
const clusterOption = "cluster"

// CheckURL reports what is wrong with a store URL (see clientOptions), so
// a command can refuse it before it opens anything. Its errors never
// repeat the URL.
func CheckURL(raw string) error {
	_, err := clientOptions(raw)
	return err
}

// clientOptions reads a store URL: redis:// or rediss:// (one server, as
// go-redis parses it, or a cluster), or SentinelScheme. Its errors never
// repeat the URL, which may hold a password.
func clientOptions(raw string) (*goredis.UniversalOptions, error) {
	if IsClusterURL(raw) {
		return clusterOptions(raw)
	}
	if !strings.HasPrefix(raw, SentinelScheme+"://") {
		o, err := goredis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("malformed URL: %s", parseURLReason(raw, err))
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
	if o.Addrs, err = splitAddrs(u.Host, SentinelScheme+" URL: sentinel"); err != nil {
		return nil, err
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

// IsClusterURL reports whether raw is a redis:// or rediss:// URL naming
// several hosts or carrying the cluster option: the store opens it with
// the cluster client, and the daemon checks the settings a cluster needs
// before. It only looks: a malformed URL is reported by whichever parser
// it goes to.
func IsClusterURL(raw string) bool {
	_, hosts, query, ok := clusterParts(raw)
	if !ok {
		return false
	}
	if strings.Contains(hosts, ",") {
		return true
	}
	v, err := url.ParseQuery(query)
	return err == nil && v.Has(clusterOption)
}

// clusterParts cuts a redis:// or rediss:// URL's host list (between the
// user info and the path, from offset at) and its query out of it.
func clusterParts(raw string) (at int, hosts, query string, ok bool) {
	rest, ok := strings.CutPrefix(raw, "redis://")
	if !ok {
		if rest, ok = strings.CutPrefix(raw, "rediss://"); !ok {
			return 0, "", "", false
		}
	}
	at = len(raw) - len(rest)
	authority, query, _ := strings.Cut(rest, "?")
	authority, _, _ = strings.Cut(authority, "/")
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		authority = authority[i+1:]
		at += i + 1
	}
	return at, authority, query, true
}

// clusterOptions reads a Redis Cluster URL (see clusterOption).
func clusterOptions(raw string) (*goredis.UniversalOptions, error) {
	at, hosts, _, _ := clusterParts(raw)
	o := &goredis.UniversalOptions{IsClusterMode: true}
	var err error
	if o.Addrs, err = splitAddrs(hosts, "cluster URL: node"); err != nil {
		return nil, err
	}
	// url.Parse takes one host: it reads the rest of the URL with the first.
	u, err := url.Parse(raw[:at] + o.Addrs[0] + raw[at+len(hosts):])
	if err != nil {
		return nil, errors.New("malformed cluster URL")
	}
	if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
		return nil, fmt.Errorf("cluster URL: database %q: a Redis Cluster has only database 0", db)
	}
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	for k, v := range u.Query() {
		switch {
		case k != clusterOption:
			return nil, fmt.Errorf("cluster URL: unknown option %q (cluster)", k)
		case len(v) != 1 || v[0] != "true":
			return nil, fmt.Errorf("cluster URL: want cluster=true, not %q", strings.Join(v, ","))
		}
	}
	if u.Scheme == "rediss" {
		// No ServerName: each node is checked against its own address.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

// splitAddrs reads a comma-separated list of host:port addresses (IPv6
// hosts in brackets, ports 1 to 65535); what names one in an error.
func splitAddrs(list, what string) ([]string, error) {
	var addrs []string
	for _, addr := range strings.Split(list, ",") {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, fmt.Errorf("%s %q needs host:port", what, addr)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("%s %q: bad port", what, addr)
		}
		addrs = append(addrs, addr)
	}
	return addrs, nil
}

// parseURLReason is why go-redis refused raw, without raw itself: the
// reason go-redis wrapped (a *url.Error's repeats the URL, so only its
// cause is kept), or its own message ("invalid database number: \"abc\"",
// "unexpected option: foo"), unless that holds the URL's user information.
func parseURLReason(raw string, err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	msg := strings.TrimPrefix(err.Error(), "redis: ")
	if u, perr := url.Parse(raw); perr == nil && u.User != nil && strings.Contains(msg, u.User.String()) {
		return "not a redis:// URL go-redis can read"
	}
	return msg
}
