package backup

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// kept is the decisions as "ID: reason; reason" for the kept ones.
func kept(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		if d.Keep() {
			out = append(out, d.ID+": "+strings.Join(d.Reasons, "; "))
		}
	}
	return out
}

func TestRetainTable(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		items  []Item
		policy Policy
		loc    *time.Location
		want   []string
	}{
		{
			name: "a gap does not use up a daily slot; the newest of a day wins",
			items: []Item{
				{ID: "a", Time: at(t, "2026-11-20T01:00:00Z")},
				{ID: "b", Time: at(t, "2026-11-25T01:00:00Z")},
				{ID: "c", Time: at(t, "2026-11-28T01:00:00Z")},
				{ID: "d", Time: at(t, "2026-11-28T13:00:00Z")},
				{ID: "e", Time: at(t, "2026-11-30T01:00:00Z")},
			},
			policy: Policy{Daily: 3},
			loc:    time.UTC,
			want:   []string{"b: daily 2026-11-25", "d: daily 2026-11-28", "e: newest; daily 2026-11-30"},
		},
		{
			name: "ISO weeks across a new year, months and years",
			items: []Item{
				{ID: "nov", Time: at(t, "2026-11-15T01:00:00Z")},
				{ID: "w53a", Time: at(t, "2026-12-31T01:00:00Z")},
				{ID: "w53b", Time: at(t, "2027-01-03T01:00:00Z")},
				{ID: "w01", Time: at(t, "2027-01-04T01:00:00Z")},
			},
			policy: Policy{Weekly: 3, Monthly: 2, Yearly: 5},
			loc:    time.UTC,
			want: []string{"nov: weekly 2026-W46", "w53a: monthly 2026-12; yearly 2026",
				"w53b: weekly 2026-W53", "w01: newest; weekly 2027-W01; monthly 2027-01; yearly 2027"},
		},
		{
			name: "a zero tier keeps none of it; the newest stays regardless",
			items: []Item{
				{ID: "oct", Time: at(t, "2026-10-31T01:00:00Z")},
				{ID: "nov", Time: at(t, "2026-11-30T01:00:00Z")},
				{ID: "dec", Time: at(t, "2026-12-01T01:00:00Z")},
			},
			policy: Policy{Yearly: 1},
			loc:    time.UTC,
			want:   []string{"dec: newest; yearly 2026"},
		},
		{
			name: "all zero keeps everything",
			items: []Item{
				{ID: "x", Time: at(t, "2020-01-01T00:00:00Z")},
				{ID: "y", Time: at(t, "2026-01-01T00:00:00Z")},
			},
			loc:  time.UTC,
			want: []string{"x: " + keepAllReason, "y: " + keepAllReason},
		},
		{
			name: "a kept incr keeps its diff and its full; a removed chain goes whole",
			items: []Item{
				{ID: "F1", Time: at(t, "2026-11-01T01:00:00Z")},
				{ID: "D1", Time: at(t, "2026-11-02T01:00:00Z"), Prior: "F1"},
				{ID: "F2", Time: at(t, "2026-11-08T01:00:00Z")},
				{ID: "D2", Time: at(t, "2026-11-09T01:00:00Z"), Prior: "F2"},
				{ID: "I2", Time: at(t, "2026-11-09T13:00:00Z"), Prior: "D2"},
			},
			policy: Policy{Daily: 1},
			loc:    time.UTC,
			want:   []string{"F2: needed by D2", "D2: needed by I2", "I2: newest; daily 2026-11-09"},
		},
		{
			name: "buckets are calendar days of the time zone",
			items: []Item{
				{ID: "late", Time: at(t, "2026-11-30T23:30:00Z")}, // 00:30 on 1 December in Paris
				{ID: "early", Time: at(t, "2026-11-30T22:30:00Z")},
			},
			policy: Policy{Daily: 2},
			loc:    paris,
			want:   []string{"early: daily 2026-11-30", "late: newest; daily 2026-12-01"},
		},
		{name: "nothing to decide", policy: Policy{Daily: 7}, loc: time.UTC},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := slices.Clone(c.items)
			got := kept(retain(c.items, c.policy, c.loc))
			if !slices.Equal(got, c.want) {
				t.Fatalf("kept:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
			if !slices.Equal(in, c.items) {
				t.Fatal("Retain modified its input")
			}
		})
	}
}

func TestPITRFrom(t *testing.T) {
	items := []Item{
		{ID: "m", Time: at(t, "2026-10-01T01:00:00Z")},
		{ID: "d1", Time: at(t, "2026-11-29T01:00:00Z")},
		{ID: "d2", Time: at(t, "2026-11-30T01:00:00Z")},
	}
	from, ok := pitrFrom(retain(items, Policy{Daily: 2, Monthly: 3}, time.UTC))
	if !ok || from.ID != "d1" {
		t.Fatalf("PITR from %v %v; want d1, the oldest daily", from, ok)
	}
	from, ok = pitrFrom(retain(items, Policy{Monthly: 3}, time.UTC))
	if !ok || from.ID != "d2" {
		t.Fatalf("PITR without a daily tier from %v %v; want d2, the newest", from, ok)
	}
}

// history is every backup ever taken in a simulation, with what a naive
// reference needs: for each tier, the newest backup of each bucket, newest
// bucket last.
type history struct {
	items   []Item
	buckets map[string][]bucketNewest
}

type bucketNewest struct{ bucket, id string }

func (h *history) add(it Item, p Policy, loc *time.Location) {
	h.items = append(h.items, it)
	for _, tr := range p.tiers() {
		b := tr.label(it.Time.In(loc))
		l := h.buckets[tr.name]
		if n := len(l); n > 0 && l[n-1].bucket == b {
			l[n-1].id = it.ID // times only grow: the newest of its bucket
		} else {
			l = append(l, bucketNewest{b, it.ID})
		}
		h.buckets[tr.name] = l
	}
}

// TestRetainThirtyYears simulates 30 years of backups (a full most days,
// random gaps of up to three weeks, a diff or incr or two on some days),
// applying retention after every backup as the agent does, and checks
// after every step: each tier keeps exactly min(N, buckets that had a
// backup), and precisely the newest backup of each of the newest N such
// buckets; the newest backup is kept; every kept diff or incr has its whole
// chain; applying retention again removes nothing more; and (each year)
// what is left equals retention applied to the whole history at once.
func TestRetainThirtyYears(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York") // DST: 23 and 25 hour days
	if err != nil {
		t.Fatal(err)
	}
	policies := []Policy{{Daily: 7, Weekly: 4, Monthly: 12, Yearly: 10}, {Daily: 3, Monthly: 2, Yearly: 40},
		{Weekly: 4, Yearly: 3}, {Daily: 1}}
	for seed, p := range policies {
		t.Run(fmt.Sprintf("%+v", p), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 30))
			h := &history{buckets: map[string][]bucketNewest{}}
			var left []Item
			day := time.Date(2000, 1, 1, 0, 0, 0, 0, ny)
			end := day.AddDate(30, 0, 0)
			lastFull, prev, steps, maxLeft := "", "", 0, 0
			for ; day.Before(end); day = day.AddDate(0, 0, 1) {
				if rng.IntN(20) == 0 {
					day = day.AddDate(0, 0, rng.IntN(21)) // an outage
					continue
				}
				n := 1 + rng.IntN(3)
				mins := make([]int, n)
				dayLen := int(day.AddDate(0, 0, 1).Sub(day).Minutes()) - 1 // 23 h when DST starts
				for i := range mins {
					mins[i] = rng.IntN(dayLen)
				}
				slices.Sort(mins)
				for i, m := range mins {
					ts := day.Add(time.Duration(m)*time.Minute + time.Duration(i)*time.Second)
					it := Item{ID: fmt.Sprintf("%s-%d", ts.UTC().Format("20060102-150405"), i), Time: ts}
					switch {
					case i == 0 || lastFull == "":
						lastFull = it.ID
					case rng.IntN(2) == 0:
						it.Prior = lastFull // diff
					default:
						it.Prior = prev // incr
					}
					prev = it.ID
					h.add(it, p, ny)
					left = append(left, it)
					ds := retain(left, p, ny)
					checkKept(t, ds, h, p)
					left = left[:0]
					for _, d := range ds {
						if d.Keep() {
							left = append(left, d.Item)
						}
					}
					if again := retain(left, p, ny); len(kept(again)) != len(left) {
						t.Fatalf("step %d: applying retention twice removed more: %d of %d kept", steps, len(kept(again)), len(left))
					}
					steps++
					maxLeft = max(maxLeft, len(left))
				}
				if day.YearDay() == 1 {
					var whole []string
					for _, d := range retain(h.items, p, ny) {
						if d.Keep() {
							whole = append(whole, d.ID)
						}
					}
					var ids []string
					for _, it := range left {
						ids = append(ids, it.ID)
					}
					if !slices.Equal(ids, whole) {
						t.Fatalf("%s: kept incrementally %v; retention over the whole history keeps %v", day.Format("2006-01-02"), ids, whole)
					}
				}
			}
			if steps < 12000 {
				t.Fatalf("only %d backups simulated", steps)
			}
			t.Logf("%d backups over 30 years; at most %d kept at once, %d at the end", steps, maxLeft, len(left))
		})
	}
}

func checkKept(t *testing.T, ds []Decision, h *history, p Policy) {
	t.Helper()
	newest := h.items[len(h.items)-1].ID
	byID := map[string]Decision{}
	for _, d := range ds {
		byID[d.ID] = d
	}
	if d := byID[newest]; !d.Keep() || d.Reasons[0] != "newest" {
		t.Fatalf("newest backup %s not kept as newest: %v", newest, d.Reasons)
	}
	for _, tr := range p.tiers() {
		want := h.buckets[tr.name]
		want = want[max(0, len(want)-tr.count):]
		if tr.count == 0 {
			want = nil
		}
		var got []bucketNewest
		for _, d := range ds {
			for _, r := range d.Reasons {
				if b, ok := strings.CutPrefix(r, tr.name+" "); ok {
					got = append(got, bucketNewest{b, d.ID})
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("after %s: %s tier keeps %v; want %v", newest, tr.name, got, want)
		}
	}
	for _, d := range ds {
		if !d.Keep() {
			continue
		}
		for prior := d.Prior; prior != ""; prior = byID[prior].Prior {
			if !byID[prior].Keep() {
				t.Fatalf("after %s: %s is kept but %s, which it needs, is not", newest, d.ID, prior)
			}
		}
	}
}
