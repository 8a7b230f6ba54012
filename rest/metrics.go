package rest

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// collector reads the agent's snapshot at scrape time: the metrics are
// never staler than the last loop and cost nothing between scrapes.
type collector struct {
	a Agent

	leader, primary, replica, running, streaming, pause *prometheus.Desc
	timeline, wal, received, replayed, lag              *prometheus.Desc
	loopDuration, lastLoop, lastDCS                     *prometheus.Desc
	renewals, renewFails, failovers, poolerUp           *prometheus.Desc
}

func newMetrics(a Agent, extra ...prometheus.Collector) http.Handler {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("pgwarden_"+name, help, []string{"scope", "name"}, nil)
	}
	c := &collector{
		a:            a,
		leader:       d("leader", "1 while this node holds the leader key"),
		primary:      d("primary", "1 while PostgreSQL runs as a primary"),
		replica:      d("replica", "1 while PostgreSQL runs as a standby"),
		running:      d("postgres_running", "1 while PostgreSQL accepts connections"),
		streaming:    d("streaming", "1 while the WAL receiver streams"),
		pause:        d("pause", "1 while the cluster is paused"),
		timeline:     d("timeline", "PostgreSQL timeline"),
		wal:          d("wal_position_bytes", "current WAL position (primary) or received position (standby)"),
		received:     d("received_position_bytes", "standby: WAL received"),
		replayed:     d("replayed_position_bytes", "standby: WAL replayed"),
		lag:          d("replication_lag_bytes", "the leader's last WAL position minus this standby's replayed position"),
		loopDuration: d("loop_duration_seconds", "duration of the last HA loop"),
		lastLoop:     d("last_loop_timestamp_seconds", "when the HA loop last completed"),
		lastDCS:      d("dcs_last_seen_timestamp_seconds", "when etcd last answered"),
		renewals:     d("lease_renewals_total", "successful leader lease renewals"),
		renewFails:   d("lease_renewal_failures_total", "failed leader lease renewals"),
		failovers:    d("failovers_total", "promotions of this node"),
		poolerUp:     d("pooler_up", "1 while the managed PgBouncer answers and points where it should"),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(extra...)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.leader, c.primary, c.replica, c.running, c.streaming, c.pause,
		c.timeline, c.wal, c.received, c.replayed, c.lag, c.loopDuration, c.lastLoop, c.lastDCS,
		c.renewals, c.renewFails, c.failovers, c.poolerUp} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t interface{ Unix() int64 }) float64 { return float64(t.Unix()) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.Status()
	l := []string{st.Scope, st.Name}
	g := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	ctr := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	g(c.leader, b2f(st.IsLeader))
	g(c.primary, b2f(st.Running && st.Answering && !st.InRecovery))
	g(c.replica, b2f(st.Running && st.Answering && st.InRecovery))
	g(c.running, b2f(st.Running))
	g(c.streaming, b2f(st.Streaming))
	g(c.pause, b2f(st.Pause))
	g(c.timeline, float64(st.Timeline))
	g(c.wal, float64(st.WALPosition))
	g(c.received, float64(st.ReceivedLSN))
	g(c.replayed, float64(st.ReplayedLSN))
	g(c.lag, float64(st.Lag()))
	g(c.loopDuration, st.LoopDuration.Seconds())
	if !st.LastLoop.IsZero() {
		g(c.lastLoop, unix(st.LastLoop))
	}
	if !st.LastDCSContact.IsZero() {
		g(c.lastDCS, unix(st.LastDCSContact))
	}
	ctr(c.renewals, float64(st.LeaseRenewals))
	ctr(c.renewFails, float64(st.LeaseFailures))
	ctr(c.failovers, float64(st.Failovers))
	if st.Pooler != "" {
		g(c.poolerUp, b2f(st.Pooler == "ok" || st.Pooler == "paused"))
	}
}
