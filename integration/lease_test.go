//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// TestLeaderLeaseLive: one 2-node cluster (ttl 5), the leader's lease under
// a live ttl change and under a flood of unauthenticated reads.
func TestLeaderLeaseLive(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 2, ttl: 5, retry: 2})
	p := c.primary(2 * time.Minute)
	c.waitReplicas(2*time.Minute, p)
	var r *node
	for _, n := range c.nodes {
		if n != p {
			r = n
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.etcd.Endpoint}, DialTimeout: 2 * time.Second})
	must(t, err)
	t.Cleanup(func() { cli.Close() })
	prefix := "/pgwarden/" + c.opts.scope + "/"

	t.Run("ttl change moves the keys onto a lease of the new ttl", func(t *testing.T) {
		watch := watchPrimaries(t, p, r)
		if code, body := p.post("PATCH", "/config", `{"ttl": 8}`); code != 200 {
			t.Fatalf("PATCH ttl 8: %d %s", code, body)
		}
		var granted, left int64
		harness.WaitFor(t, 15*time.Second, "the leader key on a lease of ttl 8", func() (bool, error) {
			lease, holder, err := keyLease(cli, prefix+"leader")
			if err != nil || holder != p.name {
				return false, fmt.Errorf("leader key: %q, %v", holder, err)
			}
			member, _, err := keyLease(cli, prefix+"members/"+p.name)
			if err != nil || member != lease {
				return false, fmt.Errorf("member key on lease %x, leader key on %x: %v", member, lease, err)
			}
			ttl, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(lease))
			if err != nil {
				return false, err
			}
			granted, left = ttl.GrantedTTL, ttl.TTL
			return granted == 8, fmt.Errorf("lease %x: granted ttl %d", lease, granted)
		})
		// A few renewals on the new lease, then the watch's verdict.
		moved := metricValue(p, "pgwarden_lease_renewals_total")
		harness.WaitFor(t, 10*time.Second, "three renewals after the move", func() (bool, error) {
			return metricValue(p, "pgwarden_lease_renewals_total") >= moved+3, nil
		})
		watch.check(t)
		t.Logf("leader %s: lease granted ttl %ds (%ds left when read); /primary 200 throughout (%d probes), replica never 200",
			p.name, granted, left, watch.probes.Load())
	})

	t.Run("a ttl leaving no watchdog margin is refused", func(t *testing.T) {
		before, err := cli.Get(context.Background(), prefix+"config")
		must(t, err)
		// ttl 3 passes the other rules (> loop_wait 1 + retry_timeout 1),
		// not safety_margin 2 + loop_wait 1.
		code, body := p.post("PATCH", "/config", `{"ttl": 3, "retry_timeout": 1}`)
		if code != 400 || !strings.Contains(body, "ttl") || !strings.Contains(body, "3s") ||
			!strings.Contains(body, "watchdog.safety_margin (2s)") {
			t.Fatalf("PATCH ttl 3 with safety_margin 2: %d %s; want 400 naming ttl 3s and watchdog.safety_margin (2s)", code, body)
		}
		after, err := cli.Get(context.Background(), prefix+"config")
		must(t, err)
		if len(before.Kvs) != 1 || len(after.Kvs) != 1 || after.Kvs[0].ModRevision != before.Kvs[0].ModRevision {
			t.Fatalf("config key changed by a refused PATCH: %v -> %v", before.Kvs, after.Kvs)
		}
		var cfg map[string]any
		must(t, json.Unmarshal(after.Kvs[0].Value, &cfg))
		if cfg["ttl"] != 8.0 {
			t.Fatalf("stored ttl after the refused PATCH = %v; want 8", cfg["ttl"])
		}
		t.Logf("refused: %d %s", code, strings.Join(strings.Fields(body), " "))
	})

	t.Run("a flood of reads costs etcd nothing and the lease nothing", func(t *testing.T) {
		const window = 10 * time.Second
		lease0, _, err := keyLease(cli, prefix+"leader")
		must(t, err)
		ren0, fail0 := metricValue(p, "pgwarden_lease_renewals_total"), metricValue(p, "pgwarden_lease_renewal_failures_total")

		q0, _ := etcdRequests(c.etcd.Endpoint)
		quietLat := probeLatencies(p, window, nil)
		q1, _ := etcdRequests(c.etcd.Endpoint)

		watch := watchPrimaries(t, p, r)
		var served, failed atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		const clients, maxRequests = 16, 100000
		tr := &http.Transport{MaxIdleConnsPerHost: clients}
		t.Cleanup(tr.CloseIdleConnections)
		hc := &http.Client{Timeout: 2 * time.Second, Transport: tr}
		paths := []string{"/cluster", "/config", "/history", "/patroni"}
		f0, _ := etcdRequests(c.etcd.Endpoint)
		start := time.Now()
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := i; ; j++ {
					select {
					case <-stop:
						return
					default:
					}
					if served.Load()+failed.Load() >= maxRequests {
						return
					}
					resp, err := hc.Get(p.api(paths[j%len(paths)]))
					if err != nil {
						failed.Add(1)
						continue
					}
					drain(resp)
					if resp.StatusCode != 200 {
						failed.Add(1)
						continue
					}
					served.Add(1)
				}
			}()
		}
		floodLat := probeLatencies(p, window, func() bool { return served.Load()+failed.Load() >= maxRequests })
		took := time.Since(start)
		close(stop)
		wg.Wait()
		f1, _ := etcdRequests(c.etcd.Endpoint)
		ren1, fail1 := metricValue(p, "pgwarden_lease_renewals_total"), metricValue(p, "pgwarden_lease_renewal_failures_total")
		lease1, holder, err := keyLease(cli, prefix+"leader")
		must(t, err)
		watch.check(t)

		quiet, flood := q1-q0, f1-f0
		p99, pmax := pct(floodLat, 0.99), slices.Max(floodLat)
		t.Logf("flood: %d requests served (%d failed) in %s by %d clients: %.0f req/s", served.Load(), failed.Load(),
			took.Round(time.Millisecond), clients, float64(served.Load())/took.Seconds())
		t.Logf("/primary during the flood: %d probes, p99 %s, max %s (quiet window: p99 %s, max %s)", len(floodLat),
			p99.Round(time.Microsecond), pmax.Round(time.Microsecond), pct(quietLat, 0.99).Round(time.Microsecond), slices.Max(quietLat).Round(time.Microsecond))
		t.Logf("etcd unary requests: %.0f in the %s quiet window, %.0f in the %s flood", quiet, window, flood, took.Round(time.Millisecond))
		t.Logf("leader renewals during the flood: %.0f, failures %.0f; leader key lease %x -> %x (%s)", ren1-ren0, fail1-fail0, lease0, lease1, holder)
		if served.Load() < 1000 || failed.Load() > 0 {
			t.Errorf("flood: %d served, %d failed; want at least 1000 served and none failed", served.Load(), failed.Load())
		}
		if p99 >= 100*time.Millisecond {
			t.Errorf("/primary p99 under the flood %s; want < 100ms", p99)
		}
		if ren0 < 0 || fail1 != fail0 || ren1-ren0 < took.Seconds()-2 || lease1 != lease0 || holder != p.name {
			t.Errorf("the lease under the flood: %.0f renewals, %.0f failures in %s, leader key lease %x -> %x held by %q; want one renewal a second, no failure, the same lease",
				ren1-ren0, fail1-fail0, took, lease0, lease1, holder)
		}
		// Scaled to the flood's length: the idle agents' own requests.
		if idle := quiet * took.Seconds() / window.Seconds(); flood > 1.5*idle+10 {
			t.Errorf("etcd served %.0f requests during the flood, %.0f in a quiet window as long: the reads reach etcd", flood, idle)
		}
	})
}

// primaryWatch probes /primary on the leader and the replica until check:
// any moment the leader is not 200, or the replica is, is a gap or a
// failover.
type primaryWatch struct {
	stop        chan struct{}
	done        chan struct{}
	probes      atomic.Int64
	mu          sync.Mutex
	gaps, extra []string
}

func watchPrimaries(t *testing.T, leader, other *node) *primaryWatch {
	w := &primaryWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; i < 10000; i++ {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			w.probes.Add(1)
			at := time.Now().Format("15:04:05.000")
			if code := leader.probe("/primary"); code != 200 {
				w.mu.Lock()
				w.gaps = append(w.gaps, fmt.Sprintf("%s %d", at, code))
				w.mu.Unlock()
			}
			if other.probe("/primary") == 200 {
				w.mu.Lock()
				w.extra = append(w.extra, at)
				w.mu.Unlock()
			}
		}
	}()
	t.Cleanup(w.end)
	return w
}

func (w *primaryWatch) end() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *primaryWatch) check(t *testing.T) {
	t.Helper()
	w.end()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.gaps) > 0 || len(w.extra) > 0 || w.probes.Load() < 5 {
		t.Fatalf("over %d probes: leader's /primary not 200 at %v; other node's /primary 200 at %v", w.probes.Load(), w.gaps, w.extra)
	}
}

// probeLatencies times GET /primary on n every 20 ms for d (or until
// done), on a connection of its own.
func probeLatencies(n *node, d time.Duration, done func() bool) []time.Duration {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	var out []time.Duration
	end := time.Now().Add(d)
	for i := 0; i < 10000 && time.Now().Before(end) && (done == nil || !done()); i++ {
		t0 := time.Now()
		resp, err := hc.Get(n.api("/primary"))
		lat := time.Since(t0)
		if err == nil {
			drain(resp)
			if resp.StatusCode != 200 {
				lat = time.Hour // a wrong answer counts as no answer
			}
		} else {
			lat = time.Hour
		}
		out = append(out, lat)
		time.Sleep(20 * time.Millisecond) // the probe's cadence, not a wait for a condition
	}
	return out
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// keyLease is the lease a key is bound to and its value.
func keyLease(cli *clientv3.Client, key string) (int64, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := cli.Get(ctx, key)
	if err != nil {
		return 0, "", err
	}
	if len(r.Kvs) == 0 {
		return 0, "", fmt.Errorf("%s: no such key", key)
	}
	return r.Kvs[0].Lease, string(r.Kvs[0].Value), nil
}

// metricValue is the sum of the series of that name on n's /metrics (-1
// when absent).
func metricValue(n *node, name string) float64 {
	resp, err := httpc.Get(n.api("/metrics"))
	if err != nil {
		return -1
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum, found := 0.0, false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			v, _ := strconv.ParseFloat(f[1], 64)
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}
