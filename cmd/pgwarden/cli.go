package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/dcs/etcd"
)

// The operator commands read the cluster from etcd and act through the
// members' REST APIs, so that every action goes through the agent that
// owns it.

// openCluster connects to etcd as a read-mostly client (no lease is taken
// until something is written).
func openCluster(ctx context.Context, c *config.Config) (*etcd.Store, error) {
	ec := etcd.Config{
		Endpoints:    c.Etcd.Endpoints,
		Username:     c.Etcd.Username,
		Password:     c.Etcd.Password,
		Prefix:       c.Prefix(),
		Name:         cliName(c),
		TTL:          c.Cluster.TTL.D(),
		RetryTimeout: c.Cluster.RetryTimeout.D(),
	}
	if t := c.Etcd.TLS; t != nil {
		ec.TLS = &etcd.TLSFiles{CA: t.CA, Cert: t.Cert, Key: t.Key}
	}
	s, err := etcd.New(ctx, ec, hclog.NewNullLogger())
	if ae := (*etcd.AccessError)(nil); errors.As(err, &ae) {
		return nil, err // it names the key and the endpoint
	}
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", c.Etcd.Endpoints, err)
	}
	// The commands that write check that later, on their write: a
	// read-only etcd user may still list.
	if err := s.CheckAccess(ctx, false); err != nil {
		s.Close(context.Background())
		return nil, err
	}
	return s, nil
}

// cliName is how the CLI names itself to etcd: a control-only file has no
// member name.
func cliName(c *config.Config) string {
	if c.Name == "" {
		return "pgwarden-cli"
	}
	return c.Name + "-cli"
}

// withCluster loads the config, reads the cluster and calls f.
func withCluster(e *env, path string, f func(cfg *config.Config, s *etcd.Store, c *dcs.Cluster) error) error {
	cfg, err := loadControl(path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	s, err := openCluster(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close(context.Background())
	c, err := s.Cluster(ctx)
	if err != nil {
		return err // the store names what failed ("read cluster: ...")
	}
	return f(cfg, s, c)
}

// withClusterAPI is withCluster for a command that also acts through a
// member's REST API.
func withClusterAPI(e *env, path string, rf restFlags, f func(cfg *config.Config, rc *restClient, c *dcs.Cluster) error) error {
	return withCluster(e, path, func(cfg *config.Config, _ *etcd.Store, c *dcs.Cluster) error {
		rc, err := newRESTClient(cfg, rf)
		if err != nil {
			return err
		}
		return f(cfg, rc, c)
	})
}

func dynamicOf(c *dcs.Cluster) config.Dynamic {
	d := config.DefaultDynamic()
	if c.Config != nil {
		_ = json.Unmarshal(c.Config, &d)
	}
	return d
}

func cmdList(e *env, args []string) error {
	fs := flags(e, "list", "-c FILE [--format table|json] [--watch N]")
	path := configFlag(fs)
	format := fs.String("format", "table", "table or json")
	watch := fs.Int("watch", 0, "refresh every N seconds until interrupted")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *format != "table" && *format != "json" {
		return fmt.Errorf("--format %q: must be table or json: %w", *format, errUsage)
	}
	if *watch < 0 {
		return fmt.Errorf("--watch %d: must be a positive number of seconds: %w", *watch, errUsage)
	}
	show := func() error {
		return withCluster(e, *path, func(cfg *config.Config, _ *etcd.Store, c *dcs.Cluster) error {
			v := buildList(c, cfg.Scope, dynamicOf(c).Pause)
			if *format == "json" {
				return writeListJSON(e.stdout, v)
			}
			return writeListTable(e.stdout, v)
		})
	}
	if *watch == 0 {
		return show()
	}
	for {
		if *format == "table" {
			fmt.Fprint(e.stdout, "\033[H\033[2J")
			fmt.Fprintln(e.stdout, time.Now().Format(time.RFC3339))
		}
		if err := show(); err != nil {
			fmt.Fprintln(e.stderr, "pgwarden list:", oneLine(err))
		}
		select {
		case <-e.ctx.Done():
			return nil
		case <-time.After(time.Duration(*watch) * time.Second):
		}
	}
}

func cmdHistory(e *env, args []string) error {
	fs := flags(e, "history", "-c FILE [--format table|json]")
	path := configFlag(fs)
	format := fs.String("format", "table", "table or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	return withCluster(e, *path, func(_ *config.Config, _ *etcd.Store, c *dcs.Cluster) error {
		if *format == "json" {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(c.History)
		}
		fmt.Fprintf(e.stdout, "%-8s %-18s %-12s %-25s %s\n", "TL", "LSN", "REASON", "TIME", "NEW_LEADER")
		for _, h := range c.History {
			fmt.Fprintf(e.stdout, "%-8d %-18s %-12s %-25s %s\n", h.Timeline, h.LSN.String(), h.Reason, h.Time.Format(time.RFC3339), h.NewLeader)
		}
		return nil
	})
}

func cmdShowConfig(e *env, args []string) error {
	fs := flags(e, "show-config", "-c FILE")
	path := configFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	return withCluster(e, *path, func(_ *config.Config, _ *etcd.Store, c *dcs.Cluster) error {
		if c.Config == nil {
			return errors.New("no dynamic configuration in etcd yet (the cluster is not initialized)")
		}
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, c.Config, "", "  "); err != nil {
			return fmt.Errorf("stored config is not JSON: %w", err)
		}
		fmt.Fprintln(e.stdout, pretty.String())
		return nil
	})
}

// multiFlag collects repeated --set k=v.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdEditConfig(e *env, args []string) error {
	fs := flags(e, "edit-config", "-c FILE [--set key=value ...] [--force] "+restFlagsUsage)
	path := configFlag(fs)
	rf := addRESTFlags(fs)
	force := fs.Bool("force", false, "apply without asking")
	var sets multiFlag
	fs.Var(&sets, "set", "key=value to set (repeatable); value is JSON or a plain string; key may be parameters.NAME")
	if err := parse(fs, args); err != nil {
		return err
	}
	return withClusterAPI(e, *path, rf, func(cfg *config.Config, rc *restClient, c *dcs.Cluster) error {
		old := c.Config
		if old == nil {
			old = []byte("{}")
		}
		var next []byte
		var err error
		if len(sets) > 0 {
			next, err = applySets(old, sets)
		} else {
			next, err = editInEditor(e.ctx, old)
		}
		if err != nil {
			return err
		}
		if _, err := config.ParseDynamic(next); err != nil {
			return fmt.Errorf("refusing invalid configuration: %w", err)
		}
		diff := jsonDiff(old, next)
		if diff == "" {
			fmt.Fprintln(e.stdout, "no change")
			return nil
		}
		fmt.Fprint(e.stdout, diff)
		if !*force && !confirm(e, "apply these changes?") {
			return errors.New("not applied")
		}
		// Through a member's API, so its agent logs who changed what; at
		// the revision edited, so a change made meanwhile is not lost.
		hdr := http.Header{"If-Match": {fmt.Sprint(c.ConfigRevision)}}
		code, _, err := anyMember(e.ctx, rc, c, http.MethodPut, "/config", json.RawMessage(next), hdr)
		if code == http.StatusConflict {
			return errors.New("the configuration changed while you edited it: nothing applied, run edit-config again")
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "configuration applied")
		return nil
	})
}

// applySets applies --set key=value arguments to the stored configuration
// as PATCH /config would: one merge patch (config.SetsPatch, MergePatch).
func applySets(raw []byte, sets []string) ([]byte, error) {
	patch, err := config.SetsPatch(sets)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errUsage)
	}
	return config.MergePatch(raw, patch)
}

func editInEditor(ctx context.Context, raw []byte) ([]byte, error) {
	editor := os.Getenv("EDITOR")
	if editor == "" {
		editor = "vi" // as git, crontab and patronictl do
	}
	f, err := os.CreateTemp("", "pgwarden-config-*.json")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	var pretty bytes.Buffer
	_ = json.Indent(&pretty, raw, "", "  ")
	if _, err := f.Write(pretty.Bytes()); err != nil {
		return nil, err
	}
	f.Close()
	cmd := exec.CommandContext(ctx, "sh", "-c", editor+` "$1"`, "editor", f.Name())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("editor %q: %w", editor, err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("edited config is not valid JSON: %w", err)
	}
	return json.Marshal(v)
}

// jsonDiff lists changed top-level keys as -old/+new lines.
func jsonDiff(a, b []byte) string {
	var x, y map[string]any
	_ = json.Unmarshal(a, &x)
	_ = json.Unmarshal(b, &y)
	keys := map[string]bool{}
	for k := range x {
		keys[k] = true
	}
	for k := range y {
		keys[k] = true
	}
	var out strings.Builder
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		xv, xok := x[k]
		yv, yok := y[k]
		xs, _ := json.Marshal(xv)
		ys, _ := json.Marshal(yv)
		if xok == yok && bytes.Equal(xs, ys) {
			continue
		}
		if xok {
			fmt.Fprintf(&out, "-%s: %s\n", k, xs)
		}
		if yok {
			fmt.Fprintf(&out, "+%s: %s\n", k, ys)
		}
	}
	return out.String()
}

func confirm(e *env, q string) bool {
	line := strings.ToLower(ask(e, q+" [y/N] "))
	return line == "y" || line == "yes"
}

// ask prints q and reads one line. It reads byte by byte: a buffered
// reader would swallow the answers to the questions after this one.
func ask(e *env, q string) string {
	fmt.Fprint(e.stdout, q)
	var line []byte
	b := make([]byte, 1)
	for len(line) < 4096 {
		n, err := e.stdin.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
		}
		if err != nil {
			break
		}
	}
	return strings.TrimSpace(string(line))
}

func cmdPause(e *env, args []string) error  { return setPause(e, "pause", args, true) }
func cmdResume(e *env, args []string) error { return setPause(e, "resume", args, false) }

func setPause(e *env, name string, args []string, pause bool) error {
	fs := flags(e, name, "-c FILE "+restFlagsUsage)
	path := configFlag(fs)
	rf := addRESTFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	return withCluster(e, *path, func(cfg *config.Config, _ *etcd.Store, c *dcs.Cluster) error {
		if c.Config == nil {
			return errors.New("the cluster is not initialized")
		}
		if dynamicOf(c).Pause == pause {
			if pause {
				fmt.Fprintln(e.stdout, "already paused: nothing changed (pgwarden resume to leave maintenance mode)")
			} else {
				fmt.Fprintln(e.stdout, "not paused: nothing changed (automatic failover is on)")
			}
			return nil
		}
		rc, err := newRESTClient(cfg, rf)
		if err != nil {
			return err
		}
		// PATCH /config as patronictl does: the member's agent logs it.
		if _, _, err := anyMember(e.ctx, rc, c, http.MethodPatch, "/config", map[string]bool{"pause": pause}, nil); err != nil {
			return err
		}
		if pause {
			fmt.Fprintln(e.stdout, "paused: no automatic failover until pgwarden resume")
		} else {
			fmt.Fprintln(e.stdout, "resumed: automatic failover is on")
		}
		return nil
	})
}

// anyMember sends a cluster-wide request (the dynamic configuration) to
// the leader's API, or, when it does not answer (a dead leader of a paused
// cluster), to the next member that does.
func anyMember(ctx context.Context, rc *restClient, c *dcs.Cluster, method, path string, body any, hdr http.Header) (int, []byte, error) {
	var urls []string
	if c.Leader != nil {
		if m := c.Member(c.Leader.Name); m != nil && m.APIURL != "" {
			urls = append(urls, strings.TrimRight(m.APIURL, "/"))
		}
	}
	for _, m := range c.Members {
		if u := strings.TrimRight(m.APIURL, "/"); u != "" && !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return 0, nil, errors.New("no member has published its REST API address")
	}
	var errs []error
	for _, u := range urls {
		code, out, err := rc.doHeader(ctx, method, u+path, body, hdr)
		if code != 0 || ctx.Err() != nil {
			return code, out, err
		}
		errs = append(errs, err)
	}
	return 0, nil, errors.Join(errs...)
}

// memberAPI is the REST base URL of a member (or of the leader when name
// is "", or any member when there is no leader).
func memberAPI(c *dcs.Cluster, name string) (string, error) {
	if name == "" && c.Leader != nil {
		name = c.Leader.Name
	}
	for _, m := range c.Members {
		if (name == "" || m.Name == name) && m.APIURL != "" {
			return strings.TrimRight(m.APIURL, "/"), nil
		}
	}
	if name == "" {
		return "", errors.New("no member has published its REST API address")
	}
	return "", fmt.Errorf("no member named %s", name)
}

func cmdSwitchover(e *env, args []string) error {
	fs := flags(e, "switchover", "-c FILE [--leader N] [--candidate N] [--scheduled T] [--force] "+restFlagsUsage)
	path := configFlag(fs)
	rf := addRESTFlags(fs)
	leader := fs.String("leader", "", "the current leader (checked)")
	cand := fs.String("candidate", "", "the member to promote (default: the best replica)")
	sched := fs.String("scheduled", "", "RFC 3339 time to switch over at (default: now)")
	force := fs.Bool("force", false, "do not ask for confirmation")
	if err := parse(fs, args); err != nil {
		return err
	}
	body := map[string]string{}
	if *leader != "" {
		body["leader"] = *leader
	}
	if *cand != "" {
		body["candidate"] = *cand
	}
	if *sched != "" {
		if _, err := time.Parse(time.RFC3339, *sched); err != nil {
			return fmt.Errorf("--scheduled %q: must be RFC 3339 with a zone, e.g. 2026-11-23T03:00:00Z: %w", *sched, errUsage)
		}
		body["scheduled_at"] = *sched
	}
	return withClusterAPI(e, *path, rf, func(cfg *config.Config, rc *restClient, c *dcs.Cluster) error {
		url, err := memberAPI(c, "")
		if err != nil {
			return err
		}
		if body["leader"] == "" && body["candidate"] == "" {
			// The API wants one of them named; the operator who names
			// neither means "from the current leader to the best replica".
			if c.Leader == nil {
				return errors.New("switchover: the cluster has no leader (use failover --candidate)")
			}
			body["leader"] = c.Leader.Name
		}
		if !*force && !confirm(e, fmt.Sprintf("switch over from %s to %s?", leaderName(c), orAny(*cand))) {
			return errors.New("aborted")
		}
		start := time.Now()
		code, _, err := rc.do(e.ctx, http.MethodPost, url+"/switchover", body)
		if err != nil {
			return err
		}
		if code == http.StatusAccepted {
			fmt.Fprintf(e.stdout, "switchover scheduled for %s\n", *sched)
			return nil
		}
		fmt.Fprintf(e.stdout, "switchover done in %.1fs\n", time.Since(start).Seconds())
		return nil
	})
}

func leaderName(c *dcs.Cluster) string {
	if c.Leader == nil {
		return "(no leader)"
	}
	return c.Leader.Name
}

func cmdFailover(e *env, args []string) error {
	fs := flags(e, "failover", "-c FILE --candidate N [--force] "+restFlagsUsage)
	path := configFlag(fs)
	rf := addRESTFlags(fs)
	cand := fs.String("candidate", "", "the member to promote")
	force := fs.Bool("force", false, "skip confirmation and the lag check")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cand == "" {
		return fmt.Errorf("--candidate is required: %w", errUsage)
	}
	return withClusterAPI(e, *path, rf, func(cfg *config.Config, rc *restClient, c *dcs.Cluster) error {
		url, err := memberAPI(c, *cand)
		if err != nil {
			return err
		}
		if !*force && !confirm(e, fmt.Sprintf("fail over to %s?", *cand)) {
			return errors.New("aborted")
		}
		if *force {
			fmt.Fprintln(e.stderr, "warning: --force skips the lag check: transactions the candidate has not received are lost")
		}
		start := time.Now()
		if _, _, err := rc.do(e.ctx, http.MethodPost, url+"/failover", map[string]any{"candidate": *cand, "force": *force}); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "failover to %s done in %.1fs\n", *cand, time.Since(start).Seconds())
		return nil
	})
}

func cmdReinit(e *env, args []string) error { return nodeAction(e, "reinit", "/reinitialize", args) }

func nodeAction(e *env, name, path string, args []string) error {
	fs := flags(e, name, "-c FILE NODE [--force] "+restFlagsUsage)
	cfgPath := configFlag(fs)
	rf := addRESTFlags(fs)
	force := fs.Bool("force", false, "do not ask for confirmation")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("exactly one NODE is required: %w", errUsage)
	}
	node := pos[0]
	return withClusterAPI(e, *cfgPath, rf, func(cfg *config.Config, rc *restClient, c *dcs.Cluster) error {
		url, err := memberAPI(c, node)
		if err != nil {
			return err
		}
		if !*force && !confirm(e, fmt.Sprintf("%s %s?", name, node)) {
			return errors.New("aborted")
		}
		if _, _, err := rc.do(e.ctx, http.MethodPost, url+path, map[string]any{}); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s %s: done\n", name, node)
		return nil
	})
}
