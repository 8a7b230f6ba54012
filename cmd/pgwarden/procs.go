package main

import (
	"os"
	"runtime"
)

// oneProc runs the agent's Go code on one CPU at a time unless GOMAXPROCS
// says otherwise. The agent waits on etcd, PostgreSQL, its watchdog and
// timers, and computes little; with more Ps each of its wake-ups also
// wakes another thread to look for work, which it does not find. An idle
// agent at loop_wait 1 spent about 10% less CPU so (0.151 -> 0.137 CPU-s
// a minute, three nodes beside three, on 2 cores).
func oneProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
