//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"gopkg.in/yaml.v3"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// getJSON decodes GET path on n into v and returns the status code.
func (n *node) getJSON(path string, v any) int {
	n.c.t.Helper()
	resp, err := n.c.hc.Get(n.api(path))
	if err != nil {
		n.c.t.Fatalf("GET %s on %s: %v", path, n.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, v); err != nil {
		n.c.t.Fatalf("GET %s on %s: %d, not JSON of the expected shape (%v): %s", path, n.name, resp.StatusCode, err, body)
	}
	return resp.StatusCode
}

// do sends method path to n and returns the status code.
func (n *node) do(method, path string) int {
	req, err := http.NewRequest(method, n.api(path), nil)
	if err != nil {
		n.c.t.Fatal(err)
	}
	resp, err := n.c.hc.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestComingFromPatroni runs what an operator coming from Patroni relies
// on against one live 3-node cluster: the REST answers (/, OPTIONS,
// /history, /cluster, /patroni), the patroni_* metrics, the commands
// patronictl has (topology, dsn, query, reload, pending and scheduled
// restarts, flush, failover in history, remove), a control-only file, and
// the dashboard and alert rules against the live /metrics. Each part is a
// subtest: one cluster start serves them all (the CI budget).
func TestComingFromPatroni(t *testing.T) {
	c := newCluster(t, clusterOpts{restExtra: "\n  metrics_compat: patroni\n  auth: {username: op, password: s3cret}", pgbouncer: true})
	p := c.primary(90 * time.Second)
	c.waitReplicas(90*time.Second, p)
	var replicas []*node
	for _, n := range c.nodes {
		if n != p {
			replicas = append(replicas, n)
		}
	}
	// A control-only file, as on an operator's laptop: no member name, no
	// database passwords; found through $PGWARDEN_CONFIG.
	control := filepath.Join(harness.Dir(t, "laptop"), "pgwarden.yaml")
	must(t, os.WriteFile(control, []byte(fmt.Sprintf("scope: %s\nnamespace: /pgwarden\netcd: {endpoints: [%s]}\nrest: {auth: {username: op, password: s3cret}}\n", c.opts.scope, c.etcd.Endpoint)), 0o600))

	t.Run("root and OPTIONS answer like /primary", func(t *testing.T) {
		for _, n := range c.nodes {
			want := n.probe("/primary")
			for _, m := range []string{http.MethodGet, http.MethodOptions, http.MethodHead} {
				if got := n.do(m, "/"); got != want {
					t.Errorf("%s %s / = %d; /primary = %d", n.name, m, got, want)
				}
			}
		}
		if got := replicas[0].do(http.MethodOptions, "/"); got != 503 {
			t.Errorf("OPTIONS / on replica %s = %d; want 503", replicas[0].name, got)
		}
		if got := p.do(http.MethodOptions, "/"); got != 200 {
			t.Errorf("OPTIONS / on the primary = %d; want 200", got)
		}
	})

	t.Run("/patroni fields", func(t *testing.T) {
		var st struct {
			State           string `json:"state"`
			DCSLastSeen     int64  `json:"dcs_last_seen"`
			PendingRestart  *bool  `json:"pending_restart"`
			PostmasterStart string `json:"postmaster_start_time"`
			Replication     []struct {
				ApplicationName string `json:"application_name"`
				ClientAddr      string `json:"client_addr"`
				State           string `json:"state"`
				SyncState       string `json:"sync_state"`
			} `json:"replication"`
			Patroni struct{ Version string } `json:"patroni"`
		}
		harness.WaitFor(t, 20*time.Second, "the primary lists both WAL senders", func() (bool, error) {
			p.getJSON("/patroni", &st)
			return len(st.Replication) == 2, fmt.Errorf("replication = %+v", st.Replication)
		})
		for i, r := range st.Replication {
			if r.ApplicationName != replicas[i].name || r.ClientAddr != "127.0.0.1" || r.State != "streaming" || r.SyncState != "async" {
				t.Errorf("replication[%d] = %+v; want %s streaming async from 127.0.0.1", i, r, replicas[i].name)
			}
		}
		if d := time.Since(time.Unix(st.DCSLastSeen, 0)); d < -2*time.Second || d > 30*time.Second {
			t.Errorf("dcs_last_seen %d is %s ago", st.DCSLastSeen, d)
		}
		if st.PendingRestart == nil || *st.PendingRestart {
			t.Errorf("pending_restart = %v; want false", st.PendingRestart)
		}
		if ts, err := time.Parse("2006-01-02 15:04:05.999999-07:00", st.PostmasterStart); err != nil || time.Since(ts) > 10*time.Minute {
			t.Errorf("postmaster_start_time %q: %v", st.PostmasterStart, err)
		}
		if !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(st.Patroni.Version) {
			t.Errorf("patroni.version %q is not a version", st.Patroni.Version)
		}
	})

	t.Run("/cluster in Patroni's shape", func(t *testing.T) {
		var cl struct {
			Members []struct {
				Name, Role, State, LSN string
				APIURL                 string  `json:"api_url"`
				ReceiveLag             *uint64 `json:"receive_lag"`
				ReplayLag              *uint64 `json:"replay_lag"`
			}
		}
		harness.WaitFor(t, 20*time.Second, "both replicas streaming in /cluster", func() (bool, error) {
			replicas[0].getJSON("/cluster", &cl)
			n := 0
			for _, m := range cl.Members {
				if m.State == "streaming" {
					n++
				}
			}
			return n == 2, fmt.Errorf("members %+v", cl.Members)
		})
		for _, m := range cl.Members {
			if !strings.HasPrefix(m.APIURL, "http://127.0.0.1:") || !strings.HasSuffix(m.APIURL, "/patroni") || m.LSN == "" {
				t.Errorf("%s: api_url %q, lsn %q", m.Name, m.APIURL, m.LSN)
			}
			if m.Role != "leader" && (m.ReceiveLag == nil || m.ReplayLag == nil) {
				t.Errorf("%s: receive_lag %v replay_lag %v", m.Name, m.ReceiveLag, m.ReplayLag)
			}
		}
		// etcd keeps what agents of every version read.
		out := pgwarden(t, "query", "-c", p.cfgPath, "--command", "SELECT 1 AS one")
		if !strings.Contains(out, "one") || !strings.Contains(out, "(1 rows)") {
			t.Errorf("query: %s", out)
		}
		raw := etcdGet(t, c, "/pgwarden/"+c.opts.scope+"/members/"+replicas[0].name)
		if !strings.Contains(raw, `"state":"running"`) || strings.Contains(raw, "/patroni") {
			t.Errorf("member record in etcd changed: %s", raw)
		}
	})

	t.Run("patroni metrics by name", func(t *testing.T) {
		body := metricsOf(t, p)
		for _, name := range []string{"patroni_primary", "patroni_replica", "patroni_xlog_location", "patroni_postgres_running",
			"patroni_cluster_unlocked", "patroni_postmaster_start_time", "patroni_sync_standby", "patroni_pending_restart",
			"patroni_postgres_timeline", "patroni_dcs_last_seen", "patroni_is_paused", "patroni_version"} {
			if !regexp.MustCompile(`(?m)^` + name + `\{name="` + p.name + `",scope="test"\} `).MatchString(body) {
				t.Errorf("/metrics of the primary lacks %s", name)
			}
		}
		if !strings.Contains(body, `patroni_primary{name="`+p.name+`",scope="test"} 1`) {
			t.Errorf("patroni_primary is not 1 on the primary")
		}
		if rb := metricsOf(t, replicas[0]); !strings.Contains(rb, `patroni_replica{name="`+replicas[0].name+`",scope="test"} 1`) {
			t.Errorf("patroni_replica is not 1 on a replica")
		}
	})

	t.Run("dashboard and alert rules query live metrics", func(t *testing.T) {
		promtool := harness.LookPath(t, "promtool", "prometheus")
		rules := filepath.Join(harness.ModuleRoot(), "examples", "prometheus-rules.yml")
		if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
			t.Fatalf("promtool check rules %s: %v\n%s", rules, err, out)
		}
		exprs := haRuleExprs(t, rules)
		exprs = append(exprs, dashboardExprs(t, filepath.Join(harness.ModuleRoot(), "examples", "grafana", "pgwarden.json"))...)
		var live strings.Builder
		for _, n := range c.nodes {
			live.WriteString(metricsOf(t, n))
		}
		names := map[string]bool{}
		for _, e := range exprs {
			for _, m := range metricName.FindAllString(e, -1) {
				names[m] = true
			}
		}
		if len(names) < 10 {
			t.Fatalf("only %d metric names found in the dashboard and rules: %v", len(names), names)
		}
		for name := range names {
			if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(live.String()) {
				t.Errorf("%s is queried by the dashboard or the rules but no member's /metrics has it", name)
			}
		}
	})

	t.Run("commands", func(t *testing.T) {
		t.Setenv("PGWARDEN_CONFIG", control)
		out := pgwarden(t, "topology")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 5 || !strings.HasPrefix(lines[2], p.name+" ") ||
			!strings.HasPrefix(lines[3], "+ "+replicas[0].name) || !strings.HasPrefix(lines[4], "+ "+replicas[1].name) {
			t.Errorf("topology:\n%s", out)
		}
		if out := pgwarden(t, "dsn"); strings.TrimSpace(out) != fmt.Sprintf("host=127.0.0.1 port=%d", p.pgPort) {
			t.Errorf("dsn of the leader: %q", out)
		}
		if out := pgwarden(t, "dsn", replicas[1].name); strings.TrimSpace(out) != fmt.Sprintf("host=127.0.0.1 port=%d", replicas[1].pgPort) {
			t.Errorf("dsn of %s: %q", replicas[1].name, out)
		}
		if out := pgwarden(t, "list"); !regexp.MustCompile(`Cluster: test \(system \d+\)`).MatchString(out) || !strings.Contains(out, "PENDING_RESTART") {
			t.Errorf("list lacks the system identifier or the pending-restart column:\n%s", out)
		}
		if out := pgwarden(t, "reload", "--force"); strings.Count(out, "reloaded") != 3 {
			t.Errorf("reload: %s", out)
		}
		for _, n := range c.nodes {
			if out, _ := n.log.Since(0); !regexp.MustCompile(`operator action: member=` + n.name + ` action=reload source="rest 127\.0\.0\.1:\d+ user op via cli `).MatchString(out) {
				t.Errorf("%s did not log the reload with its source", n.name)
			}
		}
		if out := pgwarden(t, "pause"); !strings.Contains(out, "paused") {
			t.Errorf("pause: %s", out)
		}
		if out := pgwarden(t, "pause"); !strings.Contains(out, "already paused") {
			t.Errorf("second pause: %s", out)
		}
		pgwarden(t, "resume")
		var logs strings.Builder
		for _, n := range c.nodes {
			out, _ := n.log.Since(0)
			logs.WriteString(out)
		}
		if !regexp.MustCompile(`operator action: member=node\d action="config change" source="rest 127\.0\.0\.1:\d+ user op via cli `).MatchString(logs.String()) {
			t.Errorf("no agent logged the pause (a config change) with its source")
		}
		// A restart-only parameter changed on every member: pending, shown
		// by list and the metric, until restart --pending. (The laptop's
		// file has no password: PGPASSWORD gives it.)
		t.Setenv("PGPASSWORD", "superpass")
		for _, n := range c.nodes {
			pgwarden(t, "query", n.name, "--command", "ALTER SYSTEM SET max_connections = 60")
			pgwarden(t, "query", n.name, "--command", "SELECT pg_reload_conf()")
		}
		harness.WaitFor(t, 30*time.Second, "pending restart on every member", func() (bool, error) {
			out := pgwarden(t, "list", "--format", "json")
			return strings.Count(out, `"pending_restart": true`) == 3, fmt.Errorf("list: %s", out)
		})
		if body := metricsOf(t, p); !strings.Contains(body, `patroni_pending_restart{name="`+p.name+`",scope="test"} 1`) {
			t.Errorf("patroni_pending_restart is not 1")
		}
		// Scheduled, shown, flushed.
		at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		if out := pgwarden(t, "restart", replicas[0].name, "--scheduled", at, "--force"); !strings.Contains(out, "restart scheduled for "+at) {
			t.Errorf("restart --scheduled: %s", out)
		}
		var st struct {
			Scheduled *struct{ Schedule string } `json:"scheduled_restart"`
		}
		if replicas[0].getJSON("/patroni", &st); st.Scheduled == nil || st.Scheduled.Schedule != at {
			t.Errorf("/patroni scheduled_restart = %+v; want %s", st.Scheduled, at)
		}
		if out := pgwarden(t, "flush", replicas[0].name, "restart", "--force"); !strings.Contains(out, "scheduled restart cancelled") {
			t.Errorf("flush restart: %s", out)
		}
		if out := pgwarden(t, "restart", "--pending", "--force"); strings.Count(out, ": restarted") != 3 {
			t.Errorf("restart --pending: %s", out)
		}
		harness.WaitFor(t, 60*time.Second, "no restart pending", func() (bool, error) {
			out := pgwarden(t, "list", "--format", "json")
			return strings.Count(out, `"pending_restart": false`) == 3 && strings.Count(out, `"streaming"`) == 2, fmt.Errorf("list: %s", out)
		})
		if v, err := p.queryInt("SELECT current_setting('max_connections')::int"); err != nil || v != 60 {
			t.Errorf("max_connections after the restart = %d, %v", v, err)
		}
		if out := pgwarden(t, "restart", "--pending", "--force"); strings.Count(out, "no restart pending: skipped") != 3 {
			t.Errorf("restart --pending with nothing pending: %s", out)
		}
		if _, errOut, code := runCLI(t, "", "flush", "restart", "--bogus"); code != 2 || strings.Count(errOut, "\n") != 1 {
			t.Errorf("bad flag: exit %d %q", code, errOut)
		}
	})

	t.Run("history as Patroni's arrays; a manual failover is recorded as failover", func(t *testing.T) {
		c.waitReplicas(90*time.Second, p)
		pgwarden(t, "switchover", "-c", p.cfgPath, "--candidate", replicas[0].name, "--force")
		p2 := c.primary(60 * time.Second)
		c.waitReplicas(90*time.Second, p2)
		pgwarden(t, "failover", "-c", p.cfgPath, "--candidate", p.name, "--force")
		p3 := c.primary(60 * time.Second)
		if p2 != replicas[0] || p3 != p {
			t.Fatalf("leaders %s then %s; want %s then %s", p2.name, p3.name, replicas[0].name, p.name)
		}
		var h [][]any
		if code := replicas[1].getJSON("/history", &h); code != 200 || len(h) != 2 {
			t.Fatalf("/history = %d %v", code, h)
		}
		for i, want := range []struct {
			tl     float64
			reason string
			leader string
		}{{1, "switchover", p2.name}, {2, "failover", p3.name}} {
			e := h[i]
			if len(e) != 5 || e[0] != want.tl || e[2] != want.reason || e[4] != want.leader {
				t.Errorf("history[%d] = %v; want [%v, lsn, %s, time, %s]", i, e, want.tl, want.reason, want.leader)
			}
			if lsn, ok := e[1].(float64); !ok || lsn <= 0 {
				t.Errorf("history[%d] lsn = %v", i, e[1])
			}
			if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(e[3])); err != nil {
				t.Errorf("history[%d] time: %v", i, err)
			}
		}
		// The failover's source is in the log of the agent that promoted.
		if out, _ := p3.log.Since(0); !regexp.MustCompile(`promoted: .*action=failover source="rest 127\.0\.0\.1:\d+ user op via cli `).MatchString(out) {
			t.Errorf("the promoted agent did not log the failover's source")
		}
		c.waitReplicas(90*time.Second, p3)
	})

	t.Run("status page in Chromium", func(t *testing.T) { statusPage(t, c) })

	t.Run("remove wipes one cluster's keys after the typed scope", func(t *testing.T) {
		// A second, dead cluster's keys beside the live one, in the same etcd.
		etcdPut(t, c, "/pgwarden/gone/initialize", "123")
		etcdPut(t, c, "/pgwarden/gone/config", `{"ttl":10}`)
		gone := filepath.Join(harness.Dir(t, "gone"), "gone.yaml")
		must(t, os.WriteFile(gone, []byte(fmt.Sprintf("scope: gone\netcd: {endpoints: [%s]}\n", c.etcd.Endpoint)), 0o600))
		if out, errOut, code := runCLI(t, "test\n", "remove", "-c", gone); code != 1 || !strings.Contains(errOut, "nothing removed") {
			t.Fatalf("remove with the wrong scope typed: exit %d %s %s", code, out, errOut)
		}
		if etcdGet(t, c, "/pgwarden/gone/config") == "" {
			t.Fatal("a refused remove deleted keys")
		}
		if out, errOut, code := runCLI(t, "gone\n", "remove", "-c", gone); code != 0 || !strings.Contains(out, "removed 2 keys under /pgwarden/gone/") {
			t.Fatalf("remove: exit %d %s %s", code, out, errOut)
		}
		if etcdGet(t, c, "/pgwarden/gone/config") != "" || etcdGet(t, c, "/pgwarden/test/leader") == "" {
			t.Fatal("remove did not delete exactly the named cluster's keys")
		}
	})
}

// statusPage loads /ui of a replica in headless Chromium, checks the
// members it shows against /cluster, switches over from the page (which
// asks for the API's credentials) and sees the new leader appear without
// a reload. Screenshots go to bin/screenshots.
func statusPage(t *testing.T, c *cluster) {
	chromium := harness.LookPath(t, "chromium", "chromium")
	leader := c.primary(60 * time.Second)
	c.waitReplicas(90*time.Second, leader)
	var page, cand *node
	for _, n := range c.nodes {
		switch {
		case n == leader:
		case page == nil:
			page = n
		default:
			cand = n
		}
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
		// Chromium's sandbox needs privileges a container (or root) lacks.
		chromedp.NoSandbox, chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(harness.Dir(t, "chromium")), chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	shot := func(name string) {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(harness.Screenshots(), name)
		must(t, os.WriteFile(path, png, 0o644))
		t.Logf("screenshot: %s", path)
	}
	leaderRow := func(n *node) chromedp.CSS { return chromedp.CSS(`#member-` + n.name + `[data-role="leader"]`) }
	if err := chromedp.Do(ctx, chromedp.Navigate(page.api("/ui")), chromedp.WaitVisible(leaderRow(leader))); err != nil {
		t.Fatalf("load %s: %v", page.api("/ui"), err)
	}
	// The page shows the members /cluster lists, with their roles.
	var cl struct{ Members []struct{ Name, Role string } }
	page.getJSON("/cluster", &cl)
	var want []string
	for _, m := range cl.Members {
		want = append(want, m.Name+":"+m.Role)
	}
	harness.WaitFor(t, 10*time.Second, "the page's members match /cluster", func() (bool, error) {
		shown, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#members tr")].map(r => r.id.slice(7) + ":" + r.dataset.role)`))
		if err != nil {
			return false, err
		}
		return strings.Join(shown, ",") == strings.Join(want, ","), fmt.Errorf("page shows %v, /cluster %v", shown, want)
	})
	shot("ui-before-switchover.png")
	// Switch over from the page: the API asks for its credentials, the
	// page asks the operator, and the new leader shows up live.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.noReload = 42`)); err != nil {
		t.Fatal(err)
	}
	err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("candidate"), cand.name),
		chromedp.Click(chromedp.ID("switchover")),
		chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.SendKeys(chromedp.ID("username"), "op"),
		chromedp.SendKeys(chromedp.ID("password"), "s3cret"),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(leaderRow(cand)),
	)
	if err != nil {
		msg, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("message")))
		shot("ui-switchover-failed.png")
		t.Fatalf("switchover from the page: %v (page says %q)", err, msg)
	}
	kept, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.noReload || 0`))
	must(t, err)
	leaderText, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("leader")))
	must(t, err)
	if kept != 42 || leaderText != cand.name {
		t.Errorf("after the switchover: marker %d (the page reloaded?), leader shown %q; want %s", kept, leaderText, cand.name)
	}
	if got := c.primary(30 * time.Second); got != cand {
		t.Errorf("primary after the page's switchover is %s; want %s", got.name, cand.name)
	}
	// Pause from the page, shown as a banner; then resume.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("pause")), chromedp.WaitVisible(chromedp.CSS(".banner.paused"))); err != nil {
		t.Fatalf("pause from the page: %v", err)
	}
	if banner, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(".banner.paused"))); err != nil || !strings.Contains(banner, "Paused") {
		t.Errorf("pause banner %q, %v", banner, err)
	}
	shot("ui-after-switchover-paused.png")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("pause")), chromedp.WaitNotPresent(chromedp.CSS(".banner.paused"))))
}

// metricName finds the series names in PromQL: every series pgwarden
// exposes starts with one of these prefixes.
var metricName = regexp.MustCompile(`\b(pgwarden|patroni|go|process)_[a-zA-Z0-9_]+\b`)

// haRuleExprs are the expressions of the pgwarden-ha group (the backup
// group beside it is checked by the backup tests, on a cluster with
// backups configured).
func haRuleExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	var f struct {
		Groups []struct {
			Name  string
			Rules []struct{ Alert, Expr string }
		}
	}
	must(t, yaml.Unmarshal(b, &f))
	var out []string
	for _, g := range f.Groups {
		if g.Name != "pgwarden-ha" {
			continue
		}
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	if len(out) < 6 {
		t.Fatalf("%s: group pgwarden-ha has %d rules", path, len(out))
	}
	return out
}

// dashboardExprs are the queries of every panel and template variable.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct{ Definition string }
		}
	}
	must(t, json.Unmarshal(b, &d))
	var out []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		out = append(out, v.Definition)
	}
	return out
}

// metricsOf is n's /metrics text.
func metricsOf(t *testing.T, n *node) string {
	t.Helper()
	resp, err := n.c.hc.Get(n.api("/metrics"))
	if err != nil {
		t.Fatalf("GET /metrics on %s: %v", n.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// withEtcd calls f with a client of the cluster's etcd and a 5 s context.
func withEtcd(t *testing.T, c *cluster, f func(ctx context.Context, cli *clientv3.Client) error) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.etcd.Endpoint}, DialTimeout: 2 * time.Second})
	must(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	must(t, f(ctx, cli))
}

// etcdPut writes one key straight to etcd.
func etcdPut(t *testing.T, c *cluster, key, value string) {
	t.Helper()
	withEtcd(t, c, func(ctx context.Context, cli *clientv3.Client) error {
		_, err := cli.Put(ctx, key, value)
		return err
	})
}

// etcdGet reads one key straight from etcd ("" when absent).
func etcdGet(t *testing.T, c *cluster, key string) string {
	t.Helper()
	var v string
	withEtcd(t, c, func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, key)
		if err == nil && len(resp.Kvs) > 0 {
			v = string(resp.Kvs[0].Value)
		}
		return err
	})
	return v
}
