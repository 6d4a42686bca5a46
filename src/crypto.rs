//! Encryption at rest with age (X25519 recipients). The backup host needs only the
//! public recipients; reading archives back (verify, restore) needs an identity file.

use crate::error::Invalid;
use std::io::{self, BufRead, Read};
use std::path::Path;
use std::str::FromStr;

use age::x25519::{Identity, Recipient};

/// The first bytes of every age file.
pub const MAGIC: &[u8] = b"age-encryption.org/v1";

/// Parse `age1…` public keys.
pub fn parse_recipients(list: &[String]) -> Result<Vec<Recipient>, Invalid> {
    list.iter()
        .map(|r| {
            Recipient::from_str(r.trim())
                .map_err(|e| Invalid(format!("`{r}` is not an age X25519 recipient (age1…): {e}")))
        })
        .collect()
}

/// Why the keys at hand cannot open an encrypted archive: a configuration problem,
/// not damage, so it is never recorded as a failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The archive is encrypted and no identity was given.
    #[error(
        "the archive is encrypted (age): give an identity with --identity FILE or encryption.identityFile"
    )]
    Missing,
    /// No identity matches any recipient of the archive; holds where they came from.
    #[error("no identity in {0} opens this archive (it was encrypted to other recipients)")]
    NoMatch(String),
    /// The identity file cannot be read or holds no identity.
    #[error("{0}")]
    Unusable(String),
}

/// Why an age stream cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    Key(KeyError),
    /// The file is not a readable age file (damage).
    Damaged(String),
}

/// The keys that open encrypted archives.
#[derive(Default)]
pub struct Keys {
    identities: Vec<Identity>,
    /// Where they came from, for messages.
    source: Option<String>,
    /// Without identities, check an encrypted archive's file hash only (the service
    /// on a backup host that holds only public keys) instead of failing.
    pub hash_only_when_locked: bool,
}

impl Keys {
    /// Read an identity file as `age-keygen` writes it: `AGE-SECRET-KEY-1…` lines,
    /// `#` comments and blank lines. Errors never echo the file's content.
    pub fn load(path: &Path) -> Result<Keys, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            KeyError::Unusable(format!(
                "cannot read the identity file {}: {e}",
                path.display()
            ))
        })?;
        let mut identities = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = Identity::from_str(line).map_err(|_| {
                KeyError::Unusable(format!(
                    "{}:{}: not an age X25519 identity (AGE-SECRET-KEY-1…)",
                    path.display(),
                    i + 1
                ))
            })?;
            identities.push(id);
        }
        if identities.is_empty() {
            return Err(KeyError::Unusable(format!(
                "the identity file {} holds no identity",
                path.display()
            )));
        }
        Ok(Keys {
            identities,
            source: Some(path.display().to_string()),
            hash_only_when_locked: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// A reader of the plaintext of an age stream.
    pub fn decrypt<R: Read>(&self, input: R) -> Result<impl Read, OpenError> {
        if self.identities.is_empty() {
            return Err(OpenError::Key(KeyError::Missing));
        }
        let decryptor = age::Decryptor::new(input)
            .map_err(|e| OpenError::Damaged(format!("not a readable age file: {e}")))?;
        decryptor
            .decrypt(self.identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| match e {
                // Also what a damaged recipient stanza looks like: callers tell the two
                // apart by the file's hash.
                age::DecryptError::NoMatchingKeys => OpenError::Key(KeyError::NoMatch(
                    self.source
                        .clone()
                        .unwrap_or_else(|| "the identity file".into()),
                )),
                other => OpenError::Damaged(format!("cannot decrypt: {other}")),
            })
    }
}

/// Does this buffered stream start like an age file? (Does not consume.)
pub fn is_age(r: &mut impl BufRead) -> io::Result<bool> {
    let buf = r.fill_buf()?;
    Ok(buf.starts_with(MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::io::Write;

    #[test]
    fn round_trip_and_wrong_keys() {
        let id = Identity::generate();
        let other = Identity::generate();
        let recipients = parse_recipients(&[id.to_public().to_string()]).unwrap();
        let enc =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(b"factory data").unwrap();
        w.finish().unwrap();
        assert!(is_age(&mut &out[..]).unwrap());

        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.txt");
        std::fs::write(
            &good,
            format!("# created: now\n{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        let keys = Keys::load(&good).unwrap();
        let mut plain = String::new();
        keys.decrypt(&out[..])
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "factory data");

        let wrong = dir.path().join("wrong.txt");
        std::fs::write(&wrong, other.to_string().expose_secret()).unwrap();
        let e = Keys::load(&wrong).unwrap().decrypt(&out[..]).err().unwrap();
        assert!(
            matches!(&e, OpenError::Key(KeyError::NoMatch(f)) if f.ends_with("wrong.txt")),
            "{e:?}"
        );
        let e = Keys::default().decrypt(&out[..]).err().unwrap();
        assert_eq!(e, OpenError::Key(KeyError::Missing));
        assert!(KeyError::Missing.to_string().contains("--identity"));
        // A damaged header is damage, not a key problem.
        let e = keys
            .decrypt(&b"age-encryption.org/v1\n-> nonsense\n"[..])
            .err();
        assert!(matches!(e, Some(OpenError::Damaged(_))), "{e:?}");

        std::fs::write(&wrong, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
        let e = Keys::load(&wrong).err().unwrap().to_string();
        assert!(e.contains(":1:") && !e.contains("NOTAKEY"), "{e}");
        assert!(parse_recipients(&["age1nope".into()]).is_err());
    }
}
