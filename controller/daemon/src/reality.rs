//! Reality material made by the controller for each VLESS service (SPEC §2.4): an X25519 key
//! pair in the encoding Xray reads (base64url without padding) and random short ids.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use x25519_dalek::{PublicKey, StaticSecret};

/// Short ids are 8 random bytes: 16 hex characters, the longest Reality accepts.
const SHORT_ID_BYTES: usize = 8;

/// The system random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomFailed;

/// A service's Reality key pair, both halves base64url without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub private_key: String,
    pub public_key: String,
}

/// A fresh X25519 key pair.
pub fn key_pair(rng: &SystemRandom) -> Result<KeyPair, RandomFailed> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).map_err(|_| RandomFailed)?;
    Ok(key_pair_from(bytes))
}

/// The key pair of a given private key (clamping is the curve's own business).
pub fn key_pair_from(private: [u8; 32]) -> KeyPair {
    let secret = StaticSecret::from(private);
    let public = PublicKey::from(&secret);
    KeyPair {
        private_key: URL_SAFE_NO_PAD.encode(secret.to_bytes()),
        public_key: URL_SAFE_NO_PAD.encode(public.as_bytes()),
    }
}

/// `count` distinct random short ids of 16 lower-case hex characters.
pub fn short_ids(rng: &SystemRandom, count: usize) -> Result<Vec<String>, RandomFailed> {
    let mut ids: Vec<String> = Vec::with_capacity(count);
    while ids.len() < count {
        let mut bytes = [0u8; SHORT_ID_BYTES];
        rng.fill(&mut bytes).map_err(|_| RandomFailed)?;
        let id = hex::encode(bytes);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7748 §6.1: Alice's private key and the public key it yields.
    #[test]
    fn public_keys_follow_rfc_7748() {
        let private: [u8; 32] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        let pair = key_pair_from(private);
        let public = URL_SAFE_NO_PAD.decode(&pair.public_key).unwrap();
        assert_eq!(
            hex::encode(public),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert_eq!(
            pair.private_key.len(),
            43,
            "32 bytes, base64url, no padding"
        );
    }

    #[test]
    fn fresh_pairs_and_short_ids_differ_and_have_the_expected_shape() {
        let rng = SystemRandom::new();
        let (a, b) = (key_pair(&rng).unwrap(), key_pair(&rng).unwrap());
        assert_ne!(a, b);
        let ids = short_ids(&rng, 4).unwrap();
        assert_eq!(ids.len(), 4);
        for id in &ids {
            assert_eq!(id.len(), 16);
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }
}
