package agent

import "net/url"

// hostPort extracts host:port from a member's conn_url
// (postgres://host:port/db); a bare host:port is returned as is.
func hostPort(connURL string) string {
	u, err := url.Parse(connURL)
	if err != nil || u.Host == "" {
		return connURL
	}
	return u.Host
}
