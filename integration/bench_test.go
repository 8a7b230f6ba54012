//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// Figures for `make bench`: each benchmark runs its scenario a fixed number
// of times (b.N is ignored: run with -benchtime 1x) and prints
// "name value unit" lines, also collected into bin/bench.json.

var (
	resultsMu sync.Mutex
	results   = map[string]any{}
)

func report(b testing.TB, name string, value float64, unit string) {
	fmt.Printf("%s %.3f %s\n", name, value, unit)
	resultsMu.Lock()
	defer resultsMu.Unlock()
	results[name] = map[string]any{"value": value, "unit": unit}
	// The tests may run as another user than the one who owns bin/: the
	// whole set also goes to stdout, from which make bench writes the file.
	if data, err := json.Marshal(results); err == nil {
		fmt.Printf("BENCH_JSON %s\n", data)
	}
	path := os.Getenv("PGWARDEN_BENCH_JSON")
	if path == "" {
		path = filepath.Join(harness.ModuleRoot(), "bin", "bench.json")
	}
	if data, err := json.MarshalIndent(results, "", "  "); err == nil {
		_ = os.MkdirAll(filepath.Dir(path), 0o755)
		// Running as the unprivileged test user, bin/ is often not ours:
		// only a path asked for explicitly is worth a complaint.
		if err := os.WriteFile(path, data, 0o644); err != nil && os.Getenv("PGWARDEN_BENCH_JSON") != "" {
			say("write %s: %v", path, err)
		}
	}
}

// say prints a detail line of the benchmark on stdout, prefixed "# ": go
// test truncates a benchmark's log, which the processes' logs fill first.
func say(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	fmt.Print("# " + strings.ReplaceAll(strings.TrimRight(text, "\n"), "\n", "\n# ") + "\n")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Agent and postmaster killed on a living host: the watchdog hands the
// key back. Host lost (watchdog too): the lease decides.
func BenchmarkFailoverTTL10(b *testing.B)         { benchFailover(b, 10, 3, 5, false) }
func BenchmarkFailoverTTL5(b *testing.B)          { benchFailover(b, 5, 2, 5, false) }
func BenchmarkFailoverHostLossTTL5(b *testing.B)  { benchFailover(b, 5, 2, 5, true) }
func BenchmarkFailoverHostLossTTL10(b *testing.B) { benchFailover(b, 10, 3, 5, true) }

// benchFailover: kill -9 of the leader's agent and postmaster (and its
// watchdog: hostLoss) until another node accepts a write, rounds times;
// the killed node rejoins in between.
func benchFailover(b *testing.B, ttl, retry float64, rounds int, hostLoss bool) {
	c := newCluster(b, clusterOpts{ttl: ttl, retry: retry})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(b, p.exec("CREATE TABLE t (id serial primary key, at timestamptz default now())"))
	var secs []float64
	for r := range rounds {
		waitRows(b, 20*time.Second, 0, c.nodes...)
		killed := time.Now()
		if hostLoss {
			p.killHost()
		} else {
			p.killHard()
		}
		var np *node
		harness.WaitFor(b, time.Duration(ttl*float64(time.Second))+30*time.Second, "a new primary accepting writes", func() (bool, error) {
			for _, n := range c.nodes {
				if n != p && n.exec("INSERT INTO t DEFAULT VALUES") == nil {
					np = n
					return true, nil
				}
			}
			return false, nil
		})
		d := time.Since(killed).Seconds()
		secs = append(secs, d)
		say("round %d: %s -> %s in %.2fs", r+1, p.name, np.name, d)
		p.start()
		harness.WaitFor(b, 120*time.Second, p.name+" rejoins", func() (bool, error) {
			return p.probe("/replica") == 200, nil
		})
		c.waitReplicas(60*time.Second, np)
		p = np
	}
	name := fmt.Sprintf("failover_ttl%g", ttl)
	if hostLoss {
		name = fmt.Sprintf("failover_hostloss_ttl%g", ttl)
	}
	report(b, name+"_median", median(secs), "s")
	report(b, name+"_max", slices.Max(secs), "s")
	say("%s rounds: %s", name, fmtSecs(secs))
}

func fmtSecs(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}

// BenchmarkOperations measures, on one 3-node cluster with a PgBouncer per
// node: the leader's PostgreSQL crash recovery (agent alive), planned
// switchover time and the longest client gap through PgBouncer, REST
// GET /primary throughput, and an idle agent's footprint.
func BenchmarkOperations(b *testing.B) {
	c := newCluster(b, clusterOpts{ttl: 10, retry: 3, pgbouncer: true})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(b, p.exec("CREATE TABLE bench (id bigint primary key)"))

	// PostgreSQL crash on the leader, agent alive: until writes work again.
	var crash []float64
	for r := range 5 {
		p = c.primary(60 * time.Second)
		c.waitReplicas(60*time.Second, p)
		pid := p.postmasterPID()
		start := time.Now()
		must(b, syscall.Kill(pid, syscall.SIGKILL))
		harness.WaitFor(b, 60*time.Second, "writes work again", func() (bool, error) {
			for _, n := range c.nodes {
				// Negative ids: apart from the switchover rounds' own.
				if n.exec("INSERT INTO bench VALUES ($1)", -1-r) == nil {
					return true, nil
				}
			}
			return false, nil
		})
		crash = append(crash, time.Since(start).Seconds())
	}
	report(b, "pg_crash_recovery_median", median(crash), "s")
	report(b, "pg_crash_recovery_max", slices.Max(crash), "s")
	say("pg crash recovery rounds: %s", fmtSecs(crash))

	// Planned switchovers with a client writing through a replica's PgBouncer.
	gaps, times, errs := benchSwitchovers(b, c, 5)
	report(b, "switchover_median", median(times), "s")
	report(b, "switchover_client_gap_median", median(gaps), "s")
	report(b, "switchover_client_gap_max", slices.Max(gaps), "s")
	report(b, "switchover_client_errors", float64(errs), "count")
	say("switchover times %s; client gaps %s", fmtSecs(times), fmtSecs(gaps))

	// REST throughput with wrk, 64 connections, 10 s.
	benchREST(b, c)
}

func benchSwitchovers(b *testing.B, c *cluster, rounds int) (gaps, times []float64, errs int) {
	for r := range rounds {
		cur := c.primary(60 * time.Second)
		c.waitReplicas(60*time.Second, cur)
		var cand, host *node
		for _, n := range c.nodes {
			if n == cur {
				continue
			}
			if cand == nil {
				cand = n
			} else {
				host = n
			}
		}
		conn, err := pgx.Connect(context.Background(), fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=app sslmode=disable default_query_exec_mode=simple_protocol", host.bouncerPort))
		if err != nil {
			b.Fatalf("connect through pgbouncer: %v", err)
		}
		stop := make(chan struct{})
		type res struct {
			gap   time.Duration
			errs  int
			first string
		}
		done := make(chan res, 1)
		var acked atomic.Int64
		start := time.Now()
		go func() {
			var out res
			last := time.Now()
			id := int64(r) * 1_000_000
			for {
				select {
				case <-stop:
					done <- out
					return
				case <-time.After(10 * time.Millisecond):
				}
				id++
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := conn.Exec(ctx, "INSERT INTO bench VALUES ($1)", id)
				cancel()
				if err != nil {
					if out.errs == 0 {
						out.first = fmt.Sprintf("%.3fs after the request: %v", time.Since(start).Seconds(), err)
					}
					out.errs++
					continue
				}
				acked.Add(1)
				now := time.Now()
				out.gap = max(out.gap, now.Sub(last))
				last = now
			}
		}()
		start = time.Now()
		code, body := cur.post("POST", "/switchover", fmt.Sprintf(`{"candidate":%q}`, cand.name))
		took := time.Since(start)
		// The gap ends with the first write after the switchover.
		from := acked.Load()
		harness.WaitFor(b, 30*time.Second, "writes through pgbouncer after the switchover", func() (bool, error) {
			return acked.Load() >= from+3, fmt.Errorf("%d more writes", acked.Load()-from)
		})
		close(stop)
		out := <-done
		conn.Close(context.Background())
		if code != 200 {
			b.Fatalf("switchover %d: %d %s", r, code, body)
		}
		gaps = append(gaps, out.gap.Seconds())
		times = append(times, took.Seconds())
		errs += out.errs
		if out.errs > 0 {
			say("switchover %d (%s to %s, client on %s's PgBouncer): %d failed statements, the first %s", r, cur.name, cand.name, host.name, out.errs, out.first)
		}
	}
	return gaps, times, errs
}

func benchREST(b *testing.B, c *cluster) {
	p := c.primary(30 * time.Second)
	pid := p.agent.Cmd.Process.Pid
	cpu0, t0 := cpu(pid), time.Now()
	rps, p50, p99 := runWrk(b, p.api("/primary"))
	report(b, "rest_primary_rps_64conn", rps, "req/s")
	report(b, "rest_primary_p50_64conn", p50, "ms")
	report(b, "rest_primary_p99_64conn", p99, "ms")
	report(b, "rest_agent_cpu_under_load", (cpu(pid)-cpu0)/time.Since(t0).Seconds(), "cores")
	// The machine's own floor, in the same run: the smallest Go HTTP
	// server answering the same body, under the same load generator.
	body, err := http.Get(p.api("/primary"))
	if err != nil {
		b.Fatal(err)
	}
	payload, _ := io.ReadAll(body.Body)
	body.Body.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(payload)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	brps, bp50, bp99 := runWrk(b, "http://"+ln.Addr().String()+"/primary")
	report(b, "rest_baseline_rps_64conn", brps, "req/s")
	report(b, "rest_baseline_p50_64conn", bp50, "ms")
	report(b, "rest_baseline_p99_64conn", bp99, "ms")
	report(b, "rest_primary_rps_vs_baseline", rps/brps, "ratio")
}

// runWrk loads url for 10 s with 64 connections: requests/s, p50 and p99
// latency (ms).
func runWrk(b *testing.B, url string) (rps, p50, p99 float64) {
	wrk := harness.LookPath(b, "wrk", "wrk")
	out, err := exec.Command(wrk, "-t2", "-c64", "-d10s", "--latency", url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	text := string(out)
	say("wrk against %s:\n%s", url, text)
	r := regexp.MustCompile(`Requests/sec:\s+([\d.]+)`).FindStringSubmatch(text)
	ms := func(pct string) (float64, bool) {
		m := regexp.MustCompile(`(?m)^\s*` + pct + `%\s+([\d.]+)(us|ms|s)\b`).FindStringSubmatch(text)
		if m == nil {
			return 0, false
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		switch m[2] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		return v, true
	}
	p50, ok50 := ms("50")
	p99, ok99 := ms("99")
	if r == nil || !ok50 || !ok99 {
		b.Fatalf("cannot parse wrk output:\n%s", text)
	}
	if strings.Contains(text, "Non-2xx") {
		b.Fatalf("wrk saw non-2xx answers from %s:\n%s", url, text)
	}
	rps, _ = strconv.ParseFloat(r[1], 64)
	return rps, p50, p99
}

// cpu is the CPU seconds a process has used.
func cpu(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // clock ticks, USER_HZ = 100
}

// BenchmarkIdle: a 3-node cluster with a PgBouncer per node, doing
// nothing, on its own etcd.
func BenchmarkIdle(b *testing.B) {
	c := newCluster(b, clusterOpts{ttl: 10, retry: 3, pgbouncer: true})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	benchIdle(b, c)
}

// benchIdle measures an idle agent's resident memory and CPU, and the
// etcd requests per second per agent, over 60 s: CPU is counted in 10 ms
// ticks, so 60 s resolve 0.01 CPU-s a minute (30 s resolved 0.02, which
// is a fifth of the goal).
func benchIdle(b *testing.B, c *cluster) {
	const window = 60 * time.Second
	status := func(pid int, field string) float64 {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		m := regexp.MustCompile(field + `:\s+(\d+) kB`).FindStringSubmatch(string(data))
		if m == nil {
			return 0
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v / 1024
	}
	var cpu0, wdCPU0 []float64
	var dogs []int
	for _, n := range c.nodes {
		cpu0 = append(cpu0, cpu(n.agent.PID()))
		// Its watchdog apart: a process of its own, which the agent's
		// figures do not count.
		d := watchdogOf(n.agent.PID())
		dogs = append(dogs, d)
		wdCPU0 = append(wdCPU0, cpu(d))
	}
	req0, ka0 := etcdRequests(c.etcd.Endpoint)
	time.Sleep(window) // the measurement window itself
	req1, ka1 := etcdRequests(c.etcd.Endpoint)
	var cpus, rsss, anons, files, wdCPUs, wdRSSs []float64
	for i, n := range c.nodes {
		pid := n.agent.PID()
		cpus = append(cpus, (cpu(pid)-cpu0[i])*float64(time.Minute)/float64(window))
		rsss = append(rsss, status(pid, "VmRSS"))
		anons = append(anons, status(pid, "RssAnon"))
		files = append(files, status(pid, "RssFile"))
		wdCPUs = append(wdCPUs, (cpu(dogs[i])-wdCPU0[i])*float64(time.Minute)/float64(window))
		wdRSSs = append(wdRSSs, status(dogs[i], "VmRSS"))
	}
	report(b, "idle_agent_rss", median(rsss), "MiB")
	// Apart: the heap and stacks, and the pages of the binary touched.
	report(b, "idle_agent_rss_anon", median(anons), "MiB")
	report(b, "idle_agent_rss_file", median(files), "MiB")
	report(b, "idle_agent_cpu", median(cpus), "cpu-s/min")
	// The leader's watchdog is armed, the replicas' are not: the largest.
	report(b, "idle_watchdog_rss", median(wdRSSs), "MiB")
	report(b, "idle_watchdog_cpu_max", slices.Max(wdCPUs), "cpu-s/min")
	report(b, "idle_watchdog_cpu", median(wdCPUs), "cpu-s/min")
	report(b, "idle_etcd_requests_per_agent", (req1-req0)/window.Seconds()/float64(len(c.nodes)), "req/s")
	report(b, "idle_lease_keepalives_per_agent", (ka1-ka0)/window.Seconds()/float64(len(c.nodes)), "req/s")
}

// watchdogOf is the PID of the watchdog agent pid started (0: none).
func watchdogOf(pid int) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		data, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(data), ')')
		f := strings.Fields(string(data[i+2:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(st), "cmdline"))
			if args := strings.Split(string(cmdline), "\x00"); len(args) > 1 && args[1] == "watchdog" {
				child, _ := strconv.Atoi(filepath.Base(filepath.Dir(st)))
				return child
			}
		}
	}
	return 0
}

// etcdRequests reads etcd's own counters: unary gRPC requests (reads,
// writes, transactions, grants) and lease keepalive messages, apart.
func etcdRequests(endpoint string) (unary, keepalives float64) {
	resp, err := httpc.Get("http://" + endpoint + "/metrics")
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		switch {
		case strings.HasPrefix(line, "grpc_server_started_total{") && strings.Contains(line, `grpc_type="unary"`):
			unary += v
		case strings.HasPrefix(line, "grpc_server_msg_received_total{") && strings.Contains(line, `grpc_method="LeaseKeepAlive"`):
			keepalives += v
		}
	}
	return unary, keepalives
}
