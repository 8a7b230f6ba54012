package agent

import "strings"

// sameDecision says whether b logs as a repeat of a: the same action and
// target, and a reason that differs at most in its figures (times, WAL
// positions, counts), which change every loop in some states ("lease could
// expire in 1.2s") and would otherwise log a line per loop.
func sameDecision(a, b Decision) bool {
	return a.Action == b.Action && a.Target == b.Target && maskFigures(a.Reason) == maskFigures(b.Reason)
}

// maskFigures replaces each number not part of a word (node2 stays) with #.
func maskFigures(s string) string {
	var b strings.Builder
	inNum := false
	prevLetter := false
	for _, r := range s {
		digit := r >= '0' && r <= '9'
		switch {
		case digit && !inNum && !prevLetter:
			inNum = true
			b.WriteByte('#')
		case inNum && (digit || r == '.'):
		default:
			inNum = false
			b.WriteRune(r)
		}
		prevLetter = !inNum && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_' || r == '-' || digit)
	}
	return b.String()
}
