package backup

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/internal/testlog"
)

// simClock is moved by the test only.
type simClock struct{ now time.Time }

func (c *simClock) Now() time.Time                         { return c.now }
func (c *simClock) After(d time.Duration) <-chan time.Time { return make(chan time.Time) }

// simJobs takes dur[kind] of simulated time per job; a leader change that
// falls inside a job stops it there (its term's context is cancelled), as
// losing the leader key stops the real ones.
type simJobs struct {
	clock  *simClock
	dur    map[string]time.Duration
	cutAt  time.Time
	cut    context.CancelFunc
	done   map[string]map[time.Time]int
	starts int
	busy   bool // another job holds the backup lock
}

func (j *simJobs) RunJob(ctx context.Context, kind string, slot time.Time) error {
	if j.busy {
		return fmt.Errorf("%w: a manual backup", ErrRunning)
	}
	j.starts++
	end := j.clock.now.Add(j.dur[kind])
	if !j.cutAt.IsZero() && end.After(j.cutAt) {
		j.clock.now = j.cutAt
		j.cut()
		return ctx.Err()
	}
	j.clock.now = end
	j.done[kind][slot.UTC()]++
	return nil
}

func mustCron(t *testing.T, s string) Cron {
	t.Helper()
	c, err := config.ParseCron(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSchedulerLeaderChanges runs 60 simulated days of schedules, the leader
// changing every 1 to 5 hours (sometimes in the middle of a job, which then
// stops), each leader ticking when its scheduler would wake: every slot of every kind ran to its end
// exactly once.
func TestSchedulerLeaderChanges(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	specs := map[string]string{"full": "0 1 * * 0", "diff": "0 1 * * 1-6", "incr": "30 */2 * * *", "logical": "15 3 * * *", "drill": "0 5 * * 6"}
	scheds := map[string]Cron{}
	for k, s := range specs {
		scheds[k] = mustCron(t, s)
	}
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, loc) // DST starts on 29 March
	end := start.AddDate(0, 0, 60)
	clock := &simClock{now: start}
	mem := dcs.NewMemoryCluster(clock.Now)
	jobs := &simJobs{clock: clock, done: map[string]map[time.Time]int{},
		dur: map[string]time.Duration{"full": 40 * time.Minute, "diff": 12 * time.Minute, "incr": 3 * time.Minute, "logical": 9 * time.Minute, "drill": 25 * time.Minute}}
	for k := range specs {
		jobs.done[k] = map[time.Time]int{}
	}
	members := []string{"node1", "node2", "node3"}
	schedulers := map[string]*scheduler{}
	for _, m := range members {
		schedulers[m] = &scheduler{Member: m, Schedules: scheds, Location: loc, Clock: clock, Store: mem.Client(m, 10*time.Second),
			Jobs: jobs, Log: testlog.New(t), RetryEvery: time.Minute}
	}
	rng := rand.New(rand.NewPCG(60, 1))
	changes, interrupted := 0, 0
	for clock.now.Before(end) {
		leader := schedulers[members[changes%len(members)]]
		ctx, cancel := context.WithCancel(context.Background())
		termEnd := clock.now.Add(time.Duration(60+rng.IntN(241)) * time.Minute)
		jobs.cutAt, jobs.cut = termEnd, cancel
		for steps := 0; clock.now.Before(termEnd) && ctx.Err() == nil && steps < 10000; steps++ {
			wake := leader.tick(ctx, clock.now)
			if ctx.Err() != nil {
				interrupted++
				break
			}
			// As run waits: until the next slot, a second at least, an hour
			// at most.
			clock.now = clock.now.Add(min(max(wake.Sub(clock.now), time.Second), time.Hour))
		}
		cancel()
		clock.now = termEnd
		changes++
	}
	if changes < 60*24/5 || interrupted == 0 {
		t.Fatalf("%d leader changes, %d of them in the middle of a job: the simulation did not test what it claims", changes, interrupted)
	}
	// The slots of the 60 days, from the first leader's first sight of
	// each schedule (its start) to the last tick before the end.
	total := 0
	for kind, cr := range scheds {
		last := end.Add(-time.Hour) // the end may fall inside a job
		n := 0
		for slot := cr.Next(start); slot.Before(last); slot = cr.Next(slot) {
			if got := jobs.done[kind][slot.UTC()]; got != 1 {
				t.Errorf("%s slot %s ran %d times; want exactly once", kind, slot.Format(time.RFC3339), got)
			}
			n++
		}
		for slot, c := range jobs.done[kind] {
			if !cr.Next(slot.In(loc).Add(-time.Second)).Equal(slot) {
				t.Errorf("%s ran for %s (%d times), which is not a slot of %q", kind, slot, c, specs[kind])
			}
		}
		total += n
	}
	t.Logf("%d slots over 60 days, %d leader changes (%d in the middle of a job), %d job starts", total, changes, interrupted, jobs.starts)
}

// TestSchedulerOutage: slots missed while no leader ran collapse into one
// run of the newest, when a leader is back; a slot owed because the backup
// lock was taken (a manual backup) runs once the lock is free.
func TestSchedulerOutage(t *testing.T) {
	start := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	clock := &simClock{now: start}
	mem := dcs.NewMemoryCluster(clock.Now)
	jobs := &simJobs{clock: clock, done: map[string]map[time.Time]int{"incr": {}}, dur: map[string]time.Duration{"incr": time.Minute}}
	s := &scheduler{Member: "node1", Schedules: map[string]Cron{"incr": mustCron(t, "0 * * * *")}, Location: time.UTC, Clock: clock,
		Store: mem.Client("node1", 10*time.Second), Jobs: jobs, Log: testlog.New(t), RetryEvery: time.Minute}
	ctx := context.Background()
	if wake := s.tick(ctx, clock.now); !wake.Equal(start.Add(time.Hour)) {
		t.Fatalf("first sight: next wake %s; want the first slot 01:00", wake)
	}
	clock.now = start.Add(30*time.Hour + 20*time.Minute) // no leader for a day and more
	s.tick(ctx, clock.now)
	if len(jobs.done["incr"]) != 1 || jobs.done["incr"][start.Add(30*time.Hour)] != 1 {
		t.Fatalf("after the outage ran %v; want only the newest missed slot, 06:00 the next day", jobs.done["incr"])
	}
	jobs.busy = true
	clock.now = start.Add(31 * time.Hour)
	if wake := s.tick(ctx, clock.now); !wake.Equal(clock.now.Add(time.Minute)) {
		t.Fatalf("lock taken: wake %s; want a retry a minute later", wake)
	}
	jobs.busy = false
	clock.now = clock.now.Add(time.Minute)
	s.tick(ctx, clock.now)
	if jobs.done["incr"][start.Add(31*time.Hour)] != 1 {
		t.Fatalf("the slot owed while the lock was taken did not run: %v", jobs.done["incr"])
	}
	c, err := mem.Client("x", 10*time.Second).Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := c.BackupRuns["incr"].Schedule; st == nil || !st.Done || !st.OK || !st.Slot.Equal(start.Add(31*time.Hour)) {
		t.Fatalf("stored schedule state %+v; want the 07:00 slot done", st)
	}
}

// TestSchedulerReload: schedules sent on Reload (SIGHUP) replace the ones
// run started with at once, without waiting for its next wake-up: a kind
// added starts from now (its baseline slot is written).
func TestSchedulerReload(t *testing.T) {
	clock := &simClock{now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	mem := dcs.NewMemoryCluster(clock.Now)
	reload := make(chan map[string]Cron, 1)
	s := &scheduler{Member: "node1", Schedules: map[string]Cron{}, Location: time.UTC, Clock: clock, Store: mem.Client("node1", 10*time.Second),
		Jobs: &simJobs{clock: clock}, Log: testlog.New(t), Reload: reload}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	defer func() { cancel(); <-done }()
	reload <- map[string]Cron{"logical": mustCron(t, "15 3 * * *")}
	reader := mem.Client("reader", 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := reader.Cluster(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st := c.BackupRuns["logical"].Schedule; st != nil {
			if !st.Slot.Equal(clock.now) || !st.Done {
				t.Fatalf("baseline of the reloaded schedule: %+v; want done at %s", st, clock.now)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the schedule sent on Reload never started within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
