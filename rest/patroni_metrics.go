package rest

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// patroniCollector exposes the snapshot under the names Patroni's /metrics
// uses (rest.metrics_compat: patroni), so dashboards and alerts written for
// Patroni work unchanged beside the pgwarden_* series. Values follow
// Patroni's meaning: 0 where a series does not apply to this node's role.
type patroniCollector struct {
	a       Agent
	version float64
	descs   map[string]*prometheus.Desc
}

// patroniSeries are the names and help texts, in the order exposed.
var patroniSeries = [][2]string{
	{"version", "pgwarden's version as major*10000+minor*100+patch"},
	{"postgres_running", "1 while PostgreSQL runs"},
	{"postmaster_start_time", "when the postmaster started, seconds since the epoch (0 when down)"},
	{"primary", "1 while this node is the leader running as primary"},
	{"master", "as patroni_primary (the name older dashboards query)"},
	{"standby_leader", "1 while this node leads a standby cluster (pgwarden has none: always 0)"},
	{"replica", "1 while this node runs as a replica"},
	{"sync_standby", "1 while this node is a synchronous standby"},
	{"xlog_location", "primary: current WAL position in bytes (0 on replicas)"},
	{"xlog_received_location", "replica: WAL received, bytes (0 on the primary)"},
	{"xlog_replayed_location", "replica: WAL replayed, bytes (0 on the primary)"},
	{"xlog_paused", "1 while WAL replay is paused (pgwarden never pauses it: 0)"},
	{"postgres_streaming", "1 while the WAL receiver streams"},
	{"postgres_in_archive_recovery", "1 while a replica recovers without streaming"},
	{"postgres_server_version", "PostgreSQL's server_version_num (0 when down)"},
	{"cluster_unlocked", "1 while no member holds the leader key"},
	{"postgres_timeline", "PostgreSQL's timeline (0 when down)"},
	{"dcs_last_seen", "when etcd last answered, seconds since the epoch"},
	{"pending_restart", "1 while a changed parameter waits for a restart"},
	{"is_paused", "1 while the cluster is paused (maintenance mode)"},
}

func newPatroniCollector(a Agent, version string) *patroniCollector {
	c := &patroniCollector{a: a, version: versionNumber(version), descs: map[string]*prometheus.Desc{}}
	for _, s := range patroniSeries {
		c.descs[s[0]] = prometheus.NewDesc("patroni_"+s[0], s[1], []string{"scope", "name"}, nil)
	}
	return c
}

// versionNumber turns "1.2.3" (or "v1.2.3-4-gabc") into 10203; 0 when it is
// not a version.
func versionNumber(v string) float64 {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return 0
	}
	n := 0
	for _, p := range parts {
		d, err := strconv.Atoi(p)
		if err != nil || d < 0 || d > 99 {
			return 0
		}
		n = n*100 + d
	}
	return float64(n)
}

func (c *patroniCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, s := range patroniSeries {
		ch <- c.descs[s[0]]
	}
}

func (c *patroniCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.Status()
	primary := st.IsLeader && st.Running && st.Answering && !st.InRecovery
	replica := st.Running && st.Answering && st.InRecovery
	var loc, received, replayed, started, dcs float64
	if primary {
		loc = float64(st.WALPosition)
	}
	if replica {
		received, replayed = float64(st.ReceivedLSN), float64(st.ReplayedLSN)
	}
	if st.Running && !st.PostmasterStart.IsZero() {
		started = float64(st.PostmasterStart.UnixNano()) / 1e9
	}
	if !st.LastDCSContact.IsZero() {
		dcs = unix(st.LastDCSContact)
	}
	timeline, version := 0.0, 0.0
	if st.Running {
		timeline, version = float64(st.Timeline), float64(st.ServerVersion)
	}
	values := map[string]float64{
		"version": c.version, "postgres_running": b2f(st.Running), "postmaster_start_time": started,
		"primary": b2f(primary), "master": b2f(primary), "standby_leader": 0, "replica": b2f(replica),
		"sync_standby": b2f(replica && st.Synchronous), "xlog_location": loc,
		"xlog_received_location": received, "xlog_replayed_location": replayed, "xlog_paused": 0,
		"postgres_streaming": b2f(replica && st.Streaming), "postgres_in_archive_recovery": b2f(replica && !st.Streaming),
		"postgres_server_version": version, "cluster_unlocked": b2f(st.ClusterUnlocked),
		"postgres_timeline": timeline, "dcs_last_seen": dcs, "pending_restart": b2f(st.PendingRestart),
		"is_paused": b2f(st.Pause),
	}
	for _, s := range patroniSeries {
		ch <- prometheus.MustNewConstMetric(c.descs[s[0]], prometheus.GaugeValue, values[s[0]], st.Scope, st.Name)
	}
}
