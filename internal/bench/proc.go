package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuOf returns a process's user+system CPU time so far, from
// /proc/<pid>/stat (clock ticks, 100 per second on Linux); 0 when unknown.
func cpuOf(pid int) time.Duration {
	f := statFields(pid)
	// After the command: state(3) ... utime(14) stime(15), 1-based in the full line.
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

// PeakRSS is a process's peak resident set so far, bytes (VmHWM of
// /proc/<pid>/status); 0 when unknown. A child's own: its ru_maxrss is
// not, since Go starts a child sharing the parent's memory until the exec
// (CLONE_VM), and Linux keeps the parent's resident set at that moment as
// the child's maximum (a bench process grown to 150 MiB made every child
// after it report 150 MiB).
func PeakRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// statFields are the fields of /proc/<pid>/stat after the command (the
// first is the state, field 3); nil when unknown.
func statFields(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}

// treeCPU returns the CPU time of a process and its children so far: its
// own, that of its children it waited for (cutime, cstime) and that of its
// living children (a PostgreSQL server: the postmaster and its backends).
func treeCPU(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	for _, v := range f[11:15] { // utime stime cutime cstime
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	total := time.Duration(ticks) * (time.Second / 100)
	procs, _ := os.ReadDir("/proc")
	ppid := strconv.Itoa(pid)
	for _, p := range procs {
		child, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if f := statFields(child); len(f) > 1 && f[1] == ppid { // ppid(4)
			total += cpuOf(child)
		}
	}
	return total
}
