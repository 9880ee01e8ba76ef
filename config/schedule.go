package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// AccessTokenLifetime is the life of a Stora access token (2 hours). renew_before must be shorter,
// or every pass would rotate every client.
const AccessTokenLifetime = 2 * time.Hour

// parseSchedule parses a 5-field cron spec or a descriptor (@hourly, @every 10m), with an
// optional CRON_TZ= or TZ= prefix. Without a prefix the zone is UTC, not the machine's.
// A schedule that never runs, or an @every interval under one second, is an error.
func parseSchedule(spec string) (cron.Schedule, error) {
	zone, rest := "CRON_TZ=UTC", spec
	if strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "TZ=") {
		var ok bool
		if zone, rest, ok = strings.Cut(spec, " "); !ok { // cron v3 panics on a bare zone
			return nil, errors.New("a time zone prefix needs a schedule after it")
		}
	}
	rest = strings.TrimSpace(rest)
	if every, ok := strings.CutPrefix(rest, "@every "); ok {
		// cron rounds an interval under a second up to one second; refuse it instead.
		every = strings.TrimSpace(every)
		d, err := time.ParseDuration(every)
		if err != nil {
			return nil, fmt.Errorf("@every needs a duration such as %s, not %q", durationLike(every, "10m"), every)
		}
		if d < time.Second {
			return nil, fmt.Errorf("@every needs an interval of at least 1s, not %v", d)
		}
	}
	s, err := cron.ParseStandard(zone + " " + rest)
	if err != nil {
		return nil, err
	}
	if s.Next(time.Now()).IsZero() {
		return nil, errors.New("the schedule never runs")
	}
	return s, nil
}

// gapOver returns a gap between two consecutive runs of s longer than limit, looking over the
// four years after from (long enough for yearly and leap-day schedules), or 0 when there is none.
// It jumps limit/2 at a time, so it costs a few calls to Next per limit of time, however often the
// schedule runs.
func gapOver(s cron.Schedule, from time.Time, limit time.Duration) time.Duration {
	if every, ok := s.(cron.ConstantDelaySchedule); ok {
		if every.Delay > limit {
			return every.Delay
		}
		return 0
	}
	end := from.AddDate(4, 0, 1)
	t := s.Next(from)
	if t.IsZero() || t.After(end) {
		return end.Sub(from)
	}
	for t.Before(end) {
		// n is the first run at or after t+limit/2. A gap longer than limit that starts in
		// [t, t+limit/2) ends at n; find its start by walking the (few) runs before t+limit/2.
		half := t.Add(limit / 2)
		n := s.Next(half.Add(-time.Second))
		if n.IsZero() {
			return end.Sub(t)
		}
		if n.Sub(t) > limit {
			last := t
			for r := s.Next(t); r.Before(half); r = s.Next(r) {
				last = r
			}
			if g := n.Sub(last); g > limit {
				return g
			}
		}
		t = n
	}
	return 0
}
