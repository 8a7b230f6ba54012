package postgres

import (
	"regexp"
	"testing"
)

// TestSCRAMVerifierKnownVector: the verifier of "pencil" with salt 00..0f
// and 4096 iterations, against the value computed independently with
// Python's hashlib.pbkdf2_hmac and hmac (StoredKey = SHA-256(HMAC(salted,
// "Client Key")), ServerKey = HMAC(salted, "Server Key")).
func TestSCRAMVerifierKnownVector(t *testing.T) {
	salt := make([]byte, 16)
	for i := range salt {
		salt[i] = byte(i)
	}
	got, err := scramVerifier("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	const want = "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$zHCdol2044/ZyWzPLi7oxApCkamKw9Z+E4U/QApd/5Y=:dd5peBOitVnLNFu7VmwP+HiDaaw4OUCv396eVCWhYiE="
	if got != want {
		t.Fatalf("verifier\n got %s\nwant %s", got, want)
	}
}

// TestSCRAMVerifierSalted: each verifier has its own 16-byte salt, in
// PostgreSQL's format, and never contains the password.
func TestSCRAMVerifierSalted(t *testing.T) {
	re := regexp.MustCompile(`^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$`)
	a, err := SCRAMVerifier("pencil")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := SCRAMVerifier("pencil")
	if !re.MatchString(a) || a == b {
		t.Fatalf("verifiers %q and %q: want PostgreSQL's format with a fresh salt each", a, b)
	}
}

// TestSCRAMNormalize: the examples of RFC 4013 section 3, and ASCII as is.
func TestSCRAMNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"I\u00adX":       "IX",       // soft hyphen mapped to nothing
		"user":           "user",     // unchanged
		"USER":           "USER",     // case preserved
		"\u00aa":         "a",        // NFKC
		"\u2168":         "IX",       // NFKC
		"a\u00a0b":       "a b",      // a non-ASCII space
		"\u0007":         "\u0007",   // prohibited: used as given (ASCII anyway)
		"x\u0085y":       "x\u0085y", // prohibited non-ASCII control: as given
		"p\u00e4ss w0rd": "p\u00e4ss w0rd",
	} {
		if got := scramNormalize(in); got != want {
			t.Errorf("scramNormalize(%q) = %q, want %q", in, got, want)
		}
	}
}
