//! Reality keys and short ids (SPEC §2.4): one X25519 key pair per VLESS service, written as
//! base64url without padding — the text Xray's `privateKey` / a link's `pbk=` and shoes'
//! `private_key` / `public_key` all expect — and the short ids a client may present.
//!
//! The controller generates a pair when a service is deployed and keeps the private half; links
//! carry the public half. [`public_key_from_private`] lets an imported service (`vpn users
//! import`) and the tests check that both halves belong together.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use x25519_dalek::{PublicKey, StaticSecret};

/// Length of an X25519 key in bytes.
pub const KEY_LEN: usize = 32;
/// Bytes of a generated short id (16 hex characters, the longest Reality allows).
pub const SHORT_ID_BYTES: usize = 8;

/// A Reality key pair, both halves base64url without padding.
#[derive(Clone, PartialEq, Eq)]
pub struct RealityKeyPair {
    /// The server's secret (`privateKey` in Xray, `private_key` in shoes).
    pub private_key: String,
    /// What clients pin (`pbk=` in a `vless://` link).
    pub public_key: String,
}

impl std::fmt::Debug for RealityKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealityKeyPair")
            .field("private_key", &"<redacted>")
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum RealityKeyError {
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
    /// The key is not base64url without padding.
    #[error("reality key is not base64url without padding: {0}")]
    Encoding(#[from] base64::DecodeError),
    /// The key decodes to the wrong number of bytes.
    #[error("reality key has {0} bytes, expected {KEY_LEN}")]
    Length(usize),
}

/// A fresh key pair from the system's random source. The private key is clamped as X25519
/// uses it, so it reads the same as one from `xray x25519` (which clamps before printing).
pub fn generate_key_pair() -> Result<RealityKeyPair, RealityKeyError> {
    let mut secret = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| RealityKeyError::Random)?;
    clamp(&mut secret);
    let public = PublicKey::from(&StaticSecret::from(secret));
    Ok(RealityKeyPair {
        private_key: URL_SAFE_NO_PAD.encode(secret),
        public_key: URL_SAFE_NO_PAD.encode(public.as_bytes()),
    })
}

/// The public key that belongs to `private_key` (both base64url without padding), as
/// `xray x25519 -i PRIVATE` prints it.
pub fn public_key_from_private(private_key: &str) -> Result<String, RealityKeyError> {
    let secret = decode_key(private_key)?;
    let public = PublicKey::from(&StaticSecret::from(secret));
    Ok(URL_SAFE_NO_PAD.encode(public.as_bytes()))
}

/// Decodes a base64url-no-pad key and checks that it is 32 bytes.
pub fn decode_key(key: &str) -> Result<[u8; KEY_LEN], RealityKeyError> {
    let bytes = URL_SAFE_NO_PAD.decode(key)?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| RealityKeyError::Length(bytes.len()))
}

/// A fresh short id: 16 lower-case hex characters from the system's random source.
pub fn generate_short_id() -> Result<String, RealityKeyError> {
    let mut id = [0u8; SHORT_ID_BYTES];
    SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| RealityKeyError::Random)?;
    Ok(hex::encode(id))
}

/// RFC 7748 §5 clamping. X25519 applies it anyway; doing it before encoding keeps the stored
/// text canonical.
fn clamp(secret: &mut [u8; KEY_LEN]) {
    secret[0] &= 248;
    secret[31] &= 127;
    secret[31] |= 64;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7748 §6.1: Alice's private key and the public key X25519 derives from it, here in
    /// the base64url form `xray x25519 -i` reads and prints (the key is already clamped there).
    const RFC7748_PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo";
    const RFC7748_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo";
    /// RFC 7748 §6.1: Bob's pair.
    const RFC7748_BOB_PRIVATE: &str = "XasIfmJKikt54X-Lg4AO5m87sSkmGLb9HC-LJ_-I4Os";
    const RFC7748_BOB_PUBLIC: &str = "3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08";

    #[test]
    fn derives_the_rfc7748_public_keys() {
        assert_eq!(
            public_key_from_private(RFC7748_PRIVATE).unwrap(),
            RFC7748_PUBLIC
        );
        assert_eq!(
            public_key_from_private(RFC7748_BOB_PRIVATE).unwrap(),
            RFC7748_BOB_PUBLIC
        );
        // The hex of RFC 7748, to show the base64url text above is that vector.
        assert_eq!(
            hex::encode(decode_key(RFC7748_PUBLIC).unwrap()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn generated_pairs_belong_together_and_are_canonical() {
        let a = generate_key_pair().unwrap();
        let b = generate_key_pair().unwrap();
        assert_ne!(a.private_key, b.private_key);
        for pair in [&a, &b] {
            assert_eq!(
                pair.private_key.len(),
                43,
                "32 bytes in base64url without padding"
            );
            assert_eq!(pair.public_key.len(), 43);
            assert!(!pair.private_key.contains(['=', '+', '/']));
            assert_eq!(
                public_key_from_private(&pair.private_key).unwrap(),
                pair.public_key
            );
            let secret = decode_key(&pair.private_key).unwrap();
            assert_eq!(secret[0] & 7, 0, "clamped");
            assert_eq!(secret[31] & 0xc0, 0x40, "clamped");
        }
    }

    #[test]
    fn rejects_keys_that_are_not_32_bytes_of_base64url() {
        assert!(matches!(
            public_key_from_private("AAAA"),
            Err(RealityKeyError::Length(3))
        ));
        assert!(matches!(
            public_key_from_private("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="),
            Err(RealityKeyError::Encoding(_))
        ));
        assert!(matches!(
            public_key_from_private("not base64!"),
            Err(RealityKeyError::Encoding(_))
        ));
    }

    #[test]
    fn short_ids_are_sixteen_hex_characters() {
        let id = generate_short_id().unwrap();
        assert_eq!(id.len(), 16);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(id, generate_short_id().unwrap());
    }

    #[test]
    fn debug_hides_the_private_key() {
        let pair = generate_key_pair().unwrap();
        assert!(!format!("{pair:?}").contains(&pair.private_key));
    }
}
