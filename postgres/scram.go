package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"

	"golang.org/x/text/secure/precis"
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

// scramNormalize prepares the password as pgx, which the agent logs in
// with, does: the PRECIS OpaqueString profile (RFC 8265, the successor of
// the SASLprep that libpq and the server apply), the password as given
// when the profile refuses it, as PostgreSQL does. Both leave ASCII
// passwords unchanged; a non-ASCII one the two normalize differently
// would log in through pgx but not through libpq (pg_basebackup).
func scramNormalize(password string) string {
	if n, err := precis.OpaqueString.String(password); err == nil {
		return n
	}
	return password
}
