//! OIDC: a JWT signed by the configured issuer's key proves the identity
//! whose `oidc_subjects` lists its subject (`[oidc] subject_claim`, `sub`
//! unless set).
//!
//! **Trust decision.** The issuer proves *who* a caller is, never *what*
//! they may do: kind and roles are the identity's in `charter.toml`; a
//! roles or groups claim is not read. A subject no identity lists proves
//! nothing. So a compromised or misconfigured issuer can at worst act as
//! an identity it is mapped to; it cannot mint an approver or a role.
//!
//! **What a JWT must be.** Its header's `alg` is in `[oidc] algorithms`
//! (RS256 and/or ES256 only: never `none`, never an HMAC, so a public key
//! can never serve as a shared secret) and equals the algorithm of the key
//! its `kid` names (an RSA key verifies RS256 only, a P-256 key ES256
//! only); the signature verifies; `iss` is the issuer exactly; `aud`
//! contains the audience; `exp` is in the future and `nbf`, when present,
//! in the past, within `leeway_seconds`. `exp`, `iss`, `aud` and the
//! subject claim are required.
//!
//! **Keys.** A JWKS document (`{"keys": [...]}`) read from `jwks_file` when
//! the verifier is made, or put in by the host that fetched `jwks_url`
//! ([`OidcVerifier::set_jwks`]). Keys of other types (`oct`: a shared
//! secret, `OKP`, P-384), RSA keys under 2048 bits and keys without a
//! `kid` are ignored. A `kid` the keys do not hold may mean the issuer
//! rotated: [`OidcVerifier::claim_refresh`] lets one re-read happen per
//! `jwks_refresh_seconds`, whatever the rate of unknown `kid`s.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use base64::Engine as _;
use charter_config::{Deployment, JwksSource, Oidc};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::AuthError;

/// The longest JWT accepted (bytes).
pub const MAX_JWT: usize = 16 * 1024;
/// The largest JWKS document read (bytes).
pub const MAX_JWKS: usize = 1 << 20;

/// Whether `token` is shaped like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// Verifies JWTs of one issuer.
pub struct OidcVerifier {
    config: Oidc,
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    /// When keys were last (re)read, Unix ms; `None`: never.
    last_refresh: Mutex<Option<u64>>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.config.issuer)
            .field("keys", &self.key_ids())
            .finish()
    }
}

pub(crate) fn jwt_error(kind: &'static str, message: impl Into<String>) -> AuthError {
    AuthError::Jwt {
        kind,
        message: message.into(),
    }
}

impl OidcVerifier {
    /// The verifier of `deployment`'s `[oidc]`, if declared; keys from a
    /// `jwks_file` are read now (a file that cannot be read leaves no key:
    /// every JWT is refused, and the error is logged by the caller through
    /// [`OidcVerifier::reload_file`]).
    pub fn new(deployment: &Deployment) -> Option<OidcVerifier> {
        let config = deployment.oidc.clone()?;
        let v = OidcVerifier {
            config,
            keys: RwLock::default(),
            last_refresh: Mutex::default(),
        };
        let _ = v.reload_file();
        Some(v)
    }

    /// The configuration verified against.
    pub fn config(&self) -> &Oidc {
        &self.config
    }

    /// The `kid`s held.
    pub fn key_ids(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    }

    /// Re-read `jwks_file` (nothing for a `jwks_url`): the number of keys
    /// kept.
    pub fn reload_file(&self) -> Result<usize, String> {
        let JwksSource::File(path) = &self.config.jwks else {
            return Ok(0);
        };
        let bytes = std::fs::read(path)
            .map_err(|e| format!("oidc: cannot read jwks_file {}: {e}", path.display()))?;
        self.set_jwks(&bytes)
    }

    /// Replace the keys with those of a JWKS document: the number kept.
    /// A document that is not a JWKS leaves the keys as they were.
    pub fn set_jwks(&self, bytes: &[u8]) -> Result<usize, String> {
        if bytes.len() > MAX_JWKS {
            return Err(format!("oidc: the JWKS is over {MAX_JWKS} bytes"));
        }
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("oidc: the JWKS is not JSON: {e}"))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err("oidc: the JWKS has no \"keys\" array".into());
        };
        let mut keys = HashMap::new();
        for k in list {
            if let Some((kid, key, alg)) = usable_key(k) {
                keys.insert(kid, (key, alg));
            }
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        Ok(n)
    }

    /// Whether a re-read of the keys may happen at `now_ms` (at most one
    /// per `jwks_refresh_seconds`); taking it starts the next interval.
    pub fn claim_refresh(&self, now_ms: u64) -> bool {
        let mut last = self
            .last_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|t| now_ms.saturating_sub(t) >= self.config.refresh_secs * 1000);
        if due {
            *last = Some(now_ms);
        }
        due
    }

    /// The subject `jwt` proves at `now` (Unix seconds): whose it is, the
    /// [`crate::Authenticator`] says, from the identities in force.
    pub fn verify(&self, jwt: &str, now: u64) -> Result<String, AuthError> {
        if jwt.len() > MAX_JWT || !looks_like_jwt(jwt) {
            return Err(jwt_error(
                "jwt-malformed",
                "not a JWT (three base64url parts)",
            ));
        }
        let header = raw_header(jwt)?;
        let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
        if !self.config.algorithms.iter().any(|a| a == alg_name) {
            return Err(jwt_error(
                "jwt-algorithm",
                format!(
                    "the JWT's algorithm \"{}\" is not accepted (accepted: {})",
                    crate::shown(alg_name),
                    self.config.algorithms.join(", ")
                ),
            ));
        }
        let kid = header.get("kid").and_then(Value::as_str).unwrap_or("");
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let Some((key, key_alg)) = keys.get(kid) else {
            return Err(jwt_error(
                "jwt-unknown-key",
                format!(
                    "no key \"{}\" in the issuer's keys (rotated, or not this issuer's)",
                    crate::shown(kid)
                ),
            ));
        };
        // The key decides the algorithm, not the token: an RSA key never
        // verifies anything but RS256.
        if format!("{key_alg:?}") != alg_name {
            return Err(jwt_error(
                "jwt-algorithm",
                format!("key {kid:?} verifies {key_alg:?}, not {alg_name}"),
            ));
        }
        let mut v = Validation::new(*key_alg);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = self.config.leeway_secs;
        v.validate_nbf = true;
        v.validate_exp = true;
        let data = decode_at(jwt, key, &v, now).map_err(claims_error)?;
        drop(keys);
        let subject = data
            .get(&self.config.subject_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                jwt_error(
                    "jwt-unknown-subject",
                    format!("the JWT has no {:?} claim", self.config.subject_claim),
                )
            })?;
        Ok(subject.to_string())
    }
}

/// Decode and validate `jwt` with the clock at `now` (Unix seconds): the
/// library checks `exp`/`nbf` against the system clock, so they are
/// checked here against `now` instead, and the library's own time checks
/// are turned off.
fn decode_at(
    jwt: &str,
    key: &DecodingKey,
    v: &Validation,
    now: u64,
) -> Result<serde_json::Map<String, Value>, jsonwebtoken::errors::Error> {
    use jsonwebtoken::errors::ErrorKind;
    let mut v = v.clone();
    v.validate_exp = false;
    v.validate_nbf = false;
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(jwt, key, &v)?;
    let claims = data.claims;
    let time = |name: &str| claims.get(name).map(|c| c.as_u64());
    match time("exp") {
        Some(Some(exp)) if exp.saturating_add(v.leeway) > now => {}
        Some(Some(_)) => return Err(ErrorKind::ExpiredSignature.into()),
        _ => return Err(ErrorKind::InvalidClaimFormat("exp".into()).into()),
    }
    match time("nbf") {
        None => {}
        Some(Some(nbf)) if nbf <= now.saturating_add(v.leeway) => {}
        Some(Some(_)) => return Err(ErrorKind::ImmatureSignature.into()),
        Some(None) => return Err(ErrorKind::InvalidClaimFormat("nbf".into()).into()),
    }
    Ok(claims)
}

fn claims_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => jwt_error("jwt-expired", "the JWT has expired (exp)"),
        K::ImmatureSignature => jwt_error("jwt-not-yet-valid", "the JWT is not valid yet (nbf)"),
        K::InvalidIssuer => jwt_error(
            "jwt-wrong-issuer",
            "the JWT's issuer (iss) is not this deployment's",
        ),
        K::InvalidAudience => jwt_error(
            "jwt-wrong-audience",
            "the JWT's audience (aud) is not this deployment's",
        ),
        K::InvalidSignature => {
            jwt_error("jwt-bad-signature", "the JWT's signature does not verify")
        }
        K::InvalidAlgorithm | K::MissingAlgorithm => jwt_error(
            "jwt-algorithm",
            "the JWT's algorithm does not match its key",
        ),
        K::MissingRequiredClaim(c) => {
            jwt_error("jwt-malformed", format!("the JWT lacks the {c:?} claim"))
        }
        _ => jwt_error("jwt-malformed", format!("the JWT is not valid: {e}")),
    }
}

/// The JWT's header as JSON, read without trusting it (the algorithm is
/// checked against the allow-list before anything else).
fn raw_header(jwt: &str) -> Result<serde_json::Map<String, Value>, AuthError> {
    let part = jwt.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| jwt_error("jwt-malformed", "the JWT's header is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| jwt_error("jwt-malformed", "the JWT's header is not a JSON object"))
}

/// A JWK this verifier uses: RSA (≥ 2048 bits, RS256) or EC P-256
/// (ES256), with a `kid`, for signatures, and an `alg` (if it says one)
/// that agrees.
fn usable_key(v: &Value) -> Option<(String, DecodingKey, Algorithm)> {
    let jwk: Jwk = serde_json::from_value(v.clone()).ok()?;
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.n.trim_end_matches('='))
                .ok()?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            (bits >= 2048).then_some(Algorithm::RS256)?
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    if let Some(said) = v.get("alg").and_then(Value::as_str)
        && said != format!("{alg:?}")
    {
        return None;
    }
    if let Some(u) = v.get("use").and_then(Value::as_str)
        && u != "sig"
    {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, key, alg))
}
