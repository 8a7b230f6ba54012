package backup

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

const keepAllReason = "no retention policy: everything is kept"

// Policy is grandfather-father-son retention: how many calendar days,
// ISO weeks, months and years keep their newest backup. All zero keeps
// everything (no policy set); one tier at zero keeps none of that tier.
type Policy struct {
	Daily, Weekly, Monthly, Yearly int
}

// KeepsAll: no tier is set, so nothing is ever removed.
func (p Policy) KeepsAll() bool {
	return p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0
}

// Item is one complete backup (or logical dump) as retention sees it.
type Item struct {
	ID   string
	Time time.Time
	// Prior is the backup a diff or incr is restored on top of ("" for a
	// full or a dump).
	Prior string
}

// Decision is what retention does with one item: kept for the reasons
// given ("daily 2026-11-30", "monthly 2026-10", "newest", "needed by
// 20261130-010000F_20261201-010000D"), or removed when there is none.
type Decision struct {
	Item
	Reasons []string
}

// Keep reports whether the item stays.
func (d Decision) Keep() bool { return len(d.Reasons) > 0 }

// tier is one level of the policy: bucket numbers a calendar period (it
// is called for every item, so it does not format), label names it.
type tier struct {
	name   string
	count  int
	bucket func(time.Time) int
	label  func(time.Time) string
}

func (p Policy) tiers() []tier {
	return []tier{
		{"daily", p.Daily, func(t time.Time) int { return t.Year()*1000 + t.YearDay() },
			func(t time.Time) string { return t.Format("2006-01-02") }},
		{"weekly", p.Weekly, func(t time.Time) int { y, w := t.ISOWeek(); return y*100 + w },
			func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{"monthly", p.Monthly, func(t time.Time) int { return t.Year()*100 + int(t.Month()) },
			func(t time.Time) string { return t.Format("2006-01") }},
		{"yearly", p.Yearly, func(t time.Time) int { return t.Year() },
			func(t time.Time) string { return t.Format("2006") }},
	}
}

// retain decides, for every item, whether it is kept and why. Semantics
// are restic's and borg's --keep-daily N: walking from the newest, the
// first N calendar days (in loc) that have an item each keep their newest
// one, so a day without a backup does not use up a slot; likewise weeks
// (ISO), months and years. The newest item is always kept, and a kept diff
// or incr keeps every backup it is restored on top of. The result is
// oldest first. retain is pure: items is not modified.
func retain(items []Item, p Policy, loc *time.Location) []Decision {
	out := make([]Decision, len(items))
	for i, it := range items {
		out[i] = Decision{Item: it}
	}
	slices.SortStableFunc(out, func(a, b Decision) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if len(out) == 0 {
		return out
	}
	if p.KeepsAll() {
		for i := range out {
			out[i].Reasons = []string{keepAllReason}
		}
		return out
	}
	local := make([]time.Time, len(out))
	for i := range out {
		local[i] = out[i].Time.In(loc)
	}
	for _, tr := range p.tiers() {
		used, last := 0, -1
		for i := len(out) - 1; i >= 0 && used < tr.count; i-- {
			b := tr.bucket(local[i])
			if b == last {
				continue
			}
			last = b
			used++
			out[i].Reasons = append(out[i].Reasons, tr.name+" "+tr.label(local[i]))
		}
	}
	newest := &out[len(out)-1]
	newest.Reasons = append([]string{"newest"}, newest.Reasons...)
	byID := make(map[string]int, len(out))
	for i, d := range out {
		byID[d.ID] = i
	}
	// Newest first: a kept backup marks its prior kept before the loop
	// reaches the prior, which then marks its own.
	for i := len(out) - 1; i >= 0; i-- {
		if !out[i].Keep() || out[i].Prior == "" {
			continue
		}
		if j, ok := byID[out[i].Prior]; ok {
			out[j].Reasons = append(out[j].Reasons, "needed by "+out[i].ID)
		}
	}
	return out
}

// pitrFrom is the oldest item of the daily tier (the newest when the daily
// tier is zero): the archive keeps continuous WAL from it, so every backup
// from it on restores to any point in time, and older kept backups restore
// to their end only. ok is false when nothing is kept.
func pitrFrom(ds []Decision) (Item, bool) {
	var from *Decision
	for i := len(ds) - 1; i >= 0; i-- {
		for _, r := range ds[i].Reasons {
			if r == "newest" || strings.HasPrefix(r, "daily ") || r == keepAllReason {
				from = &ds[i]
			}
		}
	}
	if from == nil {
		return Item{}, false
	}
	return from.Item, true
}
