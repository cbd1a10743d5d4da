//! Who is asking: every front end turns what its caller presents (a bearer
//! token, or on the command line of a deployment without tokens, a name)
//! into a [`Principal`] here, and names that principal in the requests it
//! makes. A deployment that declares any token accepts no claimed name:
//! an unproven initiator would make separation of duties meaningless
//! (start a run as "nobody", approve it as yourself).

use charter_auth::{AuthError, Principal};

use crate::{ApiError, Control, ErrorClass};

/// What a caller presents.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// A bearer token (`Authorization: Bearer`, `CHARTER_TOKEN`).
    Token(&'a str),
    /// A name, as `--as NAME` gives it: accepted only where the
    /// deployment declares no token.
    Claim(&'a str),
    /// Nothing.
    Nothing,
}

impl Control {
    /// The principal `credential` proves, at the current time. Refusals
    /// are class `refused` (exit 2, HTTP 401) with kind
    /// `unauthenticated` and a message that never repeats the token.
    pub fn principal(&self, credential: Credential<'_>) -> Result<Principal, ApiError> {
        let p = self.any_principal(credential)?;
        // An AI agent's token serves its tools (`charter mcp`) and nothing
        // else: it starts no run, reads no log, decides no proposal.
        if p.kind == charter_config::IdentityKind::Agent {
            return Err(ApiError::new(
                ErrorClass::Refused,
                "unauthenticated",
                format!(
                    "{} is an agent: its token serves only its tools (`charter mcp --agent {}`), not the control API or the command line",
                    p.name, p.name
                ),
            ));
        }
        Ok(p)
    }

    fn any_principal(&self, credential: Credential<'_>) -> Result<Principal, ApiError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let auth = self.authenticator();
        match credential {
            Credential::Token(t) => auth.authenticate(Some(t), now).map_err(unauthenticated),
            Credential::Nothing => auth.authenticate(None, now).map_err(unauthenticated),
            Credential::Claim(name) => auth
                .claim(name)
                .map_err(|e| ApiError::new(ErrorClass::Refused, "unauthenticated", e.to_string())),
        }
    }
}

/// How long the host waits for an issuer's keys (`[oidc] jwks_url`).
pub const JWKS_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Control {
    /// Re-read the `[oidc]` issuer's keys, if a re-read is due
    /// ([`charter_auth::oidc::OidcVerifier::claim_refresh`]: at most one
    /// per `jwks_refresh_seconds`, however many requests ask): fetch
    /// `jwks_url` (bounded: [`JWKS_FETCH_TIMEOUT`], 1 MiB) or re-read
    /// `jwks_file`. `true` when new keys are in place. A failure is
    /// logged, and the keys held stay.
    pub async fn refresh_oidc_keys(&self) -> bool {
        let auth = self.authenticator();
        let Some(v) = auth.oidc() else {
            return false;
        };
        if !v.claim_refresh(charter_audit::now_ms()) {
            return false;
        }
        let read = match &v.config().jwks {
            charter_config::JwksSource::File(_) => v.reload_file(),
            charter_config::JwksSource::Url(url) => {
                let max = charter_auth::oidc::MAX_JWKS;
                match charter_runtime::fetch::get(url, JWKS_FETCH_TIMEOUT, max).await {
                    Ok(bytes) => v.set_jwks(&bytes),
                    Err(e) => Err(e),
                }
            }
        };
        match read {
            Ok(n) => {
                tracing::info!(keys = n, "oidc: the issuer's keys were read");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "oidc: the issuer's keys could not be read; the keys held stay");
                false
            }
        }
    }

    /// [`Control::principal`], and for a JWT whose `kid` the keys held do
    /// not know (the issuer may have rotated), once more after a re-read
    /// of the keys if one is due.
    pub async fn principal_refreshing(
        &self,
        credential: Credential<'_>,
    ) -> Result<Principal, ApiError> {
        let first = self.principal(credential);
        let (Err(_), Credential::Token(t)) = (&first, credential) else {
            return first;
        };
        let now = charter_audit::now_ms() / 1000;
        let unknown_kid = matches!(
            self.authenticator().authenticate(Some(t), now),
            Err(AuthError::Jwt {
                kind: "jwt-unknown-key",
                ..
            })
        );
        if unknown_kid && self.refresh_oidc_keys().await {
            return self.principal(credential);
        }
        first
    }
}

fn unauthenticated(e: AuthError) -> ApiError {
    ApiError::new(ErrorClass::Refused, "unauthenticated", e.to_string())
}

impl Control {
    /// Record refused authentications of a running host's front end
    /// (`charter up`): only [`charter_audit::Event::AuthRefused`] and
    /// [`charter_audit::Event::AuthRefusalsSuppressed`] are taken (a front
    /// end records nothing else this way). On disk before it returns.
    pub async fn record_auth_refusals(
        &self,
        events: Vec<charter_audit::Event>,
    ) -> Result<(), ApiError> {
        use charter_audit::Event;
        if events.is_empty() {
            return Ok(());
        }
        if let Some(e) = events.iter().find(|e| {
            !matches!(
                e,
                Event::AuthRefused { .. } | Event::AuthRefusalsSuppressed { .. }
            )
        }) {
            return Err(ApiError::usage(format!(
                "only authentication refusals are recorded this way, not {}",
                e.kind()
            )));
        }
        let host = self.host()?;
        host.log()
            .append(events)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        Ok(())
    }
}
