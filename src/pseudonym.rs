//! Pseudonymous users: user ids kept at rest only as keyed hashes.
//!
//! "Here is a shopper's id, give me the form the store keeps." A database created with a
//! user key ([`EngineBuilder::user_key`](crate::EngineBuilder::user_key)) stores each user id
//! as the hex HMAC-SHA256 of the id under that key; the key itself is never written to the
//! directory, only a check value (the HMAC of a fixed text) that tells a wrong key from the
//! right one at open. The only module that names `hmac`.
//!
//! A hash cannot be turned back into an id, so an API that lists users returns the ids this
//! process has been given since it opened, and `pseudonym:<hex>` for the others; every API
//! takes that form back.

use std::collections::HashMap;
use std::fmt::Write as _;

use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

use crate::error::{Error, KeyProblem, Result};

/// The shortest key accepted: a shorter one can be guessed by trying keys against the
/// stored check value.
pub const MIN_KEY_BYTES: usize = 16;

/// How a pseudonym is written where an id is expected.
const PREFIX: &str = "pseudonym:";

/// Length of a pseudonym: 32 bytes in hex.
const HEX_LEN: usize = 64;

/// What the check value is the HMAC of (a user id is hashed behind another prefix, so no id
/// hashes to the check value).
const CHECK_TEXT: &[u8] = b"shopdb key check v1";
const ID_DOMAIN: &[u8] = b"shopdb user id v1\0";

/// The key's MAC and the ids this process has seen, by pseudonym.
pub(crate) struct Pseudonyms {
    mac: Hmac<Sha256>,
    seen: Mutex<HashMap<String, String>>,
}

impl Pseudonyms {
    /// The pseudonyms of `key`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a key shorter than [`MIN_KEY_BYTES`] (the empty key included).
    pub fn new(key: &[u8]) -> Result<Self> {
        if key.len() < MIN_KEY_BYTES {
            return Err(Error::invalid(
                "user_key",
                format!(
                    "{} bytes; at least {MIN_KEY_BYTES} random bytes are needed, or the key can \
                     be guessed from the stored check value",
                    key.len()
                ),
            ));
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|e| Error::invalid("user_key", e.to_string()))?;
        Ok(Pseudonyms {
            mac,
            seen: Mutex::new(HashMap::new()),
        })
    }

    fn hex_mac(&self, parts: &[&[u8]]) -> String {
        let mut mac = self.mac.clone();
        for p in parts {
            mac.update(p);
        }
        let mut out = String::with_capacity(HEX_LEN);
        for b in mac.finalize().into_bytes() {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The value stored in the config that tells this key from another.
    pub fn check_value(&self) -> String {
        self.hex_mac(&[CHECK_TEXT])
    }

    /// Whether `stored` is this key's check value (compared in constant time).
    pub fn check(&self, stored: &str) -> Result<()> {
        let mine = self.check_value();
        let same = mine.len() == stored.len()
            && mine
                .bytes()
                .zip(stored.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(Error::UserKey(KeyProblem::Wrong))
        }
    }

    /// The stored form of a user id: its pseudonym, or the pseudonym itself when the id is
    /// written as `pseudonym:<hex>`.
    pub fn of(&self, id: &str) -> String {
        match id.strip_prefix(PREFIX) {
            Some(hex)
                if hex.len() == HEX_LEN
                    && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                hex.to_string()
            }
            _ => self.hex_mac(&[ID_DOMAIN, id.as_bytes()]),
        }
    }

    /// Remembers (in memory only) which id a pseudonym stands for.
    pub fn remember(&self, pseudonym: &str, id: &str) {
        if id.len() != PREFIX.len() + HEX_LEN || !id.starts_with(PREFIX) {
            let mut seen = self.seen.lock();
            if !seen.contains_key(pseudonym) {
                seen.insert(pseudonym.to_string(), id.to_string());
            }
        }
    }

    /// Drops a forgotten user's id from memory.
    pub fn forget(&self, pseudonym: &str) {
        self.seen.lock().remove(pseudonym);
    }

    /// What a listing shows for a stored pseudonym: the id when this process has seen it,
    /// else `pseudonym:<hex>`.
    pub fn display(&self, pseudonym: &str) -> String {
        match self.seen.lock().get(pseudonym) {
            Some(id) => id.clone(),
            None => format!("{PREFIX}{pseudonym}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2 uses a 4-byte key; the MAC itself takes any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pseudonyms_are_keyed_stable_and_round_trip_through_their_written_form() {
        let a = Pseudonyms::new(b"0123456789abcdef").unwrap();
        let b = Pseudonyms::new(b"0123456789abcdeF").unwrap();
        let p = a.of("alice");
        assert_eq!(p.len(), HEX_LEN);
        assert_eq!(p, a.of("alice"));
        assert_ne!(p, a.of("alice "));
        assert_ne!(p, b.of("alice"), "another key, another pseudonym");
        assert_eq!(a.display(&p), format!("pseudonym:{p}"));
        assert_eq!(a.of(&a.display(&p)), p, "the written form is taken back");
        a.remember(&p, "alice");
        assert_eq!(a.display(&p), "alice");
        a.forget(&p);
        assert_eq!(a.display(&p), format!("pseudonym:{p}"));
        // A malformed written form is an ordinary id.
        assert_ne!(a.of("pseudonym:xyz"), "xyz");
        assert!(a.check(&a.check_value()).is_ok());
        assert!(matches!(
            b.check(&a.check_value()),
            Err(Error::UserKey(KeyProblem::Wrong))
        ));
    }

    #[test]
    fn short_and_empty_keys_are_refused() {
        for key in [&b""[..], b"short", &[7u8; MIN_KEY_BYTES - 1]] {
            assert!(matches!(
                Pseudonyms::new(key),
                Err(Error::Invalid {
                    field: "user_key",
                    ..
                })
            ));
        }
        assert!(Pseudonyms::new(&[7u8; MIN_KEY_BYTES]).is_ok());
    }
}
