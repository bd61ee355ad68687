package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
)

// procStat is what /proc/<pid>/stat tells about a process: its parent, the CPU time it
// has used, user plus system, and that of its children that exited and were waited
// for, in clock ticks.
type procStat struct {
	ppid   int
	ticks  int64
	reaped int64
}

func readProcStat(pid string) (procStat, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces: split after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc/" + pid + "/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, errors.New("short /proc/" + pid + "/stat")
	}
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15, cutime 16, cstime 17.
	n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	ppid, _ := strconv.Atoi(f[1])
	return procStat{ppid: ppid, ticks: n(11) + n(12), reaped: n(13) + n(14)}, nil
}

// processTicks is the CPU time of one process, and that of its children that exited;
// 0 when pid is 0 or gone.
func processTicks(pid int) (own, reaped int64) {
	if pid <= 0 {
		return 0, 0
	}
	st, err := readProcStat(strconv.Itoa(pid))
	if err != nil {
		return 0, 0
	}
	return st.ticks, st.reaped
}

// treeTicks is the CPU time of a process and its children, those alive (read directly)
// and those that exited (which the kernel adds to the parent's cutime once it waits for
// them): for PostgreSQL, the postmaster and every backend and background worker.
func treeTicks(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	own, reaped := processTicks(pid)
	total := own + reaped
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return total
	}
	for _, e := range entries {
		name := e.Name()
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		if st, err := readProcStat(name); err == nil && st.ppid == pid {
			total += st.ticks
		}
	}
	return total
}

// memoryKiB reads VmHWM (peak resident set) and VmRSS from /proc/<pid>/status.
func memoryKiB(pid int) (peak, rss int64) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmHWM":
			peak = n
		case "VmRSS":
			rss = n
		}
	}
	return peak, rss
}

// resetPeakRSS makes VmHWM start again from the current resident set (Linux 4.0+), so
// that it shows the peak of one run; false when the kernel or permissions refuse.
func resetPeakRSS(pid int) bool {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0) == nil
}
