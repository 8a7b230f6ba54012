package chaos

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Write is one statement a client sent: times are offsets from the start
// of the campaign on one monotonic clock (the campaign process's).
type Write struct {
	ID  int64  `json:"id"`
	Src string `json:"src"` // the writer: "node1", "busy-node2", "pgbouncer"
	// Node and Timeline are what the server that acknowledged it said of
	// itself (its port, the timeline it was writing); empty if not acked.
	Node     string        `json:"node,omitempty"`
	Timeline uint32        `json:"timeline,omitempty"`
	Send     time.Duration `json:"send"`
	Ack      time.Duration `json:"ack,omitempty"` // 0: not acknowledged
}

// Acked says whether the client received a success.
func (w Write) Acked() bool { return w.Ack > 0 }

// Fault is one nemesis as it ran.
type Fault struct {
	Seq    int    `json:"seq"`
	Kind   string `json:"kind"`
	Target string `json:"target,omitempty"`
	// Start and Heal bound the fault; Converged is when the cluster had
	// one primary and two streaming replicas again (0: it did not within
	// the bound, ConvergeErr says what was seen).
	Start       time.Duration `json:"start"`
	Heal        time.Duration `json:"heal"`
	Converged   time.Duration `json:"converged,omitempty"`
	ConvergeErr string        `json:"converge_error,omitempty"`
	// The primary (name, timeline) before the fault and once converged.
	LeaderBefore string `json:"leader_before"`
	LeaderAfter  string `json:"leader_after,omitempty"`
	TLBefore     uint32 `json:"timeline_before"`
	TLAfter      uint32 `json:"timeline_after,omitempty"`
	// MayFailover: the fault cuts the leader from etcd, kills or freezes
	// one of its processes, or asks for a switchover; any other fault that
	// changes the leader is a false failover.
	MayFailover bool `json:"may_failover"`
	// Planned: a switchover with no other fault; it may lose no row.
	Planned bool   `json:"planned,omitempty"`
	Note    string `json:"note,omitempty"`
	// Ineffective says why the fault did not do what its name says (a
	// cut that did not cut): a campaign that did not test what it
	// claims is a failed one.
	Ineffective string `json:"ineffective,omitempty"`
}

// Violation is a broken invariant.
type Violation struct {
	Rule   string `json:"rule"` // overlap, lost, converge, false-failover, ineffective
	Fault  int    `json:"fault"`
	Detail string `json:"detail"`
	// At is the time to show the acknowledgements around.
	At time.Duration `json:"at"`
}

// KindStats is one row of the campaign's table.
type KindStats struct {
	Kind           string        `json:"kind"`
	Count          int           `json:"count"`
	MaxUnavailable time.Duration `json:"max_unavailable"`
	RowsLost       int           `json:"rows_lost"`
	MaxConverge    time.Duration `json:"max_converge"`
	FalseFailovers int           `json:"false_failovers"`
	Failovers      int           `json:"failovers"`
}

// Report is what the checker found.
type Report struct {
	Faults      int         `json:"faults"`
	Acked       int         `json:"acked"`
	Lost        int         `json:"lost"`
	LostPlanned int         `json:"lost_planned"`
	Violations  []Violation `json:"violations"`
	Kinds       []KindStats `json:"kinds"`
	Epochs      []Epoch     `json:"epochs"`
	LostByFault map[int]int `json:"lost_by_fault,omitempty"`
}

// Epoch is one primary's tenure as the acknowledgements show it: a
// timeline and the node that wrote on it, from its first acknowledgement.
type Epoch struct {
	Timeline uint32        `json:"timeline"`
	Node     string        `json:"node"`
	First    time.Duration `json:"first"`
	Last     time.Duration `json:"last"`
}

// maxShown bounds the violations of one rule reported per fault: one
// split brain can make thousands of overlapping writes.
const maxShown = 3

// Check verifies the campaign's record. present holds the IDs found on the
// final primary; sync says every acknowledged row must be there.
//
// Overlap: every promotion starts a new timeline, so timelines order the
// primaries' epochs. A write acknowledged on timeline t after the first
// acknowledgement on a later timeline is a violation: sent after it (two
// primaries accepting new writes at once) or merely acknowledged after it
// (a backend the fence missed, committing on the old primary while the new
// one already took writes). Two nodes acknowledging on one timeline is one
// too: two promotions that chose the same timeline ID.
func Check(writes []Write, faults []Fault, present map[int64]bool, sync bool) Report {
	var r Report
	r.Faults = len(faults)
	r.LostByFault = map[int]int{}
	acked := make([]Write, 0, len(writes))
	for _, w := range writes {
		if w.Acked() {
			acked = append(acked, w)
		}
	}
	sort.Slice(acked, func(i, j int) bool { return acked[i].Ack < acked[j].Ack })
	r.Acked = len(acked)

	// Epochs by timeline.
	byTL := map[uint32]*Epoch{}
	for _, w := range acked {
		e := byTL[w.Timeline]
		if e == nil {
			byTL[w.Timeline] = &Epoch{Timeline: w.Timeline, Node: w.Node, First: w.Ack, Last: w.Ack}
			continue
		}
		if w.Node != e.Node {
			r.add(Violation{Rule: "overlap", Fault: faultAt(faults, w.Ack), At: w.Ack,
				Detail: fmt.Sprintf("two primaries on timeline %d: %s (first ack %s) and %s (write %d acked %s)",
					w.Timeline, e.Node, secs(e.First), w.Node, w.ID, secs(w.Ack))})
		}
		e.Last = w.Ack
	}
	for _, e := range byTL {
		r.Epochs = append(r.Epochs, *e)
	}
	sort.Slice(r.Epochs, func(i, j int) bool { return r.Epochs[i].Timeline < r.Epochs[j].Timeline })
	// later[i] is the earliest first acknowledgement of any epoch after
	// r.Epochs[i] (by timeline).
	later := make([]time.Duration, len(r.Epochs))
	laterTL := make([]uint32, len(r.Epochs))
	const none = time.Duration(1<<63 - 1)
	min, minTL := none, uint32(0)
	for i := len(r.Epochs) - 1; i >= 0; i-- {
		later[i], laterTL[i] = min, minTL
		if r.Epochs[i].First < min {
			min, minTL = r.Epochs[i].First, r.Epochs[i].Timeline
		}
	}
	idx := map[uint32]int{}
	for i, e := range r.Epochs {
		idx[e.Timeline] = i
	}
	shown := map[[2]int]int{}
	for _, w := range acked {
		i := idx[w.Timeline]
		if later[i] == none || w.Ack <= later[i] {
			continue
		}
		how := "acknowledged"
		if w.Send > later[i] {
			how = "sent and acknowledged"
		}
		f := faultAt(faults, w.Ack)
		key := [2]int{f, 0}
		shown[key]++
		if shown[key] > maxShown {
			continue
		}
		r.add(Violation{Rule: "overlap", Fault: f, At: later[i],
			Detail: fmt.Sprintf("write %d (%s) %s by %s on timeline %d at %s (sent %s), after the first acknowledgement on timeline %d at %s",
				w.ID, w.Src, how, w.Node, w.Timeline, secs(w.Ack), secs(w.Send), laterTL[i], secs(later[i]))})
	}
	for k, n := range shown {
		if n > maxShown {
			r.add(Violation{Rule: "overlap", Fault: k[0], Detail: fmt.Sprintf("and %d more overlapping writes", n-maxShown)})
		}
	}

	// Lost rows, each charged to the fault it was acknowledged before the
	// heal of: a row on the primary when acknowledged is lost by the next
	// failover (a busy statement sent during one fault and acknowledged
	// just before the next host loss is lost by that host loss).
	for _, w := range acked {
		if present[w.ID] {
			continue
		}
		r.Lost++
		f := faultOfLoss(faults, w.Ack)
		r.LostByFault[f]++
		if f >= 0 && faults[f].Planned {
			r.LostPlanned++
		}
	}
	lostShown := map[int]bool{}
	for _, w := range acked {
		if present[w.ID] {
			continue
		}
		f := faultOfLoss(faults, w.Ack)
		planned := f >= 0 && faults[f].Planned
		// A fault that moved no primary gives no reason to lose a row.
		still := f >= 0 && faults[f].LeaderAfter != "" && faults[f].LeaderAfter == faults[f].LeaderBefore &&
			faults[f].TLAfter == faults[f].TLBefore
		if (!sync && !planned && !still && f >= 0) || lostShown[f] {
			continue
		}
		lostShown[f] = true
		why := "synchronous mode"
		switch {
		case planned:
			why = "a planned switchover"
		case f < 0:
			why = "no fault"
		case still:
			why = "a fault that moved no primary"
		}
		r.add(Violation{Rule: "lost", Fault: f, At: w.Ack,
			Detail: fmt.Sprintf("%d acknowledged rows lost across %s, first: write %d (%s) acked by %s on timeline %d at %s",
				r.LostByFault[f], why, w.ID, w.Src, w.Node, w.Timeline, secs(w.Ack))})
	}

	// Convergence and false failovers, and the table.
	stats := map[string]*KindStats{}
	var order []string
	for i, f := range faults {
		ks := stats[f.Kind]
		if ks == nil {
			ks = &KindStats{Kind: f.Kind}
			stats[f.Kind] = ks
			order = append(order, f.Kind)
		}
		ks.Count++
		ks.RowsLost += r.LostByFault[i]
		if f.Ineffective != "" {
			r.add(Violation{Rule: "ineffective", Fault: i, At: f.Start, Detail: f.Kind + ": " + f.Ineffective})
		}
		if f.ConvergeErr != "" || f.Converged == 0 {
			r.add(Violation{Rule: "converge", Fault: i, At: f.Heal,
				Detail: fmt.Sprintf("%s: no single primary with two streaming replicas within the bound after the heal at %s: %s", f.Kind, secs(f.Heal), f.ConvergeErr)})
		} else if c := f.Converged - f.Heal; c > ks.MaxConverge {
			ks.MaxConverge = c
		}
		// A timeline of 0 was not read (an API that did not answer): only
		// a known change counts.
		changed := f.LeaderAfter != "" && (f.LeaderAfter != f.LeaderBefore ||
			(f.TLAfter != 0 && f.TLBefore != 0 && f.TLAfter != f.TLBefore))
		if changed {
			ks.Failovers++
			if !f.MayFailover {
				ks.FalseFailovers++
				r.add(Violation{Rule: "false-failover", Fault: i, At: f.Start,
					Detail: fmt.Sprintf("%s on %s changed the primary from %s (timeline %d) to %s (timeline %d)",
						f.Kind, f.Target, f.LeaderBefore, f.TLBefore, f.LeaderAfter, f.TLAfter)})
			}
		}
		end := f.Converged
		if end == 0 {
			end = f.Heal
		}
		if u := maxGap(acked, f.Start, end); u > ks.MaxUnavailable {
			ks.MaxUnavailable = u
		}
	}
	for _, k := range order {
		r.Kinds = append(r.Kinds, *stats[k])
	}
	return r
}

func (r *Report) add(v Violation) { r.Violations = append(r.Violations, v) }

// faultAt is the fault running (or last healed) at t, -1 before the first.
func faultAt(faults []Fault, t time.Duration) int {
	f := -1
	for i := range faults {
		if faults[i].Start <= t {
			f = i
		}
	}
	return f
}

// faultOfLoss is the first fault not yet over at t: a row acknowledged
// before a fault's end (its convergence; the next fault's start when it
// did not converge) and missing at the end was lost by that fault (writes
// acknowledged between two faults are lost, if at all, by the next). -1:
// after the last.
func faultOfLoss(faults []Fault, t time.Duration) int {
	for i, f := range faults {
		end := f.Converged
		if end == 0 {
			end = f.Heal
			if i+1 < len(faults) {
				end = faults[i+1].Start
			}
		}
		if t <= end {
			return i
		}
	}
	return -1
}

// maxGap is the longest time in [from, to] with no acknowledgement: how
// long no node accepted writes.
func maxGap(acked []Write, from, to time.Duration) time.Duration {
	i := sort.Search(len(acked), func(i int) bool { return acked[i].Ack >= from })
	prev, gap := from, time.Duration(0)
	for ; i < len(acked) && acked[i].Ack <= to; i++ {
		if d := acked[i].Ack - prev; d > gap {
			gap = d
		}
		prev = acked[i].Ack
	}
	if d := to - prev; d > gap {
		gap = d
	}
	return gap
}

// Around renders the acknowledgements (and failures) within span of at,
// interleaved by time, for a violation's reader.
func Around(writes []Write, at, span time.Duration, limit int) string {
	var near []Write
	for _, w := range writes {
		t := w.Ack
		if !w.Acked() {
			t = w.Send
		}
		if t >= at-span && t <= at+span {
			near = append(near, w)
		}
	}
	sort.Slice(near, func(i, j int) bool { return key(near[i]) < key(near[j]) })
	if len(near) > limit {
		// Keep the ones nearest to at.
		c := sort.Search(len(near), func(i int) bool { return key(near[i]) >= at })
		lo := c - limit/2
		if lo < 0 {
			lo = 0
		}
		if lo+limit > len(near) {
			lo = len(near) - limit
		}
		near = near[lo : lo+limit]
	}
	var b strings.Builder
	for _, w := range near {
		if w.Acked() {
			fmt.Fprintf(&b, "  %10s ack  %-12s id %-7d by %-6s tl %d (sent %s)\n", secs(w.Ack), w.Src, w.ID, w.Node, w.Timeline, secs(w.Send))
		} else {
			fmt.Fprintf(&b, "  %10s fail %-12s id %-7d\n", secs(w.Send), w.Src, w.ID)
		}
	}
	return b.String()
}

func key(w Write) time.Duration {
	if w.Acked() {
		return w.Ack
	}
	return w.Send
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

// Table renders the report's per-kind rows.
func (r Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-26s %5s %12s %9s %12s %9s %6s\n", "fault", "count", "max unavail", "rows lost", "max converge", "failovers", "false")
	for _, k := range r.Kinds {
		fmt.Fprintf(&b, "%-26s %5d %11.2fs %9d %11.2fs %9d %6d\n", k.Kind, k.Count, k.MaxUnavailable.Seconds(), k.RowsLost, k.MaxConverge.Seconds(), k.Failovers, k.FalseFailovers)
	}
	return b.String()
}
