package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// listRow is one member as `pgwarden list` shows it (and as its JSON).
type listRow struct {
	Member   string            `json:"member"`
	Host     string            `json:"host"`
	Role     string            `json:"role"`
	State    string            `json:"state"`
	Timeline uint32            `json:"timeline"`
	LagMB    float64           `json:"lag_mb"`
	Priority int               `json:"priority"`
	Tags     map[string]string `json:"tags,omitempty"`
	// PendingRestart: a changed parameter waits for a restart.
	PendingRestart bool `json:"pending_restart"`
}

type listView struct {
	Scope string `json:"scope"`
	// SystemID is the cluster's database system identifier.
	SystemID            string    `json:"system_identifier,omitempty"`
	Leader              string    `json:"leader"`
	Paused              bool      `json:"paused"`
	ScheduledSwitchover string    `json:"scheduled_switchover,omitempty"`
	Members             []listRow `json:"members"`
	// LastBackup is the newest successful base backup run, if any.
	LastBackup string `json:"last_backup,omitempty"`
	// Waiting: with no leader, why each member does not take over.
	Waiting map[string]string `json:"waiting,omitempty"`
	// Failing: the action that keeps failing on each member, with its
	// last error.
	Failing map[string]string `json:"failing,omitempty"`
}

// buildList turns the cluster into the rows of `pgwarden list`: leader
// first, then replicas by name.
func buildList(c *dcs.Cluster, scope string, paused bool) listView {
	v := listView{Scope: scope, SystemID: c.Initialize, Paused: paused, LastBackup: lastBackup(c.BackupRuns)}
	if c.Leader != nil {
		v.Leader = c.Leader.Name
	}
	if f := c.Failover; f != nil && !f.ScheduledAt.IsZero() {
		v.ScheduledSwitchover = fmt.Sprintf("%s -> %s at %s", f.Leader, orAny(f.Candidate), f.ScheduledAt.Format(time.RFC3339))
	}
	for _, m := range c.Members {
		r := listRow{Member: m.Name, Host: dcs.Addr(m.ConnURL), State: m.State, Timeline: m.Timeline, Priority: m.Priority, Tags: m.Tags,
			PendingRestart: m.PendingRestart}
		switch {
		case m.Name == v.Leader:
			r.Role = "leader"
		case c.Sync != nil && slices.Contains(c.Sync.SyncStandby, m.Name):
			r.Role = "sync_standby"
		default:
			r.Role = m.Role
		}
		if m.Role == "replica" && m.State == "running" && m.Streaming {
			r.State = "streaming"
		}
		if r.Role != "leader" {
			r.LagMB = float64(c.ReplayLag(m)) / (1 << 20)
		}
		v.Members = append(v.Members, r)
		if m.Error != "" {
			if v.Failing == nil {
				v.Failing = map[string]string{}
			}
			v.Failing[m.Name] = m.Error
		}
		if m.Waiting != "" && c.Leader == nil {
			if v.Waiting == nil {
				v.Waiting = map[string]string{}
			}
			v.Waiting[m.Name] = m.Waiting
		}
	}
	sort.SliceStable(v.Members, func(i, j int) bool {
		li, lj := v.Members[i].Role == "leader", v.Members[j].Role == "leader"
		if li != lj {
			return li
		}
		return v.Members[i].Member < v.Members[j].Member
	})
	return v
}

func orAny(s string) string {
	if s == "" {
		return "(best replica)"
	}
	return s
}

func writeListJSON(w io.Writer, v listView) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// listTitle is the first line of `list` and `topology`.
func listTitle(v listView) string {
	title := fmt.Sprintf("Cluster: %s", v.Scope)
	if v.SystemID != "" {
		title += fmt.Sprintf(" (system %s)", v.SystemID)
	}
	if v.Paused {
		title += " (paused: no automatic failover)"
	}
	return title
}

func timelineText(tl uint32) string {
	if tl == 0 {
		return "-"
	}
	return fmt.Sprint(tl)
}

func writeListTable(w io.Writer, v listView) error {
	fmt.Fprintln(w, listTitle(v))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tHOST\tROLE\tSTATE\tTL\tLAG_MB\tPENDING_RESTART\tPRIORITY\tTAGS")
	for _, r := range v.Members {
		pending := ""
		if r.PendingRestart {
			pending = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t%d\t%s\n", r.Member, r.Host, r.Role, orDash(r.State), timelineText(r.Timeline), r.LagMB,
			pending, r.Priority, formatTags(r.Tags))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if v.Leader == "" {
		fmt.Fprintln(w, "no leader")
		writeByMember(w, "waits", v.Waiting)
	}
	writeByMember(w, "failing", v.Failing)
	if v.ScheduledSwitchover != "" {
		fmt.Fprintln(w, "scheduled switchover: "+v.ScheduledSwitchover)
	}
	if v.LastBackup != "" {
		fmt.Fprintln(w, "last backup: "+v.LastBackup)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatTags(t map[string]string) string {
	if len(t) == 0 {
		return ""
	}
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + t[k]
	}
	return strings.Join(parts, ",")
}

// writeByMember prints one line per member of what, sorted by name.
func writeByMember(w io.Writer, what string, byName map[string]string) {
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %s %s: %s\n", n, what, byName[n])
	}
}
