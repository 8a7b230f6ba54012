package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/dcs/etcd"
	"github.com/pgwarden/pgwarden/hooks"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/postgres/pgproc"
	"github.com/pgwarden/pgwarden/rest"
	"github.com/pgwarden/pgwarden/watchdog"
)

// cmdAgent runs the agent for one node until SIGINT or SIGTERM.
func cmdAgent(e *env, args []string) error {
	fs := flags(e, "agent", "-c FILE")
	path := fs.String("c", "", "node configuration file")
	if err := parse(fs, args); err != nil {
		return err
	}
	sealEnviron(environHasSecret())
	// SIGHUP is caught from the start: its default ends the process, and
	// one sent while the agent starts is applied once it runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// Everything is checked before anything is touched.
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		return errors.New("refusing to run as root: PostgreSQL will not run as root; start the agent as the postgres OS user (e.g. sudo -u postgres pgwarden agent -c FILE)")
	}
	oneProc()
	log := newLogger(cfg.Log, e.stderr).With("member", cfg.Name)
	notify := sdNotifier(takeNotifySocket())
	w, err := wire(e.ctx, cfg, *path, log)
	if err != nil {
		return err
	}
	// The watchdog has its copy (for the hand-back); nothing started from
	// now on (PostgreSQL, hooks, pgBackRest) inherits the secrets.
	config.HideSecretEnv()
	w.notify = notify
	return w.run(e.ctx, &reloader{path: *path, w: w, cfg: cfg}, hup)
}

// wired is one node's agent with its side effects and REST server.
type wired struct {
	cfg   *config.Config
	log   hclog.Logger
	agent *agent.Agent
	// starting is the agent as the API sees it: with why it is still
	// starting before its first loop.
	starting *startingAgent
	store    *etcd.Store
	server   *rest.Server
	// notify speaks to systemd (Type=notify).
	notify func(string) error
	wd     *watchdog.Client
	hooks  *hooks.Runner
	backup *backup.Manager
	// peers and pooler (nil: none) take what SIGHUP changes.
	peers  *rest.PeerClient
	pooler *pooler.PgBouncer
}

func wire(ctx context.Context, cfg *config.Config, path string, log hclog.Logger) (*wired, error) {
	w := &wired{cfg: cfg, log: log}
	peerTLS, err := rest.PeerTLS(cfg.REST.TLS)
	if err != nil {
		return nil, err
	}
	warnUnverifiable(log, peerTLS)
	store, err := openStore(ctx, cfg, log.Named("dcs"))
	if err != nil {
		return nil, err
	}
	// A CA, client certificate or password etcd refuses is a mistake in
	// the file: refused now, before the pooler, the watchdog or PostgreSQL
	// is touched (an etcd that is down is not: the agent starts).
	if err := store.CheckAccess(ctx, true); err != nil {
		store.Close(context.Background())
		return nil, err
	}
	pg := newPostgres(cfg, log.Named("postgres"))
	peers := rest.NewPeerClient(cfg.Name, peerTimeout(cfg), peerTLS, log.Named("peers"))
	peers.Auth = cfg.REST.Auth
	w.peers = peers
	deps := agent.Deps{
		DCS:      store,
		Postgres: pg,
		Probe:    pg,
		Peers:    peers,
		Failsafe: peers,
	}
	if pb := cfg.Pooler.PgBouncer; pb != nil {
		p, err := pooler.New(*pb, poolerLocal(cfg), cfg.Postgres.TLS, log.Named("pooler"))
		if err != nil {
			return nil, fmt.Errorf("pooler: %w", err)
		}
		// A crash of an earlier agent must not leave a database paused.
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := p.ResumeAll(rctx); err != nil {
			log.Warn("cannot resume pgbouncer databases at start (will retry)", "error", err)
		}
		cancel()
		deps.Pooler, w.pooler = p, p
	}
	// Made without a command too: SIGHUP may give it one.
	h, err := hooks.New(cfg.Hooks.EventCommand, cfg.Hooks.Events, cfg.Name, cfg.Hooks.Timeout.D(), log.Named("hooks"))
	if err != nil {
		return nil, err
	}
	w.hooks = h
	deps.Hooks = h
	if cfg.Watchdog.Mode != "off" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("watchdog: find own binary: %w", err)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("watchdog: configuration path: %w", err)
		}
		wd, err := watchdog.Start(ctx, self, cfg.Postgres.DataDir, cfg.Name, abs, store.LeaseID, log.Named("watchdog"))
		if err != nil {
			if cfg.Watchdog.Mode == "required" {
				return nil, fmt.Errorf("watchdog required but not started: %w", err)
			}
			// The agent runs, but says at every loop that it is unguarded
			// and will not become primary.
			log.Error("WATCHDOG NOT STARTED: this node will not become primary until it runs", "error", err)
			deps.Watchdog = watchdog.Failed{Err: err}
		} else {
			w.wd = wd
			deps.Watchdog = wd
		}
	}
	deps.WatchExit = pgproc.WatchExit
	mgr, err := wireBackup(cfg, log.Named("backup"), store, &deps, w.hooks, peers)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	w.backup = mgr
	s := agent.Settings{
		Node: agent.Node{
			Name:          cfg.Name,
			Priority:      cfg.PriorityValue(),
			NoFailover:    cfg.Tags.NoFailover,
			ReplicateFrom: cfg.Tags.ReplicateFrom,
			UsePgRewind:   *cfg.Postgres.UsePgRewind,
			UseSlots:      *cfg.Postgres.UseSlots,
			SlotsTTL:      cfg.Postgres.MemberSlotsTTL.D(),
			SafetyMargin:  cfg.Watchdog.SafetyMargin.D(),
		},
		Scope:          cfg.Scope,
		ConnectAddress: cfg.Postgres.ConnectAddress,
		APIURL:         apiURL(cfg),
		Tags:           tagMap(cfg.Tags),
		Initial:        cfg.Cluster,
		PeerTimeout:    peerTimeout(cfg),
		CloneTimeout:   cfg.Postgres.CloneTimeout.D(),
		RewindTimeout:  cfg.Postgres.RewindTimeout.D(),
		Version:        version,

		WatchdogRequired: cfg.Watchdog.Mode == "required",
	}
	w.agent = agent.New(s, deps, log.Named("ha"))
	w.starting, w.store = &startingAgent{Agent: w.agent}, store
	ro := restOptions(cfg, w.starting)
	if mgr != nil {
		ro.Backup = mgr
	}
	srv, err := rest.NewServer(ro, log.Named("rest"))
	if err != nil {
		return nil, fmt.Errorf("rest: %w", err)
	}
	w.server = srv
	return w, nil
}

// warnUnverifiable says, at start and on SIGHUP, when this member's
// certificate fails the check its peers make.
func warnUnverifiable(log hclog.Logger, peerTLS *tls.Config) {
	if err := rest.VerifySelf(peerTLS); err != nil {
		log.Warn("this member's rest.tls.cert does not verify against rest.tls.ca (or the system roots when unset): peers sharing this configuration and the CLI cannot read its API", "error", err)
	}
}

func peerTimeout(cfg *config.Config) time.Duration {
	return min(time.Second, cfg.Cluster.RetryTimeout.D())
}

func apiURL(cfg *config.Config) string {
	scheme := "http"
	if cfg.REST.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + cfg.REST.ConnectAddress
}

func tagMap(t config.Tags) map[string]string {
	m := map[string]string{}
	for k, v := range t.Extra {
		m[k] = v
	}
	if t.NoFailover {
		m["nofailover"] = "true"
	}
	if t.NoLoadBalance {
		m["noloadbalance"] = "true"
	}
	if t.ReplicateFrom != "" {
		m["replicatefrom"] = t.ReplicateFrom
	}
	return m
}

func openStore(ctx context.Context, cfg *config.Config, log hclog.Logger) (*etcd.Store, error) {
	ec := etcd.Config{
		Endpoints:    cfg.Etcd.Endpoints,
		Username:     cfg.Etcd.Username,
		Password:     cfg.Etcd.Password,
		Prefix:       cfg.Prefix(),
		Name:         cfg.Name,
		TTL:          cfg.Cluster.TTL.D(),
		RetryTimeout: cfg.Cluster.RetryTimeout.D(),
	}
	if t := cfg.Etcd.TLS; t != nil {
		ec.TLS = &etcd.TLSFiles{CA: t.CA, Cert: t.Cert, Key: t.Key}
	}
	s, err := etcd.New(ctx, ec, log)
	if ae := (*etcd.AccessError)(nil); errors.As(err, &ae) {
		return nil, err // it names the key and the endpoint
	}
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", cfg.Etcd.Endpoints, err)
	}
	return s, nil
}

// startupReport is how often a starting agent says why it has not run its
// first loop yet.
const startupReport = 5 * time.Second

// run serves the REST API and runs the HA loop until ctx ends, re-reading
// the file (r) at each SIGHUP hup delivers.
func (w *wired) run(ctx context.Context, r *reloader, hup <-chan os.Signal) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- w.server.Serve(ctx) }()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if r != nil {
					r.reload(ctx)
				}
			}
		}
	}()
	if w.backup != nil {
		go w.backup.Run(ctx)
	}
	w.log.Info("agent started", "rest", w.cfg.REST.Listen, "postgres", w.cfg.Postgres.Listen)
	go watchStartup(ctx, w.starting, func(ctx context.Context) error {
		_, err := w.store.ClusterFresh(ctx)
		return err
	}, w.cfg.Etcd.Endpoints, startupReport, w.cfg.Cluster.RetryTimeout.D(), w.notify, w.log)
	loopErr := w.agent.Run(ctx)
	cancel()
	srvErr := <-errc
	if w.wd != nil {
		_ = w.wd.Close()
	}
	w.hooks.Wait()
	w.log.Info("agent stopped")
	return errors.Join(loopErr, ignoreClosed(srvErr))
}

func ignoreClosed(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func cmdWatchdog(e *env, args []string) error {
	// It holds the secret variables for the hand-back (execve made it
	// dumpable again, whatever the agent was).
	sealEnviron(environHasSecret())
	// Not e.ctx: SIGTERM, meant for the agent, must not end the watchdog
	// (it ignores it, and ends only by its input or its deadline).
	if code := watchdog.Main(context.Background(), args, e.stdin, e.stdout, e.stderr); code != 0 {
		return fmt.Errorf("watchdog exited with status %d", code)
	}
	return nil
}

// cmdHandback is run by a watchdog once it has fenced the server of its
// dead agent: it deletes the leader key if this member holds it, so the
// replicas need not wait for the lease to expire.
// The lease comes on stdin ("lease HEX"), never on the command line.
func cmdHandback(e *env, args []string) error {
	fs := flags(e, "handback", "-c FILE < 'lease HEX'")
	path := fs.String("c", "", "node configuration file")
	if err := parse(fs, args); err != nil {
		return err
	}
	var leaseHex string
	if _, err := fmt.Fscanf(e.stdin, "lease %s\n", &leaseHex); err != nil {
		return fmt.Errorf("stdin: want \"lease HEX\" (the dead agent's etcd lease: only a key bound to it is deleted): %v: %w", err, errUsage)
	}
	lease, err := strconv.ParseInt(leaseHex, 16, 64)
	if err != nil || lease == 0 {
		return fmt.Errorf("stdin: lease %q: want the agent's etcd lease ID in hex: %w", leaseHex, errUsage)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, cfg.Cluster.RetryTimeout.D())
	defer cancel()
	store, err := openStore(ctx, cfg, hclog.NewNullLogger())
	if err != nil {
		return err
	}
	defer store.Close(context.Background())
	switch err := store.ReleaseLeaderOfLease(ctx, lease); {
	case errors.Is(err, dcs.ErrNotLeader):
		fmt.Fprintf(e.stdout, "%s does not hold the leader key with lease %x\n", cfg.Name, lease)
	case err != nil:
		return fmt.Errorf("hand back the leader key: %w", err)
	default:
		fmt.Fprintf(e.stdout, "leader key of %s deleted\n", cfg.Name)
	}
	return nil
}

func restOptions(cfg *config.Config, a rest.Agent) rest.Options {
	return rest.Options{Listen: cfg.REST.Listen, Agent: a, Auth: cfg.REST.Auth, TLS: cfg.REST.TLS, Version: version,
		MetricsCompat: cfg.REST.MetricsCompat}
}
