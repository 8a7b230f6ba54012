package freeport

import (
	"fmt"
	"net"
	"testing"
)

// TestPickDistinctBindable: ports come out distinct, bindable and below the
// ephemeral range.
func TestPickDistinctBindable(t *testing.T) {
	seen := map[int]bool{}
	hi := ephemeralLow()
	for i := 0; i < 50; i++ {
		p, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if p < low || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, low, hi)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
}
