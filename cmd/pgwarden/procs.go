package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// oneProc runs the agent's Go code on one CPU at a time unless GOMAXPROCS
// says otherwise. The agent waits on etcd, PostgreSQL, its watchdog and
// timers, and computes little; with more Ps each of its wake-ups also
// wakes another thread to look for work, which it does not find. An idle
// agent at loop_wait 1 spent about 10% less CPU so (0.151 -> 0.137 CPU-s
// a minute, three nodes beside three, on 2 cores).
//
// It also halves the garbage collector's target unless GOGC says
// otherwise. An idle agent keeps under 1 MB live and allocates about
// 20 KB a second; at the default the heap grows to the runtime's 4 MB
// floor between collections, which is most of the agent's own memory. At
// 50 the floor is 2 MB and a collection (about a millisecond) comes once a
// minute instead of every two.
func oneProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
}
