package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/internal/freeport"
	"github.com/pgwarden/pgwarden/internal/pgbouncerini"
	"github.com/pgwarden/pgwarden/internal/proc"
	"github.com/pgwarden/pgwarden/postgres/pgproc"
)

// demoUser runs PostgreSQL when the demo is started as root.
const demoUser = "pgwarden"

type demoNode struct {
	name                         string
	pgPort, apiPort, bouncerPort int
	dir, cfgPath                 string
	agent, bouncer               *proc.Proc
}

// cmdDemo runs a whole cluster on loopback: an embedded etcd, N PostgreSQL
// nodes with their agents and, when installed, a PgBouncer per node.
func cmdDemo(e *env, args []string) error {
	fs := flags(e, "demo", "[--nodes 3] [--dir DIR] [--keep]")
	nodes := fs.Int("nodes", 3, "number of nodes (1-9)")
	dir := fs.String("dir", "", "where to put everything (default: a new directory under the system temp dir)")
	keep := fs.Bool("keep", false, "keep the directory when stopping")
	binDir := fs.String("bin-dir", "/usr/lib/postgresql/15/bin", "PostgreSQL 15 programs")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *nodes < 1 || *nodes > 9 {
		return fmt.Errorf("--nodes %d: must be 1-9: %w", *nodes, errUsage)
	}
	if _, err := os.Stat(filepath.Join(*binDir, "postgres")); err != nil {
		return fmt.Errorf("PostgreSQL 15 not found in %s: install it with `apt-get install postgresql-15` (or pass --bin-dir)", *binDir)
	}
	bouncer, _ := exec.LookPath("pgbouncer")
	if bouncer == "" {
		if _, err := os.Stat("/usr/sbin/pgbouncer"); err == nil {
			bouncer = "/usr/sbin/pgbouncer"
		}
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		c, err := demoCredential(e)
		if err != nil {
			return err
		}
		cred = c
	}
	// A directory the demo makes (by default, or a --dir that did not
	// exist) is removed whole at the end; an existing --dir keeps what was
	// in it before.
	_, statErr := os.Stat(*dir)
	created := *dir == "" || os.IsNotExist(statErr)
	if *dir == "" {
		d, err := os.MkdirTemp("", "pgwarden-demo-")
		if err != nil {
			return err
		}
		*dir = d
	} else if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("--dir %s: %w", *dir, err)
	}
	if err := os.Chmod(*dir, 0o755); err != nil {
		return err
	}
	d := &demo{e: e, dir: *dir, cred: cred, binDir: *binDir, bouncer: bouncer}
	defer func() {
		d.stop()
		if *keep {
			fmt.Fprintf(e.stdout, "kept %s\n", *dir)
		} else if created {
			os.RemoveAll(*dir)
		} else {
			for _, n := range d.nodes {
				os.RemoveAll(n.dir)
			}
			os.RemoveAll(filepath.Join(*dir, "etcd"))
			os.Remove(filepath.Join(*dir, "pgwarden"))
		}
	}()
	if err := d.start(*nodes); err != nil {
		return err
	}
	return d.watch()
}

type demo struct {
	e       *env
	dir     string
	cred    *syscall.Credential
	binDir  string
	bouncer string
	bin     string
	etcd    *proc.Proc
	etcdEP  string
	// etcdFrom says which etcd runs: embedded, or found on PATH.
	etcdFrom string
	nodes    []*demoNode
}

// demoCredential finds or creates the unprivileged user PostgreSQL runs as.
func demoCredential(e *env) (*syscall.Credential, error) {
	u, err := user.Lookup(demoUser)
	if err != nil {
		out, cerr := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", demoUser).CombinedOutput()
		if cerr != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL needs an unprivileged user: useradd %s: %v: %s", demoUser, cerr, strings.TrimSpace(string(out)))
		}
		fmt.Fprintf(e.stdout, "running as root: created the unprivileged user %q to run PostgreSQL and the agents\n", demoUser)
		if u, err = user.Lookup(demoUser); err != nil {
			return nil, err
		}
	} else {
		fmt.Fprintf(e.stdout, "running as root: PostgreSQL and the agents run as the unprivileged user %q\n", demoUser)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (d *demo) chown(path string) error {
	if d.cred == nil {
		return nil
	}
	return os.Chown(path, int(d.cred.Uid), int(d.cred.Gid))
}

func (d *demo) start(n int) error {
	e := d.e
	fmt.Fprintf(e.stdout, "starting a %d-node pgwarden cluster in %s\n", n, d.dir)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// A copy the unprivileged user can run, wherever this binary lives.
	d.bin = filepath.Join(d.dir, "pgwarden")
	if err := copyExec(self, d.bin); err != nil {
		return fmt.Errorf("copy pgwarden binary: %w", err)
	}
	if err := d.startEtcd(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "  etcd (%s)  %s\n", d.etcdFrom, d.etcdEP)
	for i := range n {
		ports, err := pickPorts(3)
		if err != nil {
			return err
		}
		nd := &demoNode{name: fmt.Sprintf("node%d", i+1), pgPort: ports[0], apiPort: ports[1]}
		if d.bouncer != "" {
			nd.bouncerPort = ports[2]
		}
		nd.dir = filepath.Join(d.dir, nd.name)
		if err := os.MkdirAll(nd.dir, 0o700); err != nil {
			return err
		}
		if err := d.chown(nd.dir); err != nil {
			return err
		}
		if err := d.writeNode(nd); err != nil {
			return err
		}
		d.nodes = append(d.nodes, nd)
	}
	for _, nd := range d.nodes {
		if d.bouncer != "" {
			if err := d.startBouncer(nd); err != nil {
				return err
			}
		}
		if err := d.startAgent(nd); err != nil {
			return err
		}
	}
	return d.waitReady()
}

func copyExec(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// pickPorts returns n free loopback ports below the ephemeral range.
func pickPorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := freeport.Pick()
		if err != nil {
			return nil, fmt.Errorf("pick a port for the demo: %w", err)
		}
		ports[i] = p
	}
	return ports, nil
}

func (d *demo) startEtcd() error {
	bin, from, err := demoEtcd(d.dir)
	if err != nil {
		return err
	}
	d.etcdFrom = from
	ports, err := pickPorts(2)
	if err != nil {
		return err
	}
	cu := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	pu := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	logf, err := os.OpenFile(filepath.Join(d.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--name", "demo", "--data-dir", filepath.Join(d.dir, "etcd"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		"--initial-cluster", "demo="+pu)
	// Its own process group: the terminal's Ctrl-C reaches the demo, which
	// stops etcd last, after the agents.
	cmd.Dir, cmd.Stdout, cmd.Stderr = d.dir, logf, logf
	p, err := proc.Start("etcd", cmd, nil)
	if err != nil {
		return fmt.Errorf("the demo's etcd %s: %w", bin, err)
	}
	d.etcd = p
	deadline := time.Now().Add(30 * time.Second)
	for probe(cu+"/health") != http.StatusOK {
		select {
		case <-p.Done():
			d.etcd = nil
			return fmt.Errorf("the demo's etcd exited at start: see %s", filepath.Join(d.dir, "etcd.log"))
		case <-time.After(100 * time.Millisecond): // polling its health endpoint
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the demo's etcd not ready within 30s: see %s", filepath.Join(d.dir, "etcd.log"))
		}
	}
	d.etcdEP = strings.TrimPrefix(cu, "http://")
	return nil
}

func (d *demo) writeNode(nd *demoNode) error {
	pool := ""
	if d.bouncer != "" {
		pool = fmt.Sprintf(`pooler:
  pgbouncer:
    admin_dsn: "host=127.0.0.1 port=%d dbname=pgbouncer user=pgbouncer connect_timeout=2"
    databases_file: %s
    databases:
      app: {dbname: postgres, target: primary}
      app_local: {dbname: postgres, target: local}
`, nd.bouncerPort, filepath.Join(nd.dir, "pgbouncer-databases.ini"))
	}
	cfg := fmt.Sprintf(`# pgwarden demo node, generated by pgwarden demo
name: %s
scope: demo
etcd:
  endpoints: [%s]
rest:
  listen: 127.0.0.1:%d
postgres:
  bin_dir: %s
  data_dir: %s
  listen: 127.0.0.1:%d
  superuser: {username: postgres, password: demo}
  replication: {username: replicator, password: demo}
  parameters:
    unix_socket_directories: %s
    shared_buffers: 32MB
%s`, nd.name, d.etcdEP, nd.apiPort, d.binDir, filepath.Join(nd.dir, "data"), nd.pgPort, nd.dir, pool)
	nd.cfgPath = filepath.Join(nd.dir, "pgwarden.yaml")
	if err := os.WriteFile(nd.cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	if _, err := config.Load(nd.cfgPath); err != nil {
		return fmt.Errorf("demo config for %s: %w", nd.name, err)
	}
	return d.chown(nd.cfgPath)
}

func (d *demo) startBouncer(nd *demoNode) error {
	dbFile := filepath.Join(nd.dir, "pgbouncer-databases.ini")
	users := filepath.Join(nd.dir, "pgbouncer-users.txt")
	ini := filepath.Join(nd.dir, "pgbouncer.ini")
	files := map[string]string{
		dbFile: "[databases]\n",
		users:  `"postgres" "demo"` + "\n" + `"pgbouncer" ""` + "\n",
		ini: pgbouncerini.File{ListenPort: nd.bouncerPort, SocketDir: nd.dir, AuthType: "trust", AuthFile: users,
			LogFile: filepath.Join(nd.dir, "pgbouncer.log"), DatabasesFile: dbFile}.Render(),
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			return err
		}
		if err := d.chown(p); err != nil {
			return err
		}
	}
	p, err := proc.Start("pgbouncer "+nd.name, d.command(d.bouncer, ini), nil)
	if err != nil {
		return err
	}
	nd.bouncer = p
	return nil
}

func (d *demo) command(prog string, args ...string) *exec.Cmd {
	cmd := exec.Command(prog, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: d.cred} // proc.Start adds its own group
	cmd.Dir = d.dir
	return cmd
}

func (d *demo) startAgent(nd *demoNode) error {
	logf, err := os.OpenFile(filepath.Join(nd.dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := d.command(d.bin, "agent", "-c", nd.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := proc.Start("agent "+nd.name, cmd, nil)
	logf.Close()
	if err != nil {
		return err
	}
	nd.agent = p
	return nil
}

func probe(url string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// failingAction is the action that keeps failing on the agent at base, as
// its /patroni says ("" when none or unknown).
func failingAction(base string) string {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(base + "/patroni")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var st struct {
		LastError *struct {
			Action   string `json:"action"`
			Error    string `json:"error"`
			Failures int    `json:"failures"`
		} `json:"last_error"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st) != nil || st.LastError == nil {
		return ""
	}
	return fmt.Sprintf("%s failed %d times: %s", st.LastError.Action, st.LastError.Failures, st.LastError.Error)
}

// waitReady shows progress until one primary and streaming replicas.
func (d *demo) waitReady() error {
	e := d.e
	deadline := time.Now().Add(3 * time.Minute)
	last := ""
	for {
		var states []string
		primaries, replicas := 0, 0
		for _, nd := range d.nodes {
			base := fmt.Sprintf("http://127.0.0.1:%d", nd.apiPort)
			switch {
			case probe(base+"/primary") == 200:
				primaries++
				states = append(states, nd.name+": primary")
			case probe(base+"/replica") == 200:
				replicas++
				states = append(states, nd.name+": streaming replica")
			default:
				state := nd.name + ": starting"
				if f := failingAction(base); f != "" {
					// A newcomer sees why at once, not only in the log.
					state += " (" + f + ")"
				}
				states = append(states, state)
			}
			if nd.agent.Exited() {
				return fmt.Errorf("agent %s exited: see %s", nd.name, filepath.Join(nd.dir, "agent.log"))
			}
		}
		line := strings.Join(states, ", ")
		if line != last {
			fmt.Fprintf(e.stdout, "  %s\n", line)
			last = line
		}
		if primaries == 1 && replicas == len(d.nodes)-1 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ready within 3 minutes (%s): see the agent.log files in %s", line, d.dir)
		}
		select {
		case <-d.e.ctx.Done():
			return errors.New("interrupted")
		case <-time.After(250 * time.Millisecond):
		}
	}
	d.describe()
	return nil
}

func (d *demo) describe() {
	w := d.e.stdout
	fmt.Fprintln(w, "\nrunning:")
	for _, nd := range d.nodes {
		fmt.Fprintf(w, "  %s  REST http://127.0.0.1:%d  PostgreSQL 127.0.0.1:%d", nd.name, nd.apiPort, nd.pgPort)
		if nd.bouncerPort != 0 {
			fmt.Fprintf(w, "  PgBouncer 127.0.0.1:%d (db app follows the leader)", nd.bouncerPort)
		}
		fmt.Fprintln(w)
	}
	n1 := d.nodes[0]
	fmt.Fprintf(w, `
things to try (in another terminal):
  %[1]s list -c %[2]s
  curl -s http://127.0.0.1:%[3]d/cluster
  curl -XPOST http://127.0.0.1:%[3]d/switchover -d '{"candidate":"%[4]s"}'
  kill -9 the primary's postmaster and watch a replica take over within the ttl
  psql "host=127.0.0.1 port=%[5]d user=postgres password=demo dbname=postgres"
logs: %[6]s/nodeN/agent.log   stop: Ctrl-C

ready: %[7]d nodes, etcd %[8]s
`, d.bin, n1.cfgPath, n1.apiPort, d.nodes[len(d.nodes)-1].name, n1.pgPort, d.dir, len(d.nodes), d.etcdEP)
}

// watch shows a live member list until interrupted.
func (d *demo) watch() error {
	cfg, err := config.Load(d.nodes[0].cfgPath)
	if err != nil {
		return err
	}
	tty := isTerminal(d.e.stdout)
	last := ""
	for {
		ctx, cancel := context.WithTimeout(d.e.ctx, 5*time.Second)
		var b strings.Builder
		if s, err := openCluster(ctx, cfg); err == nil {
			if c, err := s.Cluster(ctx); err == nil {
				_ = writeListTable(&b, buildList(c, cfg.Scope, dynamicOf(c).Pause))
			}
			s.Close(context.Background())
		}
		cancel()
		if out := maskVolatile(b.String()); out != last && b.Len() > 0 {
			if tty {
				fmt.Fprint(d.e.stdout, "\033[H\033[2J")
				d.describe()
			}
			fmt.Fprint(d.e.stdout, b.String())
			last = out
		}
		select {
		case <-d.e.ctx.Done():
			fmt.Fprintln(d.e.stdout, "\nstopping the demo cluster")
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

// maskVolatile drops the lag column so the live view redraws on real changes.
func maskVolatile(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) > 5 {
			f[5] = ""
		}
		out = append(out, strings.Join(f, " "))
	}
	return strings.Join(out, "\n")
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// stop ends the agents (SIGTERM: the leader hands over and stops cleanly),
// the PgBouncers and etcd, waiting for each by PID.
func (d *demo) stop() {
	for _, nd := range d.nodes {
		if nd.agent != nil {
			_ = nd.agent.Signal(syscall.SIGTERM)
		}
	}
	for _, nd := range d.nodes {
		waitOrKill(nd.agent, 60*time.Second)
		if nd.bouncer != nil {
			_ = nd.bouncer.Signal(syscall.SIGTERM)
			waitOrKill(nd.bouncer, 10*time.Second)
		}
		// A postmaster left behind (agent killed) is stopped by its pid file.
		stopPostmaster(filepath.Join(nd.dir, "data"))
	}
	if d.etcd != nil {
		_ = d.etcd.Signal(syscall.SIGTERM)
		waitOrKill(d.etcd, 30*time.Second)
	}
}

// waitOrKill waits for p to exit after its SIGTERM, and kills its whole
// process group when it does not within timeout.
func waitOrKill(p *proc.Proc, timeout time.Duration) {
	if p == nil {
		return
	}
	if !p.Wait(timeout) {
		p.KillGroup()
		p.Wait(10 * time.Second)
	}
}

// stopPostmaster stops a postmaster left behind (its agent killed), by
// its pid file, and waits (bounded) for it to go.
func stopPostmaster(dataDir string) {
	pf, err := pgproc.ReadPIDFile(dataDir)
	if err != nil || pf.PID <= 1 {
		return
	}
	if syscall.Kill(pf.PID, syscall.SIGQUIT) != nil {
		return
	}
	for i := 0; i < 100 && pgproc.Alive(pf.PID); i++ {
		time.Sleep(100 * time.Millisecond) // bounded wait for the postmaster to exit
	}
}
