//go:build integration

package integration

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// delayProxy forwards TCP to an etcd, holding every chunk for delay in
// each direction: a slow link, over which requests still arrive.
type delayProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // ns
}

func startDelayProxy(t *testing.T, target string) *delayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &delayProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			go p.pipe(c, up)
			go p.pipe(up, c)
		}
	}()
	return p
}

func (p *delayProxy) pipe(from, to net.Conn) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 32*1024)
			n, err := from.Read(b)
			if n > 0 {
				ch <- chunk{b[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	defer to.Close()
	defer from.Close()
	for c := range ch {
		if wait := time.Until(c.at.Add(time.Duration(p.delay.Load()))); wait > 0 {
			time.Sleep(wait) // the delay being simulated, not a synchronization
		}
		if _, err := to.Write(c.b); err != nil {
			return
		}
	}
}

// TestSlowEtcdLinkLeaderLetsGo: every byte between the leader's agent and
// etcd is delayed 1.2 s each way, so each answer arrives after
// retry_timeout (2 s) while each request, renewals included, still gets
// there. The leader fences itself (its renewals look failed) and must
// then let go of the key its late renewals keep alive: another member
// is promoted within a few ttl. (Before: the fenced leader kept the key
// and the cluster had no primary for as long as the link stayed slow.)
// When the link is fast again the old leader rejoins as a replica.
func TestSlowEtcdLinkLeaderLetsGo(t *testing.T) {
	const ttl = 5
	c := newCluster(t, clusterOpts{ttl: ttl, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	var n *node
	for _, x := range c.nodes {
		if x != p {
			n = x
			break
		}
	}
	// n's agent talks to etcd through the proxy; then it leads.
	px := startDelayProxy(t, c.etcd.Endpoint)
	must(t, n.agent.Stop(syscall.SIGTERM, 30*time.Second))
	b, err := os.ReadFile(n.cfgPath)
	must(t, err)
	cfg := strings.Replace(string(b), "endpoints: ["+c.etcd.Endpoint+"]", "endpoints: ["+px.ln.Addr().String()+"]", 1)
	if cfg == string(b) {
		t.Fatal("etcd endpoint not found in the node's configuration")
	}
	must(t, os.WriteFile(n.cfgPath, []byte(cfg), 0o600))
	n.start()
	c.waitReplicas(90*time.Second, p)
	must(t, harness.Poll(90*time.Second, func() (bool, error) {
		code, body := p.post("POST", "/switchover", fmt.Sprintf(`{"leader":%q,"candidate":%q}`, p.name, n.name))
		return code == 200, fmt.Errorf("switchover: %d %s", code, body)
	}))
	if got := c.primary(30 * time.Second); got != n {
		t.Fatalf("%s is primary after the switchover to %s", got.name, n.name)
	}

	slow := time.Now()
	px.delay.Store(int64(1200 * time.Millisecond))
	np := c.primary(6*ttl*time.Second, n)
	t.Logf("link slowed: %s primary %.1fs later (ttl %d)", np.name, time.Since(slow).Seconds(), ttl)
	if n.probe("/primary") == 200 {
		t.Fatalf("%s still answers /primary beside %s", n.name, np.name)
	}
	px.delay.Store(0)
	harness.WaitFor(t, 120*time.Second, "the old leader rejoins as a replica", func() (bool, error) {
		return n.probe("/replica") == 200, fmt.Errorf("%s: %v", n.name, n.status()["reason"])
	})
}
