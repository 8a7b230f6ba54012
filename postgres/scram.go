package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// scramIterations is PostgreSQL's default scram_iterations.
const scramIterations = 4096

// SCRAMVerifier is what PostgreSQL stores for password under
// password_encryption = scram-sha-256 (RFC 5802, RFC 7677), computed here
// with a fresh random salt. A role created or altered with it never hands
// the server the plaintext: a statement log (log_statement = ddl or all),
// pg_stat_statements or a replica's WAL then hold only the verifier.
func SCRAMVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("scram salt: %w", err)
	}
	return scramVerifier(password, salt, scramIterations)
}

func scramVerifier(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, scramNormalize(password), salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("scram: %w", err)
	}
	clientKey := scramHMAC(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := scramHMAC(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func scramHMAC(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// scramNormalize is SASLprep (RFC 4013), which PostgreSQL applies when it
// computes a verifier itself and libpq when it logs in (walreceiver,
// pg_basebackup, pg_rewind), so the verifier is the one the server would
// have made: non-ASCII spaces mapped to a space, the characters "mapped to
// nothing" removed, NFKC; a password with a prohibited character (a
// control or private-use character, a surrogate, a non-character, one
// unassigned) is used as given, as PostgreSQL does. ASCII passwords are
// unchanged. (Unassigned means in Go's Unicode tables, not Unicode 3.2:
// a character assigned since may differ from the server's verifier.)
func scramNormalize(password string) string {
	ascii := true
	for _, r := range password {
		if r >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii || !utf8.ValidString(password) {
		return password
	}
	var b strings.Builder
	for _, r := range password {
		switch {
		case unicode.Is(unicode.Zs, r) && r != ' ':
			b.WriteRune(' ')
		case r == 0xAD || r == 0x34F || r == 0x1806 || (r >= 0x180B && r <= 0x180D) || (r >= 0x200B && r <= 0x200D) ||
			r == 0x2060 || (r >= 0xFE00 && r <= 0xFE0F) || r == 0xFEFF:
		default:
			b.WriteRune(r)
		}
	}
	out := norm.NFKC.String(b.String())
	for _, r := range out {
		if unicode.In(r, unicode.Cc, unicode.Co, unicode.Cs) || !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Zs) ||
			r&0xFFFE == 0xFFFE || (r >= 0xFDD0 && r <= 0xFDEF) {
			return password
		}
	}
	return out
}
