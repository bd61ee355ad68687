package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// referenceZones are the time zones the reference comparison runs in: no DST, the usual
// spring-forward and fall-back at 02:00 and 01:00, a half-hour DST (Lord Howe), a zone that
// skipped a whole day (Apia, 2011-12-30), and a half-hour offset without DST (Kolkata).
var referenceZones = []string{"UTC", "America/New_York", "Europe/London", "Europe/Berlin",
	"Australia/Lord_Howe", "Pacific/Apia", "Asia/Kolkata"}

type referenceCase struct {
	Rule  string `json:"rule"`
	Start string `json:"start"`
	Zone  string `json:"zone"`
	N     int    `json:"n"`
}

// randomRule is a rule of the subset, drawn to reach every expansion: each FREQ, plain and
// ordinal BYDAY, negative and month-end BYMONTHDAY, BYMONTH, INTERVAL, and sometimes UNTIL.
func randomRule(r *rand.Rand, start time.Time) string {
	freqs := []string{"DAILY", "WEEKLY", "MONTHLY", "YEARLY"}
	freq := freqs[r.IntN(4)]
	parts := []string{"FREQ=" + freq}
	if r.IntN(2) == 0 {
		parts = append(parts, fmt.Sprintf("INTERVAL=%d", 1+r.IntN(4)))
	}
	days := []string{"MO", "TU", "WE", "TH", "FR", "SA", "SU"}
	pick := func(n int, f func() string) string {
		var out []string
		for range n {
			if v := f(); !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
		return strings.Join(out, ",")
	}
	useMonthDay := freq != "WEEKLY" && r.IntN(3) == 0
	if useMonthDay {
		parts = append(parts, "BYMONTHDAY="+pick(1+r.IntN(3), func() string {
			if r.IntN(3) == 0 {
				return fmt.Sprint(-1 - r.IntN(5))
			}
			return fmt.Sprint(1 + r.IntN(31))
		}))
	}
	if r.IntN(2) == 0 || freq == "WEEKLY" && r.IntN(3) > 0 {
		ordinals := (freq == "MONTHLY" || freq == "YEARLY") && !useMonthDay && r.IntN(2) == 0
		parts = append(parts, "BYDAY="+pick(1+r.IntN(3), func() string {
			d := days[r.IntN(7)]
			if ordinals {
				n := 1 + r.IntN(4)
				if r.IntN(3) == 0 {
					n = -n
				}
				return fmt.Sprint(n) + d
			}
			return d
		}))
	}
	if r.IntN(4) == 0 || freq == "YEARLY" && r.IntN(2) == 0 {
		parts = append(parts, "BYMONTH="+pick(1+r.IntN(3), func() string { return fmt.Sprint(1 + r.IntN(12)) }))
	}
	if r.IntN(5) == 0 {
		parts = append(parts, "UNTIL="+start.AddDate(0, 1+r.IntN(30), r.IntN(28)).UTC().Format("20060102T150405Z"))
	}
	r.Shuffle(len(parts)-1, func(i, j int) { parts[i+1], parts[j+1] = parts[j+1], parts[i+1] })
	return strings.Join(parts, ";")
}

// referenceAnswers runs the cases through python-dateutil (testdata/rrule/reference.py,
// with Debian's python3-dateutil).
func referenceAnswers(t *testing.T, cases []referenceCase) []json.RawMessage {
	t.Helper()
	var in strings.Builder
	for _, c := range cases {
		b, _ := json.Marshal(c)
		in.Write(append(b, '\n'))
	}
	cmd := exec.Command("/usr/bin/python3", "testdata/rrule/reference.py")
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("the python-dateutil reference (apt-get install python3-dateutil) failed: %v\n%s", err, stderr)
	}
	var answers []json.RawMessage
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		answers = append(answers, json.RawMessage(sc.Text()))
	}
	if len(answers) != len(cases) {
		t.Fatalf("%d answers for %d cases", len(answers), len(cases))
	}
	return answers
}

// ours is the service's answer to a case: each occurrence's wall time and UTC instant,
// up to n, cut at UNTIL.
func ours(t *testing.T, c referenceCase) [][2]string {
	t.Helper()
	r, msg := parseRRule(c.Rule)
	if msg != "" {
		t.Fatalf("%s: %s", c.Rule, msg)
	}
	loc, err := time.LoadLocation(c.Zone)
	if err != nil {
		t.Fatal(err)
	}
	start, err := time.Parse("2006-01-02T15:04:05", c.Start)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for _, w := range r.wallTimes(start, start, c.N) {
		at := instantIn(w, loc)
		if r.until != nil && at.After(*r.until) {
			break
		}
		out = append(out, [2]string{w.Format("2006-01-02T15:04:05"), at.UTC().Format("2006-01-02T15:04:05Z")})
	}
	return out
}

// TestRecurrenceMatchesTheReference: thousands of generated rules, start dates and times
// (02:30 and 01:30 among them, in and around DST changes) in seven time zones give the
// same occurrences, wall time and instant, as python-dateutil's rrule.
func TestRecurrenceMatchesTheReference(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5545, 2026))
	var cases []referenceCase
	for i := range 3000 {
		day := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, r.IntN(365*20))
		times := []time.Duration{9 * time.Hour, 2*time.Hour + 30*time.Minute, 1*time.Hour + 30*time.Minute,
			time.Duration(r.IntN(24*60)) * time.Minute}
		start := day.Add(times[r.IntN(len(times))])
		cases = append(cases, referenceCase{Rule: randomRule(r, start), Start: start.Format("2006-01-02T15:04:05"),
			Zone: referenceZones[i%len(referenceZones)], N: 25})
	}
	// Around the DST changes themselves, every day of those weeks.
	for _, z := range []struct {
		zone string
		day  time.Time
	}{
		{"America/New_York", time.Date(2026, 3, 5, 2, 30, 0, 0, time.UTC)},
		{"America/New_York", time.Date(2026, 10, 29, 1, 30, 0, 0, time.UTC)},
		{"Europe/London", time.Date(2026, 3, 26, 1, 30, 0, 0, time.UTC)},
		{"Australia/Lord_Howe", time.Date(2026, 10, 1, 2, 15, 0, 0, time.UTC)},
		{"Australia/Lord_Howe", time.Date(2026, 4, 1, 1, 45, 0, 0, time.UTC)},
		{"Pacific/Apia", time.Date(2011, 12, 27, 9, 0, 0, 0, time.UTC)},
	} {
		for _, rule := range []string{"FREQ=DAILY", "FREQ=WEEKLY;BYDAY=SU,MO", "FREQ=DAILY;INTERVAL=2", "FREQ=MONTHLY;BYDAY=1SU"} {
			cases = append(cases, referenceCase{Rule: rule, Start: z.day.Format("2006-01-02T15:04:05"), Zone: z.zone, N: 12})
		}
	}
	answers := referenceAnswers(t, cases)
	// python-dateutil 2.8 reads only the table of a zone file's transitions, which ends in
	// 2037, and then keeps the last offset; the service (Go's time package) follows the
	// zone's rule beyond. So the comparison stops at 2037.
	before2037 := func(occ [][2]string) [][2]string {
		return slices.DeleteFunc(slices.Clone(occ), func(o [2]string) bool { return o[0] >= "2037" || o[1] >= "2037" })
	}
	mismatches := 0
	for i, c := range cases {
		var want [][2]string
		if err := json.Unmarshal(answers[i], &want); err != nil {
			t.Errorf("%+v: the reference refused it: %s", c, answers[i])
			continue
		}
		if got := before2037(ours(t, c)); !slices.Equal(got, before2037(want)) {
			mismatches++
			if mismatches <= 10 {
				t.Errorf("%s from %s in %s:\n got %v\nwant %v", c.Rule, c.Start, c.Zone, got, want)
			}
		}
	}
	if mismatches > 0 {
		t.Errorf("%d of %d cases differ from the reference", mismatches, len(cases))
	}
}

// TestRecurrenceRFCExamples: the examples of RFC 5545 §3.8.5.3 that fall in the subset
// (America/New_York, 09:00), from their DTSTART, the first ones of each.
func TestRecurrenceRFCExamples(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		rule, start string
		want        []string // dates, all at 09:00
	}{
		{"FREQ=DAILY;COUNT=10", "1997-09-02", []string{"1997-09-02", "1997-09-03", "1997-09-04"}},
		{"FREQ=DAILY;INTERVAL=2", "1997-09-02", []string{"1997-09-02", "1997-09-04", "1997-09-06", "1997-09-08"}},
		{"FREQ=DAILY;INTERVAL=10;COUNT=5", "1997-09-02", []string{"1997-09-02", "1997-09-12", "1997-09-22", "1997-10-02", "1997-10-12"}},
		{"FREQ=YEARLY;UNTIL=20000131T140000Z;BYMONTH=1;BYDAY=SU,MO,TU,WE,TH,FR,SA", "1998-01-01", []string{"1998-01-01", "1998-01-02", "1998-01-03"}},
		{"FREQ=WEEKLY;INTERVAL=2", "1997-09-02", []string{"1997-09-02", "1997-09-16", "1997-09-30", "1997-10-14"}},
		{"FREQ=WEEKLY;COUNT=10;BYDAY=TU,TH", "1997-09-02", []string{"1997-09-02", "1997-09-04", "1997-09-09", "1997-09-11"}},
		{"FREQ=MONTHLY;COUNT=10;BYDAY=1FR", "1997-09-05", []string{"1997-09-05", "1997-10-03", "1997-11-07", "1997-12-05", "1998-01-02", "1998-02-06"}},
		{"FREQ=MONTHLY;INTERVAL=2;COUNT=10;BYDAY=1SU,-1SU", "1997-09-07", []string{"1997-09-07", "1997-09-28", "1997-11-02", "1997-11-30", "1998-01-04", "1998-01-25"}},
		{"FREQ=MONTHLY;COUNT=6;BYDAY=-2MO", "1997-09-22", []string{"1997-09-22", "1997-10-20", "1997-11-17", "1997-12-22", "1998-01-19", "1998-02-16"}},
		{"FREQ=MONTHLY;BYMONTHDAY=-3", "1997-09-28", []string{"1997-09-28", "1997-10-29", "1997-11-28", "1997-12-29", "1998-01-29", "1998-02-26"}},
		{"FREQ=MONTHLY;COUNT=10;BYMONTHDAY=2,15", "1997-09-02", []string{"1997-09-02", "1997-09-15", "1997-10-02", "1997-10-15"}},
		{"FREQ=YEARLY;COUNT=10;BYMONTH=6,7", "1997-06-10", []string{"1997-06-10", "1997-07-10", "1998-06-10", "1998-07-10"}},
		{"FREQ=YEARLY;BYDAY=20MO", "1997-05-19", []string{"1997-05-19", "1998-05-18", "1999-05-17"}},
		{"FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13", "1997-09-02", []string{"1998-02-13", "1998-03-13", "1998-11-13", "1999-08-13", "2000-10-13"}},
		{"FREQ=MONTHLY;BYDAY=SA;BYMONTHDAY=7,8,9,10,11,12,13", "1997-09-13", []string{"1997-09-13", "1997-10-11", "1997-11-08", "1997-12-13", "1998-01-10"}},
		{"FREQ=YEARLY;INTERVAL=4;BYMONTH=11;BYDAY=TU;BYMONTHDAY=2,3,4,5,6,7,8", "1996-11-05", []string{"1996-11-05", "2000-11-07", "2004-11-02"}},
		{"FREQ=MONTHLY;BYMONTHDAY=31", "2026-01-31", []string{"2026-01-31", "2026-03-31", "2026-05-31", "2026-07-31"}}, // months without a 31st are skipped
		{"FREQ=YEARLY", "2024-02-29", []string{"2024-02-29", "2028-02-29", "2032-02-29"}},                              // leap day: leap years only
	} {
		r, msg := parseRRule(c.rule)
		if msg != "" {
			t.Fatalf("%s: %s", c.rule, msg)
		}
		start, _ := time.Parse("2006-01-02T15:04", c.start+"T09:00")
		var got []string
		for _, w := range r.wallTimes(start, start.Add(-time.Second), len(c.want)) {
			if w.Hour() != 9 {
				t.Errorf("%s: %v is not at 09:00", c.rule, w)
			}
			got = append(got, w.Format(time.DateOnly))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s from %s: %v, want %v", c.rule, c.start, got, c.want)
		}
	}
}

// TestRecurrenceAcrossDST: 09:00 stays 09:00 local across both changes; a wall time in a
// gap moves forward by the gap's length for that occurrence only; one in an overlap is its
// first instance; Lord Howe's half-hour change and the day Apia skipped.
func TestRecurrenceAcrossDST(t *testing.T) {
	t.Parallel()
	at := func(zone, wall string) time.Time {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		w, err := time.ParseInLocation("2006-01-02 15:04", wall, loc)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	daily, _ := parseRRule("FREQ=DAILY")
	weekly, _ := parseRRule("FREQ=WEEKLY")
	for _, c := range []struct {
		name       string
		r          rrule
		zone       string
		start, due string
		want       string // RFC 3339
	}{
		{"09:00 before spring forward", weekly, "America/New_York", "2026-03-02 09:00", "2026-03-02 09:00", "2026-03-09T09:00:00-04:00"},
		{"09:00 before fall back", weekly, "America/New_York", "2026-10-26 09:00", "2026-10-26 09:00", "2026-11-02T09:00:00-05:00"},
		{"02:30 in the spring gap", daily, "America/New_York", "2026-03-07 02:30", "2026-03-07 02:30", "2026-03-08T03:30:00-04:00"},
		{"the day after the gap is 02:30 again", daily, "America/New_York", "2026-03-07 02:30", "2026-03-08 03:30", "2026-03-09T02:30:00-04:00"},
		{"01:30 in the autumn overlap: first instance", daily, "America/New_York", "2026-10-31 01:30", "2026-10-31 01:30", "2026-11-01T01:30:00-04:00"},
		{"then 01:30 standard time", daily, "America/New_York", "2026-10-31 01:30", "2026-11-01 01:30", "2026-11-02T01:30:00-05:00"},
		{"Europe/London 01:30 gap", daily, "Europe/London", "2026-03-28 01:30", "2026-03-28 01:30", "2026-03-29T02:30:00+01:00"},
		{"Lord Howe half-hour gap", daily, "Australia/Lord_Howe", "2026-10-03 02:15", "2026-10-03 02:15", "2026-10-04T02:45:00+11:00"},
		{"Apia skipped 2011-12-30", daily, "Pacific/Apia", "2011-12-29 09:00", "2011-12-29 09:00", "2011-12-31T09:00:00+14:00"},
		{"Kolkata, no DST", weekly, "Asia/Kolkata", "2026-03-02 09:00", "2026-03-02 09:00", "2026-03-09T09:00:00+05:30"},
	} {
		loc, _ := time.LoadLocation(c.zone)
		next, ok := c.r.nextOccurrence(at(c.zone, c.start), at(c.zone, c.due), loc)
		if !ok || next.Format(time.RFC3339) != c.want {
			t.Errorf("%s: %s (%t), want %s", c.name, next.Format(time.RFC3339), ok, c.want)
		}
	}
	until, _ := parseRRule("FREQ=DAILY;UNTIL=20260310T140000Z")
	loc, _ := time.LoadLocation("America/New_York")
	if next, ok := until.nextOccurrence(at("America/New_York", "2026-03-08 09:00"), at("America/New_York", "2026-03-10 09:00"), loc); ok {
		t.Errorf("an occurrence after UNTIL: %v", next)
	}
	if next, ok := until.nextOccurrence(at("America/New_York", "2026-03-08 09:00"), at("America/New_York", "2026-03-09 09:00"), loc); !ok ||
		next.Format(time.RFC3339) != "2026-03-10T09:00:00-04:00" {
		t.Errorf("the last occurrence before UNTIL: %v %t", next, ok)
	}
}

// TestRecurrenceRuleErrors: what is outside the subset or malformed says what is wrong.
func TestRecurrenceRuleErrors(t *testing.T) {
	t.Parallel()
	for rule, want := range map[string]string{
		"":                      "must not be empty",
		"INTERVAL=2":            "FREQ is required",
		"FREQ=HOURLY":           "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY",
		"FREQ=DAILY;INTERVAL=0": "INTERVAL must be a whole number from 1 to 999",
		"FREQ=DAILY;COUNT=1001": "COUNT must be a whole number from 1 to 1000",
		"FREQ=DAILY;COUNT=2;UNTIL=20270101T000000Z": "COUNT and UNTIL cannot both be given",
		"FREQ=DAILY;UNTIL=20270101":                 "UNTIL must be a UTC date-time such as 20261231T235959Z",
		"FREQ=WEEKLY;BYDAY=XX":                      `BYDAY entry "XX" is not a weekday`,
		"FREQ=WEEKLY;BYDAY=1MO":                     "BYDAY ordinals (such as 1MO) need FREQ=MONTHLY or YEARLY",
		"FREQ=MONTHLY;BYDAY=6MO":                    "BYDAY ordinals within a month are -5 to 5",
		"FREQ=MONTHLY;BYMONTHDAY=0":                 "BYMONTHDAY entries must be 1 to 31 or -1 to -31",
		"FREQ=WEEKLY;BYMONTHDAY=1":                  "BYMONTHDAY cannot be used with FREQ=WEEKLY",
		"FREQ=YEARLY;BYMONTH=13":                    "BYMONTH entries must be 1 to 12",
		"FREQ=DAILY;BYSETPOS=1":                     "BYSETPOS is not supported",
		"FREQ=DAILY;FREQ=WEEKLY":                    "FREQ is given twice",
		"FREQ=DAILY;X-NAME=1":                       `"X-NAME" is not a rule part`,
		"FREQ=DAILY;;":                              "is not NAME=VALUE",
	} {
		if _, msg := parseRRule(rule); !strings.Contains(msg, want) {
			t.Errorf("%q: %q, want %q", rule, msg, want)
		}
	}
	if _, msg := parseRRule("freq=weekly;byday=mo,we"); msg != "" {
		t.Errorf("lower case: %s", msg)
	}
}

// FuzzRRule: the parser never panics, and a rule it accepts always answers a next
// occurrence (or none) promptly, never before the due date.
func FuzzRRule(f *testing.F) {
	for _, s := range []string{"FREQ=WEEKLY;BYDAY=MO,WE", "FREQ=MONTHLY;BYDAY=-1FR;COUNT=3", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
		"FREQ=DAILY;UNTIL=20300101T000000Z", "FREQ=MONTHLY;BYMONTHDAY=-31,31", "FREQ=YEARLY;BYDAY=53MO"} {
		f.Add(s, int64(1_800_000_000))
	}
	loc, _ := time.LoadLocation("Europe/Berlin")
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		r, msg := parseRRule(s)
		if msg != "" {
			return
		}
		due := time.Unix(unix%4_000_000_000, 0)
		if next, ok := r.nextOccurrence(due, due, loc); ok && !next.After(due) {
			t.Fatalf("%s: next %v not after %v", s, next, due)
		}
	})
}

// TestUserTimezone: every user has a time zone, UTC until set; PATCH /auth/me sets an
// IANA name and refuses anything else with a 422 on timezone; Better Auth users too.
func TestUserTimezone(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, _ := env.registerUser("zoned@example.com")
	me := func(tok string) userJSON {
		var u userJSON
		env.do("GET", "/api/v1/auth/me", "", tok).want(200, "").json(&u)
		return u
	}
	if u := me(token); u.Timezone != "UTC" {
		t.Errorf("a new user's time zone is %q", u.Timezone)
	}
	var u userJSON
	env.do("PATCH", "/api/v1/auth/me", `{"timezone":"Europe/Berlin","name":"Zoe"}`, token).want(200, "").json(&u)
	if u.Timezone != "Europe/Berlin" || me(token).Timezone != "Europe/Berlin" {
		t.Errorf("after PATCH: %+v", u)
	}
	env.do("PATCH", "/api/v1/auth/me", `{"name":"Zoe B"}`, token).want(200, "")
	if u := me(token); u.Timezone != "Europe/Berlin" || *u.Name != "Zoe B" {
		t.Errorf("a name change moved the time zone: %+v", u)
	}
	for _, bad := range []string{`"Mars/Olympus_Mons"`, `"Local"`, `""`, `null`, `5`, `"../../etc/passwd"`, `"` + strings.Repeat("A", 70) + `"`} {
		e := env.do("PATCH", "/api/v1/auth/me", `{"timezone":`+bad+`,"name":"Changed"}`, token).want(422, "validation_error").envelope()
		if len(e.Errors) != 1 || e.Errors[0].Field != "timezone" {
			t.Errorf("timezone %s: %+v", bad, e.Errors)
		}
	}
	if u := me(token); u.Timezone != "Europe/Berlin" || *u.Name != "Zoe B" {
		t.Errorf("a refused PATCH changed the user: %+v", u)
	}

	key := newBAKey(t, "EdDSA")
	ba := newJWKSEnv(t, newJWKSServer(t, key))
	baToken := key.sign(t, baGoodClaims("zoned-ba"))
	ba.do("PATCH", "/api/v1/auth/me", `{"timezone":"Asia/Kolkata"}`, baToken).want(200, "").json(&u)
	if u.Timezone != "Asia/Kolkata" {
		t.Errorf("a Better Auth user's time zone: %+v", u)
	}
}

// TestRecurringTasks: a recurring task's completion creates its next occurrence (same
// title, description, priority, tags and rule, the next due date in the owner's zone,
// COUNT one less) and answers next_task_id; nothing after COUNT is spent; reopening and
// completing again, or a task created completed, create nothing; the list filter; the
// section 6 routes; bulk "mark all done"; and the counters stay exact.
func TestRecurringTasks(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, u := env.registerUser("recurring@example.com")
	env.do("PATCH", "/api/v1/auth/me", `{"timezone":"America/New_York"}`, token).want(200, "")
	get := func(id int64) wireTask {
		var w wireTask
		env.do("GET", env.taskPath(id), "", token).want(200, "").json(&w)
		return w
	}

	// 09:00 in New York on the Saturday before DST starts; daily, three in all.
	first := env.createTask(token, `{"title":"Water the plants","description":"balcony","priority":"high","tags":["Home"],
		"due_date":"2026-03-07T09:00:00-05:00","recurrence":"freq=daily;count=3"}`)
	if first.Recurrence == nil || *first.Recurrence != "FREQ=DAILY;COUNT=3" || first.NextTaskID != nil {
		t.Fatalf("created %+v", first)
	}
	var done wireTask
	env.do("PATCH", env.taskPath(first.ID)+"/complete", ``, token).want(200, "").json(&done)
	if done.NextTaskID == nil {
		t.Fatalf("completing a recurring task answered no next_task_id: %+v", done)
	}
	second := get(*done.NextTaskID)
	if second.Title != "Water the plants" || *second.Description != "balcony" || second.Priority != "high" ||
		!slices.Equal(second.Tags, []string{"home"}) || second.Completed || *second.Recurrence != "FREQ=DAILY;COUNT=2" ||
		!second.DueDate.Equal(time.Date(2026, 3, 8, 13, 0, 0, 0, time.UTC)) { // 09:00 EDT
		t.Fatalf("the next occurrence: %+v (due %v)", second, second.DueDate)
	}
	// Reopened and completed again: still the one successor.
	env.do("PATCH", env.taskPath(first.ID), `{"completed":false}`, token).want(200, "")
	env.do("PUT", env.taskPath(first.ID), `{"title":"Water the plants","completed":true,"due_date":"2026-03-07T09:00:00-05:00","recurrence":"FREQ=DAILY;COUNT=3"}`, token).want(200, "").json(&done)
	if done.NextTaskID == nil || *done.NextTaskID != second.ID {
		t.Fatalf("completing again: next_task_id %v, want %d", done.NextTaskID, second.ID)
	}
	env.do("PATCH", env.taskPath(second.ID), `{"completed":true}`, token).want(200, "").json(&done)
	third := get(*done.NextTaskID)
	if *third.Recurrence != "FREQ=DAILY;COUNT=1" || !third.DueDate.Equal(time.Date(2026, 3, 9, 13, 0, 0, 0, time.UTC)) {
		t.Fatalf("the third: %+v", third)
	}
	env.do("PATCH", env.taskPath(third.ID)+"/complete", `{"completed":true}`, token).want(200, "").json(&done)
	if done.NextTaskID != nil {
		t.Errorf("COUNT spent, yet a successor: %v", *done.NextTaskID)
	}

	// Created completed: no successor, now or when completed again.
	already := env.createTask(token, `{"title":"Done already","completed":true,"due_date":"2026-05-01","recurrence":"FREQ=WEEKLY"}`)
	env.do("PATCH", env.taskPath(already.ID), `{"completed":true}`, token).want(200, "").json(&done)
	if done.NextTaskID != nil {
		t.Errorf("a task created completed got a successor")
	}

	// Rules the service refuses, and a recurring task without a due date.
	for body, msg := range map[string]string{
		`{"title":"x","recurrence":"FREQ=DAILY"}`:                                    "needs a due_date",
		`{"title":"x","due_date":"2026-05-01","recurrence":"FREQ=HOURLY"}`:           "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY",
		`{"title":"x","due_date":"2026-05-01","recurrence":"FREQ=DAILY;BYSETPOS=1"}`: "BYSETPOS is not supported",
		`{"title":"x","due_date":"2026-05-01","recurrence":5}`:                       "must be an RRULE string",
	} {
		e := env.do("POST", "/api/v1/tasks", body, token).want(422, "validation_error").envelope()
		if len(e.Errors) != 1 || e.Errors[0].Field != "recurrence" || !strings.Contains(e.Errors[0].Message, msg) {
			t.Errorf("%s: %+v", body, e.Errors)
		}
	}
	e := env.do("PATCH", env.taskPath(second.ID), `{"due_date":null}`, token).want(422, "validation_error").envelope()
	if e.Errors[0].Field != "recurrence" {
		t.Errorf("clearing a recurring task's due date: %+v", e.Errors)
	}
	env.do("PATCH", env.taskPath(second.ID), `{"recurrence":null,"due_date":null}`, token).want(200, "")

	// The list filter, and the section 6 routes.
	if page := env.list(token, "recurring=true"); page.Total != 3 {
		t.Errorf("recurring=true: %d tasks, want 3", page.Total)
	}
	if page := env.list(token, "recurring=false"); page.Total != 1 {
		t.Errorf("recurring=false: %d tasks, want 1", page.Total)
	}
	env.do("GET", "/api/v1/tasks?recurring=maybe", "", token).want(400, "invalid_query")
	web := "/api/" + strconv.FormatInt(u.ID, 10) + "/tasks"
	var webTask wireTask
	env.do("POST", web, `{"title":"Standup","due_date":"2026-03-02T09:30:00-05:00","recurrence":"FREQ=WEEKLY;BYDAY=MO,WE,FR"}`, token).want(201, "").json(&webTask)
	env.do("PATCH", web+"/"+strconv.FormatInt(webTask.ID, 10)+"/complete", "", token).want(200, "").json(&webTask)
	if webTask.NextTaskID == nil || !get(*webTask.NextTaskID).DueDate.Equal(time.Date(2026, 3, 4, 14, 30, 0, 0, time.UTC)) {
		t.Errorf("section 6 completion: %+v", webTask)
	}

	// "Mark all done" completes recurring tasks too, each with its successor.
	other, _ := env.registerUser("bulk-recurring@example.com")
	for i := range 3 {
		env.createTask(other, fmt.Sprintf(`{"title":"r%d","due_date":"2026-06-0%dT10:00:00Z","recurrence":"FREQ=MONTHLY"}`, i, i+1))
	}
	env.createTask(other, `{"title":"once"}`)
	env.do("PATCH", "/api/v1/tasks", `{"completed":true}`, other).want(200, "")
	if page := env.list(other, "status=pending&recurring=true&sort=due_date"); page.Total != 3 ||
		!page.Items[0].DueDate.Equal(time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("after mark all done: %+v", page)
	}
	checkCounters(t, env.st, u.ID)
	var otherUser userJSON
	env.do("GET", "/api/v1/auth/me", "", other).want(200, "").json(&otherUser)
	checkCounters(t, env.st, otherUser.ID)
}

// TestRecurringCompletionsRace: 20 concurrent completions of one recurring task create
// exactly one successor.
func TestRecurringCompletionsRace(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	token, user := env.registerUser("racer@example.com")
	for range 5 {
		task := env.createTask(token, `{"title":"race","due_date":"2026-04-01T08:00:00Z","recurrence":"FREQ=WEEKLY"}`)
		var wg sync.WaitGroup
		next := make([]*int64, 20)
		for i := range next {
			wg.Go(func() {
				var w wireTask
				r := env.do("PATCH", env.taskPath(task.ID)+"/complete", `{"completed":true}`, token)
				if r.Code != 200 {
					t.Errorf("completion %d: %d %s", i, r.Code, r.Body)
					return
				}
				r.json(&w)
				next[i] = w.NextTaskID
			})
		}
		wg.Wait()
		for i, n := range next {
			if n == nil || *n != *next[0] {
				t.Fatalf("completion %d answered next_task_id %v, the first %v", i, n, next[0])
			}
		}
	}
	// The change feed has each task's creation, its successor's and its one completion:
	// the 19 completions that changed nothing record nothing.
	if evs, _ := recordedEvents(t, env.st, user.ID); len(evs) != 15 {
		t.Errorf("%d events for 5 tasks completed 20 times each, want 15: %v", len(evs), evs)
	}
	if page := env.list(token, "status=pending"); page.Total != 5 {
		t.Errorf("%d open successors after 5 × 20 completions, want 5", page.Total)
	}
}
