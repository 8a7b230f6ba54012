package wal

import (
	"strings"
	"testing"
)

func TestLSN(t *testing.T) {
	good := map[string]LSN{"0/0": 0, "16/B374D848": 0x16_B374D848, "FFFFFFFF/FFFFFFFF": 1<<64 - 1, "0/3000060": 0x3000060}
	for s, want := range good {
		got, err := ParseLSN(s)
		if err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v", s, got, err, want)
		}
		if got.String() != s {
			t.Errorf("%v.String() = %q; want %q", want, got.String(), s)
		}
	}
	for _, bad := range []string{"", "0", "/", "1/", "/1", "G/0", "0/100000000", "1/2/3", "-1/0"} {
		if _, err := ParseLSN(bad); err == nil || !strings.Contains(err.Error(), "lsn") {
			t.Errorf("ParseLSN(%q) = %v; want an error naming the lsn", bad, err)
		}
	}
}
