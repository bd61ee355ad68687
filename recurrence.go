package main

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// Recurring tasks (contract §9): the iCalendar RRULE subset a todo list needs, and the
// occurrences it gives in the owner's time zone. Written here rather than taken from a
// library: the subset is small, and the reference comparison with python-dateutil
// (recurrence_test.go) is what shows it right either way.

// rrule is a parsed rule. Dates are handled as civil dates (time.Time at 00:00 UTC), so
// that day arithmetic never meets a time zone; the zone enters only when a wall time
// becomes an instant (instantIn).
type rrule struct {
	freq       string // DAILY, WEEKLY, MONTHLY, YEARLY
	interval   int
	byDay      []weekdayNum
	byMonthDay []int
	byMonth    []time.Month
	count      int        // 0: none
	until      *time.Time // UTC; nil: none
}

// weekdayNum is a BYDAY entry: a weekday, and for MONTHLY and YEARLY rules an ordinal
// (1MO the first Monday, -1FR the last Friday; 0 every one).
type weekdayNum struct {
	n  int
	wd time.Weekday
}

var rruleDays = map[string]time.Weekday{"MO": time.Monday, "TU": time.Tuesday, "WE": time.Wednesday,
	"TH": time.Thursday, "FR": time.Friday, "SA": time.Saturday, "SU": time.Sunday}

// parseRRule reads a rule of the subset, upper-cased; the message says what is wrong.
func parseRRule(s string) (rrule, string) {
	r := rrule{interval: 1}
	if s == "" {
		return r, "must not be empty"
	}
	if len(s) > 500 {
		return r, "must be at most 500 characters"
	}
	s = strings.TrimPrefix(strings.ToUpper(s), "RRULE:")
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ";") {
		name, value, ok := strings.Cut(part, "=")
		if !ok || value == "" {
			return r, "part " + strconv.Quote(part) + " is not NAME=VALUE"
		}
		if seen[name] {
			return r, name + " is given twice"
		}
		seen[name] = true
		switch name {
		case "FREQ":
			if !slices.Contains([]string{"DAILY", "WEEKLY", "MONTHLY", "YEARLY"}, value) {
				return r, "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY"
			}
			r.freq = value
		case "INTERVAL":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > 999 {
				return r, "INTERVAL must be a whole number from 1 to 999"
			}
			r.interval = n
		case "COUNT":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > 1000 {
				return r, "COUNT must be a whole number from 1 to 1000"
			}
			r.count = n
		case "UNTIL":
			t, err := time.Parse("20060102T150405Z", value)
			if err != nil {
				return r, "UNTIL must be a UTC date-time such as 20261231T235959Z"
			}
			r.until = &t
		case "BYDAY":
			for d := range strings.SplitSeq(value, ",") {
				if len(d) < 2 {
					return r, "BYDAY entry " + strconv.Quote(d) + " is not a weekday (MO…SU, with an optional ordinal such as 1MO or -1FR)"
				}
				wd, ok := rruleDays[d[len(d)-2:]]
				n := 0
				if num := d[:len(d)-2]; num != "" {
					v, err := strconv.Atoi(num)
					if err != nil || v == 0 || v < -53 || v > 53 || num[0] == '0' {
						ok = false
					}
					n = v
				}
				if !ok {
					return r, "BYDAY entry " + strconv.Quote(d) + " is not a weekday (MO…SU, with an optional ordinal such as 1MO or -1FR)"
				}
				r.byDay = append(r.byDay, weekdayNum{n, wd})
			}
		case "BYMONTHDAY":
			for d := range strings.SplitSeq(value, ",") {
				n, err := strconv.Atoi(d)
				if err != nil || n == 0 || n < -31 || n > 31 {
					return r, "BYMONTHDAY entries must be 1 to 31 or -1 to -31"
				}
				r.byMonthDay = append(r.byMonthDay, n)
			}
		case "BYMONTH":
			for m := range strings.SplitSeq(value, ",") {
				n, err := strconv.Atoi(m)
				if err != nil || n < 1 || n > 12 {
					return r, "BYMONTH entries must be 1 to 12"
				}
				r.byMonth = append(r.byMonth, time.Month(n))
			}
		case "BYSETPOS", "BYYEARDAY", "BYWEEKNO", "BYHOUR", "BYMINUTE", "BYSECOND", "WKST", "RSCALE", "SKIP":
			return r, name + " is not supported (supported: FREQ, INTERVAL, BYDAY, BYMONTHDAY, BYMONTH, COUNT, UNTIL)"
		default:
			return r, strconv.Quote(name) + " is not a rule part (supported: FREQ, INTERVAL, BYDAY, BYMONTHDAY, BYMONTH, COUNT, UNTIL)"
		}
	}
	switch {
	case r.freq == "":
		return r, "FREQ is required"
	case r.count > 0 && r.until != nil:
		return r, "COUNT and UNTIL cannot both be given"
	case r.freq == "WEEKLY" && len(r.byMonthDay) > 0:
		return r, "BYMONTHDAY cannot be used with FREQ=WEEKLY"
	}
	for _, d := range r.byDay {
		switch {
		case d.n != 0 && (r.freq == "DAILY" || r.freq == "WEEKLY"):
			return r, "BYDAY ordinals (such as 1MO) need FREQ=MONTHLY or YEARLY"
		case d.n != 0 && len(r.byMonthDay) > 0:
			return r, "BYDAY ordinals cannot be combined with BYMONTHDAY"
		case (d.n > 5 || d.n < -5) && (r.freq == "MONTHLY" || len(r.byMonth) > 0):
			return r, "BYDAY ordinals within a month are -5 to 5"
		}
	}
	return r, ""
}

func civilDate(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

func daysIn(y int, m time.Month) int { return civilDate(y, m+1, 0).Day() }

// monthDay resolves a BYMONTHDAY entry in a month: 0 when the month has no such day.
func monthDay(y int, m time.Month, n int) int {
	days := daysIn(y, m)
	if n < 0 {
		n = days + 1 + n
	}
	if n < 1 || n > days {
		return 0
	}
	return n
}

// weekdaysIn expands a BYDAY entry over the days first..last (inclusive civil dates).
func weekdaysIn(first, last time.Time, d weekdayNum) []time.Time {
	var all []time.Time
	for t := first.AddDate(0, 0, (int(d.wd)-int(first.Weekday())+7)%7); !t.After(last); t = t.AddDate(0, 0, 7) {
		all = append(all, t)
	}
	switch {
	case d.n == 0:
		return all
	case d.n > 0 && d.n <= len(all):
		return all[d.n-1 : d.n]
	case d.n < 0 && -d.n <= len(all):
		return all[len(all)+d.n : len(all)+d.n+1]
	}
	return nil
}

func (r rrule) dayAllowed(t time.Time) bool {
	if len(r.byMonth) > 0 && !slices.Contains(r.byMonth, t.Month()) {
		return false
	}
	if len(r.byMonthDay) > 0 && !slices.ContainsFunc(r.byMonthDay, func(n int) bool { return monthDay(t.Year(), t.Month(), n) == t.Day() }) {
		return false
	}
	if len(r.byDay) > 0 && !slices.ContainsFunc(r.byDay, func(d weekdayNum) bool { return d.wd == t.Weekday() }) {
		return false
	}
	return true
}

// period answers the dates of the k-th period of the rule after start's (each a day, a
// week from Monday, a month or a year, INTERVAL apart), sorted.
func (r rrule) period(start time.Time, k int) []time.Time {
	var days []time.Time
	switch r.freq {
	case "DAILY":
		if d := start.AddDate(0, 0, k*r.interval); r.dayAllowed(d) {
			days = []time.Time{d}
		}
	case "WEEKLY":
		monday := start.AddDate(0, 0, -((int(start.Weekday())+6)%7)+7*k*r.interval)
		for i := range 7 {
			d := monday.AddDate(0, 0, i)
			if len(r.byDay) == 0 && d.Weekday() == start.Weekday() || len(r.byDay) > 0 && r.dayAllowed(d) {
				days = append(days, d)
			}
		}
		if len(r.byDay) == 0 { // the start's weekday, limited by BYMONTH alone
			days = slices.DeleteFunc(days, func(d time.Time) bool { return !r.dayAllowed(d) })
		}
	case "MONTHLY":
		first := civilDate(start.Year(), start.Month()+time.Month(k*r.interval), 1)
		if len(r.byMonth) > 0 && !slices.Contains(r.byMonth, first.Month()) {
			return nil
		}
		days = r.daysOfMonth(first, start)
	case "YEARLY":
		y := start.Year() + k*r.interval
		switch {
		case len(r.byMonthDay) > 0 || len(r.byMonth) > 0:
			months := r.byMonth
			if len(months) == 0 {
				months = []time.Month{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
			}
			for _, m := range months {
				days = append(days, r.daysOfMonth(civilDate(y, m, 1), start)...)
			}
		case len(r.byDay) > 0: // ordinals count within the year
			for _, d := range r.byDay {
				days = append(days, weekdaysIn(civilDate(y, 1, 1), civilDate(y, 12, 31), d)...)
			}
		default:
			if start.Day() <= daysIn(y, start.Month()) {
				days = []time.Time{civilDate(y, start.Month(), start.Day())}
			}
		}
	}
	slices.SortFunc(days, func(a, b time.Time) int { return a.Compare(b) })
	return slices.CompactFunc(days, func(a, b time.Time) bool { return a.Equal(b) })
}

// daysOfMonth is the days a MONTHLY rule (or a YEARLY one, month by month) gives in the
// month starting at first: BYMONTHDAY (limited by plain BYDAY), else BYDAY with ordinals
// counted in the month, else the start's day of the month (none if the month lacks it).
func (r rrule) daysOfMonth(first, start time.Time) []time.Time {
	y, m := first.Year(), first.Month()
	var days []time.Time
	switch {
	case len(r.byMonthDay) > 0:
		for _, n := range r.byMonthDay {
			if d := monthDay(y, m, n); d > 0 {
				t := civilDate(y, m, d)
				if len(r.byDay) == 0 || r.dayAllowed(t) {
					days = append(days, t)
				}
			}
		}
	case len(r.byDay) > 0:
		for _, d := range r.byDay {
			days = append(days, weekdaysIn(first, civilDate(y, m, daysIn(y, m)), d)...)
		}
	default:
		if start.Day() <= daysIn(y, m) {
			days = []time.Time{civilDate(y, m, start.Day())}
		}
	}
	return days
}

// periodsBetween is how many whole periods of the rule lie between two civil dates, so
// that a search can start near a date far from the series' start.
func (r rrule) periodsBetween(start, t time.Time) int {
	var n int
	switch r.freq {
	case "DAILY":
		n = int(t.Sub(start).Hours() / 24)
	case "WEEKLY":
		n = int(t.Sub(start).Hours()/24) / 7
	case "MONTHLY":
		n = (t.Year()-start.Year())*12 + int(t.Month()) - int(start.Month())
	case "YEARLY":
		n = t.Year() - start.Year()
	}
	return max(0, n/r.interval-1)
}

// searchYears bounds a search: a rule that can never match (BYMONTH=2;BYMONTHDAY=30)
// ends it rather than looping, and one that matches once in decades
// (BYMONTH=2;BYMONTHDAY=29;BYDAY=FR) is still found. At most some 36,500 days are
// looked at, a few milliseconds, and only for such rules.
const searchYears = 100

// wallTimes answers up to n occurrence wall times of the rule for a series starting at
// the wall time start (its date and time of day), strictly after the wall time after, in
// order, ignoring COUNT and UNTIL. A start that the rule does not match is not itself
// one of them (the task that starts the series exists already).
func (r rrule) wallTimes(start, after time.Time, n int) []time.Time {
	startDate := civilDate(start.Year(), start.Month(), start.Day())
	tod := start.Sub(startDate)
	var out []time.Time
	afterDate := civilDate(after.Year(), after.Month(), after.Day())
	last := r.periodsBetween(startDate, afterDate.AddDate(searchYears, 0, 0)) + 2
	for k := r.periodsBetween(startDate, afterDate); k <= last && len(out) < n; k++ {
		for _, d := range r.period(startDate, k) {
			if w := d.Add(tod); !d.Before(startDate) && w.After(after) && len(out) < n {
				out = append(out, w)
			}
		}
	}
	return out
}

// instantIn is the instant of a wall time in loc, by RFC 5545 §3.3.5: a wall time in a
// gap (spring forward) is read with the offset before the gap, which moves it forward by
// the gap's length; one in an overlap (fall back) is the first of its two instants.
func instantIn(wall time.Time, loc *time.Location) time.Time {
	asUTC := time.Date(wall.Year(), wall.Month(), wall.Day(), wall.Hour(), wall.Minute(), wall.Second(), 0, time.UTC)
	_, before := asUTC.Add(-48 * time.Hour).In(loc).Zone()
	_, later := asUTC.Add(48 * time.Hour).In(loc).Zone()
	best := time.Time{}
	for _, off := range []int{before, later} {
		t := asUTC.Add(-time.Duration(off) * time.Second)
		lt := t.In(loc)
		if lt.Year() == wall.Year() && lt.YearDay() == wall.YearDay() && lt.Hour() == wall.Hour() && lt.Minute() == wall.Minute() && lt.Second() == wall.Second() &&
			(best.IsZero() || t.Before(best)) {
			best = t
		}
	}
	if best.IsZero() { // in a gap
		best = asUTC.Add(-time.Duration(before) * time.Second)
	}
	return best.In(loc)
}

// nextOccurrence is the due date of the task after one due at due, in a series whose
// first task was due at seriesStart, for an owner in loc: the first occurrence after due,
// or false when UNTIL has passed or the rule has no more. COUNT is the caller's (it
// counts down from task to task).
func (r rrule) nextOccurrence(seriesStart, due time.Time, loc *time.Location) (time.Time, bool) {
	start := wallOf(seriesStart.In(loc))
	after := wallOf(due.In(loc))
	for _, w := range r.wallTimes(start, after.Add(-time.Second), 8) {
		t := instantIn(w, loc)
		if !t.After(due) {
			continue
		}
		if r.until != nil && t.After(*r.until) {
			return time.Time{}, false
		}
		return t, true
	}
	return time.Time{}, false
}

// wallOf is t's wall clock as a UTC time, for civil arithmetic.
func wallOf(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
}
