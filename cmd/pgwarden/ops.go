package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/dcs/etcd"
	"github.com/pgwarden/pgwarden/postgres"
)

// The commands an operator coming from patronictl reaches for: topology,
// reload, flush, remove, dsn, query, check-config.

// topoRow is one member in `pgwarden topology`: its list row, indented
// under the member it streams from.
type topoRow struct {
	listRow
	depth int
}

// buildTopology orders the members as a tree: the leader, then who streams
// from it, each followed by who streams from it in turn. parents maps a
// member to the one whose WAL senders list it (what the servers say);
// a member not listed by anyone hangs under its replicatefrom tag, else the
// leader (where it should be), and is shown as not streaming by its state.
func buildTopology(v listView, parents map[string]string) []topoRow {
	names := map[string]bool{}
	for _, r := range v.Members {
		names[r.Member] = true
	}
	parentOf := func(r listRow) string {
		if p, ok := parents[r.Member]; ok && names[p] && p != r.Member {
			return p
		}
		if p := r.Tags["replicatefrom"]; p != "" && names[p] && p != r.Member {
			return p
		}
		if r.Member != v.Leader {
			return v.Leader
		}
		return ""
	}
	children := map[string][]listRow{}
	var roots []listRow
	for _, r := range v.Members {
		p := parentOf(r)
		if p == "" || !names[p] {
			roots = append(roots, r)
			continue
		}
		children[p] = append(children[p], r)
	}
	var out []topoRow
	seen := map[string]bool{}
	var walk func(r listRow, depth int)
	walk = func(r listRow, depth int) {
		if seen[r.Member] {
			return // a cycle of replicatefrom tags: shown once
		}
		seen[r.Member] = true
		out = append(out, topoRow{r, depth})
		for _, c := range children[r.Member] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	// Members only reachable through a cycle.
	for _, r := range v.Members {
		walk(r, 0)
	}
	return out
}

func writeTopology(w io.Writer, v listView, rows []topoRow) error {
	fmt.Fprintln(w, listTitle(v))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tHOST\tROLE\tSTATE\tTL\tLAG_MB")
	for _, r := range rows {
		name := r.Member
		if r.depth > 0 {
			name = strings.Repeat("  ", r.depth-1) + "+ " + name
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1f\n", name, r.Host, r.Role, orDash(r.State), timelineText(r.Timeline), r.LagMB)
	}
	return tw.Flush()
}

// walSenderParents asks every member's API who streams from it: the WAL
// senders of its /patroni. Members that do not answer are left out.
func walSenderParents(ctx context.Context, rc *restClient, c *dcs.Cluster) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var mu sync.Mutex
	parents := map[string]string{}
	var wg sync.WaitGroup
	for _, m := range c.Members {
		if m.APIURL == "" {
			continue
		}
		wg.Add(1)
		go func(m dcs.Member) {
			defer wg.Done()
			_, body, err := rc.do(ctx, http.MethodGet, strings.TrimRight(m.APIURL, "/")+"/patroni", nil)
			if err != nil {
				return
			}
			var st struct {
				Replication []struct {
					ApplicationName string `json:"application_name"`
				} `json:"replication"`
			}
			if json.Unmarshal(body, &st) != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range st.Replication {
				parents[r.ApplicationName] = m.Name
			}
		}(m)
	}
	wg.Wait()
	return parents
}

func cmdTopology(e *env, args []string) error {
	fs := flags(e, "topology", "-c FILE "+restFlagsUsage)
	path := configFlag(fs)
	rf := addRESTFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	return withClusterAPI(e, *path, rf, func(cfg *config.Config, rc *restClient, c *dcs.Cluster) error {
		v := buildList(c, cfg.Scope, dynamicOf(c).Pause)
		return writeTopology(e.stdout, v, buildTopology(v, walSenderParents(e.ctx, rc, c)))
	})
}

// pickMember chooses the member a command talks to: the named one, else
// by role (leader, replica: the first streaming replica by name, any: the
// leader or else the first member).
func pickMember(c *dcs.Cluster, name, role string) (*dcs.Member, error) {
	if name != "" {
		if m := c.Member(name); m != nil {
			return m, nil
		}
		return nil, fmt.Errorf("no member named %s", name)
	}
	leader := ""
	if c.Leader != nil {
		leader = c.Leader.Name
	}
	switch role {
	case "leader", "primary", "any", "":
		if m := c.Member(leader); m != nil {
			return m, nil
		}
		if role == "any" && len(c.Members) > 0 {
			return &c.Members[0], nil
		}
		return nil, errors.New("the cluster has no leader")
	case "replica":
		for i, m := range c.Members {
			if m.Name != leader && m.Role == "replica" && m.State == "running" && m.Streaming {
				return &c.Members[i], nil
			}
		}
		return nil, errors.New("no replica is streaming")
	}
	return nil, fmt.Errorf("--role %q: must be leader, replica or any: %w", role, errUsage)
}

// memberDSN is the libpq connection string of a member's PostgreSQL.
func memberDSN(m *dcs.Member) string {
	host, port := "", ""
	if hp := dcs.Addr(m.ConnURL); hp != "" {
		if i := strings.LastIndexByte(hp, ':'); i >= 0 {
			host, port = hp[:i], hp[i+1:]
		} else {
			host = hp
		}
	}
	return fmt.Sprintf("host=%s port=%s", strings.Trim(host, "[]"), port)
}

func cmdDSN(e *env, args []string) error {
	fs := flags(e, "dsn", "-c FILE [NODE] [--role leader|replica|any]")
	path := configFlag(fs)
	role := fs.String("role", "leader", "without NODE: leader, replica or any")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("at most one NODE: %w", errUsage)
	}
	return withCluster(e, *path, func(_ *config.Config, _ *etcd.Store, c *dcs.Cluster) error {
		m, err := pickMember(c, first(pos), *role)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, memberDSN(m))
		return nil
	})
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func cmdQuery(e *env, args []string) error {
	fs := flags(e, "query", "-c FILE [NODE] [--role leader|replica|any] [-U USER] [-d DB] (--command SQL | --file FILE) [--format table|json]")
	path := configFlag(fs)
	role := fs.String("role", "leader", "without NODE: leader, replica or any")
	user := fs.String("U", "", "database user (default: postgres.superuser.username of the file)")
	db := fs.String("d", "postgres", "database")
	command := fs.String("command", "", "the SQL to run")
	file := fs.String("file", "", "a file holding the SQL to run")
	format := fs.String("format", "table", "table or json")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("at most one NODE: %w", errUsage)
	}
	if (*command == "") == (*file == "") {
		return fmt.Errorf("give the SQL with --command or --file (one of them): %w", errUsage)
	}
	if *format != "table" && *format != "json" {
		return fmt.Errorf("--format %q: must be table or json: %w", *format, errUsage)
	}
	sql := *command
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return fmt.Errorf("read --file: %w", err)
		}
		sql = string(b)
	}
	return withCluster(e, *path, func(cfg *config.Config, _ *etcd.Store, c *dcs.Cluster) error {
		m, err := pickMember(c, first(pos), *role)
		if err != nil {
			return err
		}
		u, pw := cfg.Postgres.Superuser.Username, cfg.Postgres.Superuser.Password
		if *user != "" && *user != u {
			u, pw = *user, ""
		}
		if p := os.Getenv("PGPASSWORD"); p != "" {
			pw = p
		}
		dsn := fmt.Sprintf("%s user=%s dbname=%s connect_timeout=5", memberDSN(m), quoteDSN(u), quoteDSN(*db))
		if pw != "" {
			dsn += " password=" + quoteDSN(pw)
		}
		if t := pgTLS(cfg); t != nil {
			dsn += " " + t.Keywords() // else libpq's default, prefer
		}
		res, err := postgres.RunQuery(e.ctx, dsn, sql)
		if err != nil {
			return fmt.Errorf("query on %s: %w", m.Name, err)
		}
		if *format == "json" {
			return writeQueryJSON(e.stdout, res)
		}
		return writeQueryTable(e.stdout, res)
	})
}

// quoteDSN quotes a libpq keyword value.
func quoteDSN(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

func writeQueryTable(w io.Writer, res postgres.QueryResult) error {
	if len(res.Columns) == 0 {
		fmt.Fprintln(w, res.Tag)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(res.Columns, "\t"))
	for _, r := range res.Rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "(%d rows)\n", len(res.Rows))
	return nil
}

func writeQueryJSON(w io.Writer, res postgres.QueryResult) error {
	out := make([]map[string]string, 0, len(res.Rows))
	for _, r := range res.Rows {
		row := map[string]string{}
		for i, c := range res.Columns {
			row[c] = r[i]
		}
		out = append(out, row)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// eachMember calls the REST API of the named members (all when none are
// named; the leader last, so that a cluster-wide restart keeps a primary
// while its replicas restart) and reports each outcome on a line.
func eachMember(e *env, c *dcs.Cluster, names []string, f func(m dcs.Member, url string) (string, error)) error {
	var targets []dcs.Member
	for _, n := range names {
		m := c.Member(n)
		if m == nil {
			return fmt.Errorf("no member named %s", n)
		}
		targets = append(targets, *m)
	}
	if len(names) == 0 {
		targets = slices.Clone(c.Members)
	}
	leader := leaderName(c)
	sort.SliceStable(targets, func(i, j int) bool {
		return targets[i].Name != leader && targets[j].Name == leader
	})
	var failed []string
	for _, m := range targets {
		if m.APIURL == "" {
			failed = append(failed, m.Name)
			fmt.Fprintf(e.stderr, "%s: no REST API address published\n", m.Name)
			continue
		}
		msg, err := f(m, strings.TrimRight(m.APIURL, "/"))
		if err != nil {
			failed = append(failed, m.Name)
			fmt.Fprintf(e.stderr, "%s: %s\n", m.Name, oneLine(err))
			continue
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", m.Name, msg)
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed on %s", strings.Join(failed, ", "))
	}
	return nil
}

func cmdReload(e *env, args []string) error {
	fs := flags(e, "reload", "-c FILE [NODE ...] [--force] "+restFlagsUsage)
	path := configFlag(fs)
	rf := addRESTFlags(fs)
	force := fs.Bool("force", false, "do not ask for confirmation")
	nodes, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	return withClusterAPI(e, *path, rf, func(cfg *config.Config, rc *restClient, c *dcs.Cluster) error {
		if !*force && !confirm(e, fmt.Sprintf("reload PostgreSQL's configuration on %s?", membersText(nodes))) {
			return errors.New("aborted")
		}
		return eachMember(e, c, nodes, func(_ dcs.Member, url string) (string, error) {
			if _, _, err := rc.do(e.ctx, http.MethodPost, url+"/reload", map[string]any{}); err != nil {
				return "", err
			}
			return "reloaded", nil
		})
	})
}

func membersText(nodes []string) string {
	if len(nodes) == 0 {
		return "every member"
	}
	return strings.Join(nodes, ", ")
}

func cmdFlush(e *env, args []string) error {
	fs := flags(e, "flush", "-c FILE [NODE ...] restart|switchover [--force] "+restFlagsUsage)
	path := configFlag(fs)
	rf := addRESTFlags(fs)
	force := fs.Bool("force", false, "do not ask for confirmation")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("say what to cancel: restart or switchover: %w", errUsage)
	}
	what, nodes := pos[len(pos)-1], pos[:len(pos)-1]
	if what != "restart" && what != "switchover" {
		return fmt.Errorf("%q: flush cancels a scheduled restart or switchover: %w", what, errUsage)
	}
	if what == "switchover" && len(nodes) > 0 {
		return fmt.Errorf("a scheduled switchover belongs to the cluster, not to %s: %w", strings.Join(nodes, ", "), errUsage)
	}
	return withClusterAPI(e, *path, rf, func(cfg *config.Config, rc *restClient, c *dcs.Cluster) error {
		if what == "switchover" {
			if c.Failover == nil {
				fmt.Fprintln(e.stdout, "no switchover is scheduled: nothing to cancel")
				return nil
			}
			url, err := memberAPI(c, "")
			if err != nil {
				return err
			}
			if !*force && !confirm(e, "cancel the scheduled "+c.Failover.Kind+"?") {
				return errors.New("aborted")
			}
			if _, _, err := rc.do(e.ctx, http.MethodDelete, url+"/switchover", nil); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "scheduled "+c.Failover.Kind+" cancelled")
			return nil
		}
		if !*force && !confirm(e, fmt.Sprintf("cancel the scheduled restart of %s?", membersText(nodes))) {
			return errors.New("aborted")
		}
		return eachMember(e, c, nodes, func(_ dcs.Member, url string) (string, error) {
			code, _, err := rc.do(e.ctx, http.MethodDelete, url+"/restart", nil)
			if code == http.StatusNotFound {
				return "no restart scheduled", nil
			}
			if err != nil {
				return "", err
			}
			return "scheduled restart cancelled", nil
		})
	})
}

func cmdRestart(e *env, args []string) error {
	fs := flags(e, "restart", "-c FILE [NODE ...] [--pending] [--scheduled T] [--force] "+restFlagsUsage)
	path := configFlag(fs)
	rf := addRESTFlags(fs)
	force := fs.Bool("force", false, "do not ask for confirmation")
	pending := fs.Bool("pending", false, "only members with a parameter waiting for a restart")
	sched := fs.String("scheduled", "", "RFC 3339 time to restart at (default: now)")
	nodes, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	body := map[string]any{}
	if *sched != "" {
		if _, err := time.Parse(time.RFC3339, *sched); err != nil {
			return fmt.Errorf("--scheduled %q: must be RFC 3339 with a zone, e.g. 2026-11-23T03:00:00Z: %w", *sched, errUsage)
		}
		body["schedule"] = *sched
	}
	if *pending {
		body["restart_pending"] = true
	}
	return withClusterAPI(e, *path, rf, func(cfg *config.Config, rc *restClient, c *dcs.Cluster) error {
		q := fmt.Sprintf("restart PostgreSQL on %s", membersText(nodes))
		if *pending {
			q += " (where a restart is pending)"
		}
		if *sched != "" {
			q += " at " + *sched
		}
		if !*force && !confirm(e, q+"?") {
			return errors.New("aborted")
		}
		return eachMember(e, c, nodes, func(m dcs.Member, url string) (string, error) {
			if *pending && !m.PendingRestart && *sched == "" {
				return "no restart pending: skipped", nil
			}
			code, _, err := rc.do(e.ctx, http.MethodPost, url+"/restart", body)
			if err != nil {
				return "", err
			}
			if code == http.StatusAccepted {
				return "restart scheduled for " + *sched, nil
			}
			return "restarted", nil
		})
	})
}

func cmdRemove(e *env, args []string) error {
	fs := flags(e, "remove", "-c FILE")
	path := configFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	return withCluster(e, *path, func(cfg *config.Config, s *etcd.Store, c *dcs.Cluster) error {
		prefix := cfg.Prefix()
		fmt.Fprintf(e.stdout, "This removes every key of cluster %q under %s in etcd: its members, leader, configuration and history.\n", cfg.Scope, prefix)
		fmt.Fprintln(e.stdout, "Stop its agents first: running agents recreate their keys and race to initialize a new cluster.")
		if ans := ask(e, "Type the cluster's name (its scope) to confirm: "); ans != cfg.Scope {
			return fmt.Errorf("%q is not %q: nothing removed", ans, cfg.Scope)
		}
		if c.Leader != nil {
			msg := fmt.Sprintf("The cluster has a leader (%s): type its name to remove the keys anyway: ", c.Leader.Name)
			if ans := ask(e, msg); ans != c.Leader.Name {
				return fmt.Errorf("%q is not the leader %q: nothing removed", ans, c.Leader.Name)
			}
		}
		n, err := s.RemoveCluster(e.ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "removed %d keys under %s\n", n, prefix)
		return nil
	})
}

func cmdCheckConfig(e *env, args []string) error {
	fs := flags(e, "check-config", "-c FILE")
	path := configFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadControl(*path)
	if err != nil {
		return err
	}
	if cfg.Name == "" {
		fmt.Fprintf(e.stdout, "%s: valid control-only configuration (scope %s, etcd %s): for the operator commands, not for an agent\n",
			*path, cfg.Scope, strings.Join(cfg.Etcd.Endpoints, ","))
		return nil
	}
	if cfg, err = config.Load(*path); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: valid configuration of member %s in scope %s\n", *path, cfg.Name, cfg.Scope)
	return nil
}
