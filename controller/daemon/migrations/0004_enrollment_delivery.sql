-- Enrollment completes in one transaction after signing: the token is spent together with
-- recording the certificate it bought. The certificate and the SHA-256 of the public key it
-- certifies stay with the token, so a host whose answer was lost can ask again with the same
-- key (and token, within its lifetime) and receive the very same certificate.
ALTER TABLE join_tokens ADD COLUMN cert_pem TEXT;
ALTER TABLE join_tokens ADD COLUMN key_sha256 TEXT;
