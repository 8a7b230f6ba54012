package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Cron is a 5-field cron schedule (minute hour day-of-month month
// day-of-week) as github.com/robfig/cron/v3's ParseStandard reads it. As in
// Vixie cron, when both day fields are restricted a day matching either one
// is due. Only its parser and its Next are used: its scheduler reads the
// wall clock, and pgwarden's scheduler must run on a clock tests move.
type Cron struct {
	s cron.Schedule
}

var cronFields = []string{"minute", "hour", "day of month", "month", "day of week"}

// ParseCron reads a 5-field cron expression. Descriptors (@daily, @every)
// and a TZ= prefix are refused: the time zone is backup.timezone, and a
// schedule an operator reads must say when it runs.
func ParseCron(s string) (Cron, error) {
	f := strings.Fields(s)
	if len(f) != 5 {
		return Cron{}, fmt.Errorf("want 5 fields (minute hour day-of-month month day-of-week), got %d", len(f))
	}
	sched, err := cron.ParseStandard(strings.Join(f, " "))
	if err == nil {
		return Cron{s: sched}, nil
	}
	// The parser does not say which field it refused: find it, so the
	// message points at it.
	for i := range f {
		probe := []string{"*", "*", "*", "*", "*"}
		probe[i] = f[i]
		if _, ferr := cron.ParseStandard(strings.Join(probe, " ")); ferr != nil {
			return Cron{}, fmt.Errorf("%s field %q: %v", cronFields[i], f[i], ferr)
		}
	}
	return Cron{}, err
}

// Next is the first time strictly after t, in t's location, that the
// schedule is due; zero when it never is (e.g. 30 February).
func (c Cron) Next(t time.Time) time.Time {
	if c.s == nil {
		return time.Time{}
	}
	return c.s.Next(t)
}
