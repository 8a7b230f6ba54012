// Package wal holds the write-ahead log position, the one type an LSN
// travels in between PostgreSQL, the agent, etcd and the REST API. It links
// nothing, so every package can use it.
package wal

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a position in the write-ahead log.
type LSN uint64

// ParseLSN reads PostgreSQL's "X/Y" notation (two hexadecimal 32-bit halves).
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || hi == "" || lo == "" {
		return 0, fmt.Errorf("lsn %q: want X/Y in hexadecimal", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("lsn %q: high half: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("lsn %q: low half: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// String formats as PostgreSQL does: "16/B374D848".
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF) }
