package harness

import (
	"strings"
	"sync"
)

// LockedBuffer keeps a process's output for a test to search while the
// process still writes to it.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Since is the output after offset, and the offset of its end.
func (l *LockedBuffer) Since(offset int) (string, int) {
	s := l.String()
	return s[offset:], len(s)
}
