package config

import (
	"errors"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// parseSchedule parses a 5-field cron spec or a descriptor (@hourly, @every 10m), with an
// optional CRON_TZ= or TZ= prefix. Without a prefix the zone is UTC, not the machine's.
func parseSchedule(spec string) (cron.Schedule, error) {
	if strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "TZ=") {
		if !strings.Contains(spec, " ") { // cron v3 panics on a zone with nothing after it
			return nil, errors.New("a time zone prefix needs a schedule after it")
		}
	} else {
		spec = "CRON_TZ=UTC " + spec
	}
	return cron.ParseStandard(spec)
}

// maxGap returns the longest interval between two consecutive runs of s over the year after
// from, looking at no more than 20,000 runs (two weeks of a schedule that runs every minute).
func maxGap(s cron.Schedule, from time.Time) time.Duration {
	if every, ok := s.(cron.ConstantDelaySchedule); ok {
		return every.Delay
	}
	var gap time.Duration
	end := from.AddDate(1, 0, 1)
	prev := s.Next(from)
	for i := 0; i < 20_000 && !prev.IsZero() && prev.Before(end); i++ {
		next := s.Next(prev)
		if next.IsZero() {
			break
		}
		gap = max(gap, next.Sub(prev))
		prev = next
	}
	return gap
}
