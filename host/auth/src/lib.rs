//! Who is asking: a deployment's identities (`[identities.NAME]`) and the
//! bearer tokens they authenticate with.
//!
//! A token is `cht_<identity>_<expiry>_<64 hex digits of randomness>`:
//! the identity and expiry (Unix seconds, `0` for never) are readable, so an
//! operator can tell which token a log line or a leaked string is; they
//! cannot be edited, because the file holds the SHA-256 of the *whole*
//! token and nothing else. Checking one is a hash, a map lookup by that
//! hash and a constant-time comparison: no token value is ever stored,
//! logged or compared byte by byte.
//!
//! **Invariant:** [`Authenticator::authenticate`] is the only way to a
//! [`Principal`] from a request; the API layer derives every person an
//! event records (initiator, approver, operator) from it, never from a
//! name the request claims.

use std::collections::HashMap;
use std::sync::Arc;

use charter_config::{Deployment, IdentityKind, TokenHash};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix every Charter token starts with (secret scanners key on it).
pub const TOKEN_PREFIX: &str = "cht_";

/// Bytes of randomness in a token.
const SECRET_BYTES: usize = 32;

/// How a principal proved who it is; recorded beside every decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "method")]
pub enum AuthMethod {
    /// A bearer token whose hash the deployment declares.
    Token,
    /// A name given on the command line of a deployment that declares no
    /// token at all: nobody proved anything (demos and single-user use).
    Claimed,
    /// A JWT of the deployment's `[oidc]` issuer whose subject an identity
    /// lists in `oidc_subjects`.
    Oidc,
}

impl AuthMethod {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMethod::Token => "token",
            AuthMethod::Claimed => "claimed",
            AuthMethod::Oidc => "oidc",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    pub name: String,
    pub kind: IdentityKind,
    pub roles: Vec<String>,
    pub method: AuthMethod,
}

impl Principal {
    /// Whether it holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a request is not authenticated (HTTP 401). The messages never
/// repeat the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no token: send `Authorization: Bearer <token>` (the command line reads CHARTER_TOKEN)"
    )]
    Missing,
    #[error(
        "not a Charter token: tokens start with \"cht_\"; mint one with `charter tokens create NAME`"
    )]
    Malformed,
    #[error(
        "unknown token: no identity in this deployment declares its hash (revoked, or for another deployment)"
    )]
    Unknown,
    #[error(
        "the token of {identity} expired at {expired} (Unix seconds); mint a new one with `charter tokens create {identity}`"
    )]
    Expired { identity: String, expired: u64 },
    /// A JWT refused ([`oidc`]); `kind` says why (`jwt-expired`,
    /// `jwt-wrong-issuer`, `jwt-wrong-audience`, `jwt-bad-signature`,
    /// `jwt-unknown-key`, `jwt-algorithm`, `jwt-unknown-subject`, ...).
    #[error("{message}")]
    Jwt { kind: &'static str, message: String },
}

impl AuthError {
    /// A short stable label for events and JSON bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Missing => "no-token",
            AuthError::Malformed => "malformed-token",
            AuthError::Unknown => "unknown-token",
            AuthError::Expired { .. } => "expired-token",
            AuthError::Jwt { kind, .. } => kind,
        }
    }
}

/// A freshly minted token: shown once, then only its hash exists.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Minted {
    pub identity: String,
    pub token: String,
    pub hash: String,
    /// Unix seconds; `None` for a token that never expires.
    pub expires: Option<u64>,
}

/// Mint a token for `identity` expiring at `expires` (Unix seconds).
pub fn mint(identity: &str, expires: Option<u64>) -> Result<Minted, String> {
    if identity.is_empty() || identity.contains(|c: char| !valid_name_char(c)) {
        return Err(format!(
            "identity name {identity:?} must be lowercase letters, digits, '-' or '_'"
        ));
    }
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)
        .map_err(|e| format!("the operating system's random source failed: {e}"))?;
    let token = format!(
        "{TOKEN_PREFIX}{identity}_{}_{}",
        expires.unwrap_or(0),
        hex::encode(secret)
    );
    let hash = hash(&token).to_string();
    Ok(Minted {
        identity: identity.to_string(),
        token,
        hash,
        expires,
    })
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

/// The SHA-256 of a token, as the file declares it.
pub fn hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// The readable parts of a token: identity and expiry. `None` when it is
/// not shaped like a Charter token.
fn parts(token: &str) -> Option<(&str, u64)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (rest, secret) = rest.rsplit_once('_')?;
    let (name, expiry) = rest.rsplit_once('_')?;
    let shaped = secret.len() == SECRET_BYTES * 2
        && secret.bytes().all(|b| b.is_ascii_hexdigit())
        && !name.is_empty()
        && name.chars().all(valid_name_char);
    shaped.then_some(())?;
    Some((name, expiry.parse().ok()?))
}

/// Checks bearer tokens against one deployment's identities.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// Token hash → identity name.
    by_hash: HashMap<[u8; 32], String>,
    identities: HashMap<String, charter_config::Identity>,
    /// OIDC subject → identity name, of these identities (rebuilt with
    /// them: a subject moved or removed by an applied configuration
    /// proves the new identity, or none).
    subjects: HashMap<String, String>,
    oidc: Option<Arc<oidc::OidcVerifier>>,
}

impl Authenticator {
    pub fn new(deployment: &Deployment) -> Authenticator {
        Authenticator {
            oidc: oidc::OidcVerifier::new(deployment).map(Arc::new),
            ..Authenticator::new_without_oidc(deployment)
        }
    }

    /// The identities and tokens of `deployment`, with this one's `[oidc]`
    /// verifier and the keys it holds (an applied configuration changes
    /// who holds which token and role; `[oidc]` changes only at a restart).
    pub fn with_identities_of(&self, deployment: &Deployment) -> Authenticator {
        Authenticator {
            oidc: self.oidc.clone(),
            ..Authenticator::new_without_oidc(deployment)
        }
    }

    fn new_without_oidc(deployment: &Deployment) -> Authenticator {
        let mut by_hash = HashMap::new();
        for (name, id) in &deployment.identities {
            for h in &id.tokens {
                by_hash.insert(h.0, name.clone());
            }
        }
        let subjects = deployment
            .identities
            .values()
            .flat_map(|i| i.oidc_subjects.iter().map(|s| (s.clone(), i.name.clone())))
            .collect();
        Authenticator {
            by_hash,
            subjects,
            identities: deployment
                .identities
                .iter()
                .map(|(n, i)| (n.clone(), i.clone()))
                .collect(),
            oidc: None,
        }
    }

    /// The `[oidc]` verifier, if the deployment declares an issuer.
    pub fn oidc(&self) -> Option<&Arc<oidc::OidcVerifier>> {
        self.oidc.as_ref()
    }

    /// The declared identity a token names (its readable part), if it is
    /// shaped like a Charter token and that identity exists; proves
    /// nothing (for the record of a refused token: "a revoked token of
    /// bob"), and never returns any part of the secret.
    pub fn named_identity(&self, token: &str) -> Option<&str> {
        let (name, _) = parts(token.trim())?;
        self.identities.get(name).map(|i| i.name.as_str())
    }

    /// Whether any identity declares a token: then every decision needs
    /// one, on the command line as through the API.
    pub fn requires_tokens(&self) -> bool {
        !self.by_hash.is_empty() || self.oidc.is_some()
    }

    /// The principal a bearer token proves, at `now` (Unix seconds).
    pub fn authenticate(&self, token: Option<&str>, now: u64) -> Result<Principal, AuthError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let token = token.ok_or(AuthError::Missing)?;
        if let Some(v) = &self.oidc
            && !token.starts_with(TOKEN_PREFIX)
            && oidc::looks_like_jwt(token)
        {
            let subject = v.verify(token, now)?;
            let name = self.subjects.get(&subject).ok_or_else(|| {
                oidc::jwt_error(
                    "jwt-unknown-subject",
                    format!(
                        "subject \"{}\" is no identity's oidc_subjects in this deployment",
                        shown(&subject)
                    ),
                )
            })?;
            let id = self.identities.get(name).ok_or(AuthError::Unknown)?;
            return Ok(Principal {
                name: id.name.clone(),
                kind: id.kind,
                roles: id.roles.clone(),
                method: AuthMethod::Oidc,
            });
        }
        let (name, expiry) = parts(token).ok_or(AuthError::Malformed)?;
        let h = hash(token);
        let holder = self.by_hash.get(&h.0).ok_or(AuthError::Unknown)?;
        // The hash covers the name, so a holder other than the name the
        // token shows cannot happen unless two identities declare one hash;
        // refuse rather than pick one.
        let same = holder.as_bytes().ct_eq(name.as_bytes());
        if !bool::from(same) {
            return Err(AuthError::Unknown);
        }
        if expiry != 0 && now >= expiry {
            return Err(AuthError::Expired {
                identity: name.to_string(),
                expired: expiry,
            });
        }
        let id = self.identities.get(name).ok_or(AuthError::Unknown)?;
        Ok(Principal {
            name: id.name.clone(),
            kind: id.kind,
            roles: id.roles.clone(),
            method: AuthMethod::Token,
        })
    }

    /// A name claimed on the command line, accepted only by a deployment
    /// that declares no token (nothing to prove it with); it must still be
    /// a declared identity.
    pub fn claim(&self, name: &str) -> Result<Principal, ClaimError> {
        if self.requires_tokens() {
            return Err(ClaimError::TokenRequired {
                name: name.to_string(),
            });
        }
        let id = self
            .identities
            .get(name)
            .ok_or_else(|| ClaimError::Unknown {
                name: name.to_string(),
                known: self.identities.keys().cloned().collect(),
            })?;
        Ok(Principal {
            name: id.name.clone(),
            kind: id.kind,
            roles: id.roles.clone(),
            method: AuthMethod::Claimed,
        })
    }
}

/// Why a claimed name is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "this deployment declares tokens, so `--as {name}` proves nothing: set CHARTER_TOKEN to {name}'s token (`charter tokens create {name}`)"
    )]
    TokenRequired { name: String },
    #[error("{name} is not an identity of this deployment (known: {})", known.join(", "))]
    Unknown { name: String, known: Vec<String> },
}

/// `s` for an error message: at most 80 characters, control characters
/// escaped (a refused credential's parts are the sender's text).
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

pub mod oidc;

#[cfg(test)]
mod tests;
