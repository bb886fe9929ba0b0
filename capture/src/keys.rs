//! Identity keys: X25519 key pairs, their printable forms and key files.
//!
//! - An [`Identity`] is a secret X25519 key; it opens sealed files whose
//!   header has a stanza for it.
//! - A [`Recipient`] is the matching public key; sealing to it lets the
//!   identity's holder open the file. It prints as Bech32 with the
//!   human-readable part `jam` (`jam1…`, 62 characters), so a typo is caught
//!   by the checksum before anything is encrypted to a key nobody holds.
//! - A secret key prints as `JAM-SECRET-KEY-1…` (Bech32, upper case).
//!   Protected by a passphrase it prints as `JAM-ENCRYPTED-KEY-1…`: the
//!   32-byte secret sealed with ChaCha20-Poly1305 under a key derived from
//!   the passphrase with Argon2id (parameters, salt and nonce inside).
//!
//! A key file ([`encode_key_file`]) is text: comment lines starting with `#`
//! (one of them shows the public key) and one key line. [`write_new_key_file`]
//! creates it with mode 0600 (owner read/write only) and never overwrites an
//! existing file; on platforms other than Unix the file gets the platform's
//! default permissions, which the caller must restrict.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32, Hrp};
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::codec::{Dec, Enc};
use crate::primitives::{self, FILE_KEY_LEN, FileKey};

const PUBLIC_HRP: &str = "jam";
const SECRET_HRP: &str = "jam-secret-key-";
const ENCRYPTED_HRP: &str = "jam-encrypted-key-";
const KEY_FILE_AAD: &[u8] = b"jam.togthr/key/v1";

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not a `jam1…` public key (bad checksum, wrong prefix or
    /// length).
    #[error("`{0}` is not a jam public key (expected jam1… with a valid checksum)")]
    BadPublicKey(String),
    /// The text is not a jam secret key. The text itself is not repeated, as
    /// it may be a secret.
    #[error("not a jam secret key (expected a JAM-SECRET-KEY-1… or JAM-ENCRYPTED-KEY-1… line)")]
    BadSecretKey,
    /// The key file holds no key line.
    #[error("no key line in the key file")]
    NoKeyLine,
    /// The key is protected by a passphrase and none was given.
    #[error("the key is protected by a passphrase and none was given")]
    PassphraseRequired,
    /// The passphrase does not open the key (or the key line was modified).
    #[error("wrong passphrase (or the key file was modified)")]
    WrongPassphrase,
    /// The passphrase parameters in the key file are outside the accepted
    /// range (which protects against key files that would exhaust memory).
    #[error("passphrase parameters out of range: memory {m_kib} KiB, {t} passes, {p} lanes")]
    KdfParams {
        /// Memory cost in KiB.
        m_kib: u32,
        /// Number of passes.
        t: u32,
        /// Degree of parallelism.
        p: u32,
    },
    /// Reading or writing the key file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A public key: what you give others so they can seal files for you.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recipient(pub(crate) PublicKey);

impl Recipient {
    /// The raw 32-byte X25519 public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// From a raw 32-byte X25519 public key.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Recipient(PublicKey::from(b))
    }

    /// Wraps `file_key` for this recipient: a fresh ephemeral X25519 key,
    /// `wrap key = HKDF-SHA256(ikm = shared secret, salt = ephemeral share ||
    /// recipient, info = X25519_LABEL)`, and the file key sealed under it.
    /// Returns the 64-byte stanza body (ephemeral share || wrapped key), or
    /// `None` for a weak (small-order) recipient key that nobody could open.
    pub(crate) fn wrap<R: rand_core::CryptoRng + ?Sized>(
        &self,
        file_key: &FileKey,
        rng: &mut R,
    ) -> Option<[u8; 64]> {
        let eph = EphemeralSecret::random_from_rng(rng);
        let share = PublicKey::from(&eph);
        let shared = eph.diffie_hellman(&self.0);
        if !shared.was_contributory() {
            return None;
        }
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(share.as_bytes());
        salt[32..].copy_from_slice(self.0.as_bytes());
        let wrap_key = primitives::hkdf(&salt, primitives::X25519_LABEL, shared.as_bytes());
        let wrapped = primitives::aead_encrypt(&wrap_key, &[], file_key.as_bytes());
        let mut body = [0u8; 64];
        body[..32].copy_from_slice(share.as_bytes());
        body[32..].copy_from_slice(&wrapped);
        Some(body)
    }

    /// True for keys whose Diffie-Hellman output is all zeros whatever the
    /// other side (the small-order points of Curve25519); nothing sealed to
    /// such a key could ever be opened.
    pub fn is_weak(&self) -> bool {
        let probe = StaticSecret::from([0x42u8; 32]);
        !probe.diffie_hellman(&self.0).was_contributory()
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse(PUBLIC_HRP).expect("`jam` is a valid human-readable part");
        let s = bech32::encode_lower::<Bech32>(hrp, self.0.as_bytes())
            .expect("32 bytes fit in a Bech32 string");
        f.write_str(&s)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({self})")
    }
}

impl FromStr for Recipient {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || KeyError::BadPublicKey(s.to_string());
        let bytes = decode_bech32(s.trim(), PUBLIC_HRP).ok_or_else(bad)?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad())?;
        let r = Recipient::from_bytes(arr);
        if r.is_weak() {
            return Err(bad());
        }
        Ok(r)
    }
}

/// A secret key: opens files sealed to its [`Recipient`]. Zeroed on drop.
#[derive(Clone)]
pub struct Identity {
    secret: StaticSecret,
    public: Recipient,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({}, secret hidden)", self.public)
    }
}

impl Identity {
    /// A new random identity.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_secret_bytes(StaticSecret::random_from_rng(rng).to_bytes())
    }

    /// From the raw 32 secret bytes (clamped by X25519 as usual).
    pub fn from_secret_bytes(mut b: [u8; 32]) -> Self {
        let secret = StaticSecret::from(b);
        b.zeroize();
        let public = Recipient(PublicKey::from(&secret));
        Identity { secret, public }
    }

    /// The public key that files are sealed to.
    pub fn to_public(&self) -> Recipient {
        self.public
    }

    /// The secret key as a `JAM-SECRET-KEY-1…` string.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        let hrp = Hrp::parse(SECRET_HRP).expect("valid human-readable part");
        Zeroizing::new(
            bech32::encode_upper::<Bech32>(hrp, self.secret.as_bytes())
                .expect("32 bytes fit in a Bech32 string"),
        )
    }

    /// Parses a `JAM-SECRET-KEY-1…` string.
    pub fn from_secret_string(s: &str) -> Result<Self, KeyError> {
        let bytes =
            Zeroizing::new(decode_bech32(s.trim(), SECRET_HRP).ok_or(KeyError::BadSecretKey)?);
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::BadSecretKey)?;
        Ok(Self::from_secret_bytes(arr))
    }

    /// Tries to unwrap a 64-byte X25519 stanza body. `None` means the stanza
    /// is not for this identity (or was modified: without naming the
    /// recipient, which X25519 stanzas deliberately do not, the two cannot be
    /// told apart).
    pub(crate) fn unwrap(&self, body: &[u8; 64]) -> Option<FileKey> {
        let share: [u8; 32] = body[..32].try_into().expect("64 = 32 + 32");
        let share = PublicKey::from(share);
        let shared = self.secret.diffie_hellman(&share);
        if !shared.was_contributory() {
            return None;
        }
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(share.as_bytes());
        salt[32..].copy_from_slice(self.public.0.as_bytes());
        let wrap_key = primitives::hkdf(&salt, primitives::X25519_LABEL, shared.as_bytes());
        let key = primitives::aead_decrypt(&wrap_key, &[], &body[32..], FILE_KEY_LEN)?;
        let mut fk = Zeroizing::new([0u8; FILE_KEY_LEN]);
        fk.copy_from_slice(&key);
        Some(FileKey(fk))
    }
}

fn decode_bech32(s: &str, hrp: &str) -> Option<Vec<u8>> {
    // Bech32 strings are either all lower or all upper case; the library
    // checks that. The human-readable part is compared case-insensitively.
    let p = CheckedHrpstring::new::<Bech32>(s).ok()?;
    if !p.hrp().to_lowercase().eq_ignore_ascii_case(hrp) {
        return None;
    }
    Some(p.byte_iter().collect())
}

/// Argon2id cost parameters for passphrase-protected keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Number of passes.
    pub t: u32,
    /// Degree of parallelism.
    pub p: u32,
}

impl KdfParams {
    /// What `jam keys new --passphrase` uses: 64 MiB, 3 passes, 1 lane
    /// (RFC 9106's second recommended option, stronger than OWASP's minimum).
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
    /// Largest memory a key file may ask for (1 GiB); larger is refused.
    pub const MAX_M_KIB: u32 = 1024 * 1024;
    /// Most passes a key file may ask for.
    pub const MAX_T: u32 = 64;
    /// Most lanes a key file may ask for.
    pub const MAX_P: u32 = 16;

    fn check(&self) -> Result<argon2::Argon2<'static>, KeyError> {
        let err = KeyError::KdfParams {
            m_kib: self.m_kib,
            t: self.t,
            p: self.p,
        };
        if self.m_kib > Self::MAX_M_KIB
            || self.t > Self::MAX_T
            || self.t == 0
            || self.p > Self::MAX_P
        {
            return Err(err);
        }
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32)).map_err(|_| err)?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// The text of a key file for `identity`; sealed with `passphrase` if one is
/// given (Argon2id with `params`, then ChaCha20-Poly1305).
pub fn encode_key_file<R: rand_core::CryptoRng + ?Sized>(
    identity: &Identity,
    passphrase: Option<&str>,
    params: KdfParams,
    rng: &mut R,
) -> Result<Zeroizing<String>, KeyError> {
    let public = identity.to_public();
    let line = match passphrase {
        None => identity.to_secret_string(),
        Some(pass) => {
            let argon = params.check()?;
            let mut salt = [0u8; 16];
            rng.fill_bytes(&mut salt);
            let mut head = Enc::new();
            head.u32(params.m_kib)
                .u32(params.t)
                .u32(params.p)
                .raw(&salt);
            let key = passphrase_key(&argon, pass, &salt)?;
            let mut aad = KEY_FILE_AAD.to_vec();
            aad.extend_from_slice(&head.buf);
            let ct = primitives::aead_encrypt(&key, &aad, identity.secret.as_bytes());
            head.raw(&ct);
            let hrp = Hrp::parse(ENCRYPTED_HRP).expect("valid human-readable part");
            Zeroizing::new(
                bech32::encode_upper::<Bech32>(hrp, &head.buf).expect("76 bytes fit in Bech32"),
            )
        }
    };
    let protection = if passphrase.is_some() {
        "protected by a passphrase"
    } else {
        "not protected by a passphrase; keep this file private"
    };
    Ok(Zeroizing::new(format!(
        "# jam.togthr identity (X25519 secret key), {protection}\n# public key: {public}\n{}\n",
        line.as_str()
    )))
}

fn passphrase_key(
    argon: &argon2::Argon2<'_>,
    pass: &str,
    salt: &[u8; 16],
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass.as_bytes(), salt, key.as_mut())
        .map_err(|_| KeyError::WrongPassphrase)?;
    Ok(key)
}

/// True if the key file text holds a passphrase-protected key.
pub fn key_file_is_encrypted(text: &str) -> bool {
    key_line(text).is_some_and(|l| l.to_ascii_uppercase().starts_with("JAM-ENCRYPTED-KEY-1"))
}

fn key_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Reads the identity from key file text. A protected key needs
/// `passphrase` ([`KeyError::PassphraseRequired`] otherwise).
pub fn decode_key_file(text: &str, passphrase: Option<&str>) -> Result<Identity, KeyError> {
    let line = key_line(text).ok_or(KeyError::NoKeyLine)?;
    if !key_file_is_encrypted(text) {
        return Identity::from_secret_string(line);
    }
    let blob = Zeroizing::new(decode_bech32(line, ENCRYPTED_HRP).ok_or(KeyError::BadSecretKey)?);
    let mut d = Dec::new(&blob);
    let bad = |_| KeyError::BadSecretKey;
    let params = KdfParams {
        m_kib: d.u32().map_err(bad)?,
        t: d.u32().map_err(bad)?,
        p: d.u32().map_err(bad)?,
    };
    let salt: [u8; 16] = d.array().map_err(bad)?;
    let head_len = blob.len() - d.rest.len();
    let ct = d.rest;
    let pass = passphrase.ok_or(KeyError::PassphraseRequired)?;
    let argon = params.check()?;
    let key = passphrase_key(&argon, pass, &salt)?;
    let mut aad = KEY_FILE_AAD.to_vec();
    aad.extend_from_slice(&blob[..head_len]);
    let secret = primitives::aead_decrypt(&key, &aad, ct, 32).ok_or(KeyError::WrongPassphrase)?;
    let arr: [u8; 32] = secret
        .as_slice()
        .try_into()
        .expect("length checked by aead_decrypt");
    Ok(Identity::from_secret_bytes(arr))
}

/// Creates `path` holding `contents`, readable and writable by the owner
/// only (mode 0600 on Unix; elsewhere the platform default), and refuses to
/// replace an existing file. Missing parent folders are created (mode 0700
/// on Unix).
pub fn write_new_key_file(path: &Path, contents: &str) -> Result<(), KeyError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(parent)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn public_keys_print_and_parse() {
        let id = Identity::generate(&mut rng());
        let s = id.to_public().to_string();
        assert!(s.starts_with("jam1"), "{s}");
        assert_eq!(s.len(), 62);
        assert_eq!(s.parse::<Recipient>().unwrap(), id.to_public());
        assert_eq!(
            s.to_uppercase().parse::<Recipient>().unwrap(),
            id.to_public()
        );
        // One changed character is caught by the checksum.
        let mut t: Vec<char> = s.chars().collect();
        t[10] = if t[10] == 'q' { 'p' } else { 'q' };
        let t: String = t.into_iter().collect();
        assert!(matches!(t.parse::<Recipient>(), Err(KeyError::BadPublicKey(v)) if v == t));
        // A secret key is not a public key.
        assert!(id.to_secret_string().parse::<Recipient>().is_err());
    }

    #[test]
    fn weak_public_keys_are_refused() {
        let zero = Recipient::from_bytes([0u8; 32]);
        assert!(zero.is_weak());
        assert!(zero.to_string().parse::<Recipient>().is_err());
    }

    #[test]
    fn secret_keys_round_trip() {
        let id = Identity::generate(&mut rng());
        let s = id.to_secret_string();
        assert!(s.starts_with("JAM-SECRET-KEY-1"));
        let back = Identity::from_secret_string(&s).unwrap();
        assert_eq!(back.to_public(), id.to_public());
        assert!(Identity::from_secret_string(&id.to_public().to_string()).is_err());
    }

    #[test]
    fn key_files_with_and_without_passphrase() {
        let fast = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let id = Identity::generate(&mut rng());
        let plain = encode_key_file(&id, None, fast, &mut rng()).unwrap();
        assert!(!key_file_is_encrypted(&plain));
        assert!(plain.contains(&id.to_public().to_string()));
        assert_eq!(
            decode_key_file(&plain, None).unwrap().to_public(),
            id.to_public()
        );

        let sealed = encode_key_file(&id, Some("correct horse"), fast, &mut rng()).unwrap();
        assert!(key_file_is_encrypted(&sealed));
        assert!(!sealed.contains(id.to_secret_string().as_str()));
        assert!(matches!(
            decode_key_file(&sealed, None),
            Err(KeyError::PassphraseRequired)
        ));
        assert!(matches!(
            decode_key_file(&sealed, Some("wrong")),
            Err(KeyError::WrongPassphrase)
        ));
        let back = decode_key_file(&sealed, Some("correct horse")).unwrap();
        assert_eq!(back.to_public(), id.to_public());
        assert!(matches!(
            decode_key_file("# nothing\n", None),
            Err(KeyError::NoKeyLine)
        ));
        assert!(matches!(
            decode_key_file("garbage", None),
            Err(KeyError::BadSecretKey)
        ));
    }

    #[test]
    fn hostile_kdf_parameters_are_refused() {
        let huge = KdfParams {
            m_kib: u32::MAX,
            t: 1,
            p: 1,
        };
        let id = Identity::generate(&mut rng());
        assert!(matches!(
            encode_key_file(&id, Some("x"), huge, &mut rng()),
            Err(KeyError::KdfParams { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("jam-keys-{}", std::process::id()));
        let path = dir.join("sub").join("identity.key");
        write_new_key_file(&path, "secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_new_key_file(&path, "other").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
