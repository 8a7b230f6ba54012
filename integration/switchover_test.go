//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// post sends a JSON body to path on n and returns the status and body.
func (n *node) post(method, path, body string) (int, string) {
	req, err := http.NewRequest(method, n.api(path), strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Timeout: 90 * time.Second, Transport: n.c.hc.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// writer inserts one row every 10 ms on a direct connection to whoever
// answers 200 on /primary, reconnecting when needed, and records every
// acknowledged id and the longest time between two acknowledged writes.
type writer struct {
	c      *cluster
	mu     sync.Mutex
	acked  []int64
	last   time.Time
	maxGap time.Duration
	errs   int
	stop   chan struct{}
	done   chan struct{}
}

func startWriter(c *cluster, table string) *writer {
	w := &writer{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(table)
	return w
}

func (w *writer) run(table string) {
	defer close(w.done)
	var conn *pgx.Conn
	var id int64
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		select {
		case <-w.stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if conn == nil {
			for _, n := range w.c.nodes {
				if n.probe("/primary") == 200 {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					cn, err := n.connect(ctx)
					cancel()
					if err == nil {
						conn = cn
					}
					break
				}
			}
			if conn == nil {
				continue
			}
		}
		id++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := conn.Exec(ctx, "INSERT INTO "+table+" VALUES ($1)", id)
		cancel()
		now := time.Now()
		w.mu.Lock()
		if err != nil {
			w.errs++
			conn.Close(context.Background())
			conn = nil
		} else {
			w.acked = append(w.acked, id)
			if !w.last.IsZero() && now.Sub(w.last) > w.maxGap {
				w.maxGap = now.Sub(w.last)
			}
			w.last = now
		}
		w.mu.Unlock()
	}
}

// count is how many rows have been acknowledged so far.
func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// landed waits until the writer has had n more rows acknowledged than it
// had when called: it writes on whatever is primary now.
func (w *writer) landed(t testing.TB, n int) {
	t.Helper()
	from := w.count()
	harness.WaitFor(t, 30*time.Second, "the writer's rows acknowledged on the new primary", func() (bool, error) {
		return w.count() >= from+n, fmt.Errorf("%d of %d more rows acknowledged", w.count()-from, n)
	})
}

func (w *writer) finish() ([]int64, time.Duration, int) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked, w.maxGap, w.errs
}

// missingRows counts the acknowledged ids absent from table on n.
func missingRows(t *testing.T, n *node, table string, acked []int64) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := n.connect(ctx)
	if err != nil {
		t.Fatalf("connect %s: %v", n.name, err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT id FROM "+table)
	if err != nil {
		t.Fatalf("read %s on %s: %v", table, n.name, err)
	}
	have := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	missing := 0
	for _, id := range acked {
		if !have[id] {
			missing++
		}
	}
	return missing
}

// TestSwitchoverUnderWritesLosesNothing: ten switchovers back and forth
// under a steady writer; every acknowledged row survives.
func TestSwitchoverUnderWritesLosesNothing(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 10, retry: 3})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(t, p.exec("CREATE TABLE sw (id bigint primary key)"))
	w := startWriter(c, "sw")
	var durations []time.Duration
	for i := range 10 {
		cur := c.primary(60 * time.Second)
		c.waitReplicas(60*time.Second, cur)
		var cand *node
		for _, n := range c.nodes {
			if n != cur {
				cand = n
				break
			}
		}
		// Ask a member that is neither leader nor candidate half the time:
		// any member's API accepts the request.
		via := cur
		if i%2 == 1 {
			for _, n := range c.nodes {
				if n != cur && n != cand {
					via = n
				}
			}
		}
		start := time.Now()
		code, body := via.post("POST", "/switchover", fmt.Sprintf(`{"leader":%q,"candidate":%q}`, cur.name, cand.name))
		took := time.Since(start)
		if code != 200 {
			t.Fatalf("switchover %d %s -> %s via %s: %d %s", i, cur.name, cand.name, via.name, code, body)
		}
		if cand.probe("/primary") != 200 {
			t.Fatalf("switchover %d answered 200 but %s is not primary", i, cand.name)
		}
		durations = append(durations, took)
		t.Logf("switchover %d: %s -> %s in %s", i, cur.name, cand.name, took.Round(time.Millisecond))
	}
	final := c.primary(30 * time.Second)
	w.landed(t, 3)
	acked, gap, errs := w.finish()
	if missing := missingRows(t, final, "sw", acked); missing != 0 {
		t.Fatalf("%d of %d acknowledged rows missing on the final primary %s", missing, len(acked), final.name)
	}
	t.Logf("10 switchovers: %d acknowledged rows, 0 lost; %d failed statements (reconnects); longest write gap %s; switchover times %v",
		len(acked), errs, gap.Round(time.Millisecond), durations)
	if len(acked) < 100 {
		t.Fatalf("only %d rows acknowledged: the writer did not really write", len(acked))
	}
}

// TestSwitchoverRefusals: impossible requests get 412 with the reason,
// malformed ones 400, and neither changes anything.
func TestSwitchoverRefusals(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 10, retry: 3, priorities: []int{100, 100, 0}})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	var zero, other *node
	for i, n := range c.nodes {
		if n == p {
			continue
		}
		if i == 2 {
			zero = n
		} else {
			other = n
		}
	}
	cases := []struct {
		body, want string
		code       int
	}{
		{`{"leader":"nosuch","candidate":"` + other.name + `"}`, "not the leader", 412},
		{`{"leader":"` + p.name + `","candidate":"nosuch"}`, "no member named nosuch", 412},
		{`{"candidate":"` + p.name + `"}`, "already the leader", 412},
		{`{"leader":"` + other.name + `"}`, "not the leader", 412},
		{`{"leader":`, "", 400},
		{`{"leader":"` + p.name + `","bogus":1}`, "", 400},
		{`{"leader":"` + p.name + `","scheduled_at":"tomorrow"}`, "", 400},
		{`[]`, "", 400},
	}
	if zero != nil && zero != p {
		cases = append(cases, struct {
			body, want string
			code       int
		}{`{"candidate":"` + zero.name + `"}`, "priority 0", 412})
	}
	for _, tc := range cases {
		code, body := p.post("POST", "/switchover", tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("POST /switchover %s = %d %s; want %d containing %q", tc.body, code, body, tc.code, tc.want)
		}
	}
	if got := c.primary(5 * time.Second); got != p {
		t.Fatalf("a refused request moved the primary to %s", got.name)
	}
	code, body := p.post("POST", "/failover", `{}`)
	if code != 400 {
		t.Errorf("POST /failover {} = %d %s; want 400", code, body)
	}
}

// TestScheduledSwitchover: a switchover scheduled a few seconds ahead is
// shown in /cluster, happens at its time; another one is cancelled.
func TestScheduledSwitchover(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 10, retry: 3})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	var cand *node
	for _, n := range c.nodes {
		if n != p {
			cand = n
			break
		}
	}
	at := time.Now().Add(4 * time.Second).Truncate(time.Second)
	code, body := p.post("POST", "/switchover", fmt.Sprintf(`{"leader":%q,"candidate":%q,"scheduled_at":%q}`, p.name, cand.name, at.Format(time.RFC3339)))
	if code != 202 {
		t.Fatalf("scheduled switchover: %d %s; want 202", code, body)
	}
	var cl struct {
		Scheduled *struct {
			At string `json:"at"`
		} `json:"scheduled_switchover"`
	}
	resp, err := httpc.Get(p.api("/cluster"))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&cl)
	resp.Body.Close()
	if cl.Scheduled == nil {
		t.Fatal("/cluster does not show the scheduled switchover")
	}
	if got := c.primary(2 * time.Second); got != p {
		t.Fatalf("switchover happened before its time")
	}
	harness.WaitFor(t, 40*time.Second, "scheduled switchover done", func() (bool, error) {
		return cand.probe("/primary") == 200, nil
	})
	if time.Now().Before(at) {
		t.Fatalf("switchover happened before %s", at)
	}
	// A second one, cancelled before its time, does not happen.
	c.waitReplicas(60*time.Second, cand)
	at = time.Now().Add(5 * time.Second)
	code, body = cand.post("POST", "/switchover", fmt.Sprintf(`{"candidate":%q,"scheduled_at":%q}`, p.name, at.Format(time.RFC3339)))
	if code != 202 {
		t.Fatalf("second scheduled switchover: %d %s", code, body)
	}
	code, body = p.post("DELETE", "/switchover", "")
	if code != 200 {
		t.Fatalf("cancel: %d %s", code, body)
	}
	deadline := time.Now().Add(time.Until(at) + 3*time.Second)
	for time.Now().Before(deadline) {
		if p.probe("/primary") == 200 {
			t.Fatal("cancelled switchover happened")
		}
		time.Sleep(250 * time.Millisecond) // polling interval of a bounded check
	}
}
