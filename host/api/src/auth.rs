//! Who is asking: every front end turns what its caller presents (a bearer
//! token, or on the command line of a deployment without tokens, a name)
//! into a [`Principal`] here, and names that principal in the requests it
//! makes. A deployment that declares any token accepts no claimed name:
//! an unproven initiator would make separation of duties meaningless
//! (start a run as "nobody", approve it as yourself).

use charter_auth::{AuthError, Authenticator, Principal};

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
    /// The deployment's identities and token hashes.
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// The principal `credential` proves, at the current time. Refusals
    /// are class `refused` (exit 2, HTTP 401) with kind
    /// `unauthenticated` and a message that never repeats the token.
    pub fn principal(&self, credential: Credential<'_>) -> Result<Principal, ApiError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match credential {
            Credential::Token(t) => self
                .auth
                .authenticate(Some(t), now)
                .map_err(unauthenticated),
            Credential::Nothing => self.auth.authenticate(None, now).map_err(unauthenticated),
            Credential::Claim(name) => self
                .auth
                .claim(name)
                .map_err(|e| ApiError::new(ErrorClass::Refused, "unauthenticated", e.to_string())),
        }
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
