// Package freeport picks loopback TCP ports for the demo, the tests and a
// restore drill's scratch copy.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// low is the bottom of the range ports are picked from: below the kernel's
// ephemeral range, and above the well-known and common service ports.
const low = 15000

var (
	mu   sync.Mutex
	next int
)

// Pick returns a free loopback TCP port below the kernel's ephemeral range,
// so no outgoing connection can take it between choosing and binding it.
// Ports are handed out in order from a random start, so one process never
// gets the same port twice and processes running side by side rarely meet.
func Pick() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	hi := ephemeralLow()
	if next == 0 {
		next = low + rand.IntN(hi-low-1000)
	}
	for i := 0; i < hi-low; i++ {
		p := next
		next++
		if next >= hi {
			next = low
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, errors.New("no free loopback port below the ephemeral range")
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > low+2000 {
				return n
			}
		}
	}
	return 32768
}
