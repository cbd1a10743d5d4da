use super::*;
use std::path::Path;

/// The host's functions do not matter to identities.
#[derive(Debug)]
struct NoFunctions;

impl charter_config::HostCatalog for NoFunctions {
    fn host_functions(&self) -> &[(&'static str, &'static str, charter_config::Effect)] {
        &[]
    }
}

fn deployment(extra: &str) -> Deployment {
    let text = format!("[deployment]\nname = \"t\"\nphase = 5\n{extra}");
    Deployment::parse(&text, Path::new("/x/charter.toml"), &NoFunctions).unwrap()
}

fn with_token(name: &str, kind: &str, m: &Minted) -> String {
    format!(
        "[identities.{name}]\nkind = \"{kind}\"\nroles = [\"finance\"]\ntokens = [\"{}\"]\n",
        m.hash
    )
}

#[test]
fn a_minted_token_authenticates_its_identity_until_it_expires() {
    let m = mint("bob", Some(2_000)).unwrap();
    assert!(m.token.starts_with("cht_bob_2000_"), "{}", m.token);
    assert_eq!(m.hash, hash(&m.token).to_string());
    let auth = Authenticator::new(&deployment(&with_token("bob", "person", &m)));
    assert!(auth.requires_tokens());
    let p = auth.authenticate(Some(&m.token), 1_999).unwrap();
    assert_eq!(p.name, "bob");
    assert_eq!(p.method, AuthMethod::Token);
    assert!(p.has_role("finance"));
    // Surrounding whitespace (a token read from a file) is not a new token.
    assert!(
        auth.authenticate(Some(&format!(" {}\n", m.token)), 0)
            .is_ok()
    );
    let err = auth.authenticate(Some(&m.token), 2_000).unwrap_err();
    assert_eq!(err.kind(), "expired-token");
    assert!(!err.to_string().contains(&m.token[14..]));
}

#[test]
fn forged_and_edited_tokens_are_refused() {
    let bob = mint("bob", None).unwrap();
    let eve = mint("eve", Some(10)).unwrap();
    let text = format!(
        "{}{}",
        with_token("bob", "person", &bob),
        with_token("eve", "service", &eve)
    );
    let auth = Authenticator::new(&deployment(&text));
    let secret = bob.token.rsplit_once('_').unwrap().1;
    let hostile = [
        (None, "no-token"),
        (Some(""), "no-token"),
        (Some("   "), "no-token"),
        (Some("Bearer x"), "malformed-token"),
        (Some("cht_bob"), "malformed-token"),
        (Some("cht__0_00"), "malformed-token"),
        // bob's secret under another name or a later expiry: the hash
        // covers the whole token.
        (Some(&*format!("cht_eve_0_{secret}")), "unknown-token"),
        (Some(&*format!("cht_bob_99_{secret}")), "unknown-token"),
        // eve's expired token with its expiry removed.
        (
            Some(&*eve.token.replacen("_10_", "_0_", 1)),
            "unknown-token",
        ),
        (Some(&*bob.token.to_uppercase()), "malformed-token"),
        (Some(&*format!("{}0", bob.token)), "malformed-token"),
        // The hash itself is not a token.
        (Some(&*bob.hash), "malformed-token"),
        (Some(&*"A".repeat(1 << 20)), "malformed-token"),
    ];
    for (token, want) in hostile {
        let err = auth.authenticate(token, 5).unwrap_err();
        assert_eq!(
            err.kind(),
            want,
            "{:?}",
            token.map(|t| &t[..t.len().min(40)])
        );
    }
    assert_eq!(
        auth.authenticate(Some(&eve.token), 5).unwrap().kind,
        IdentityKind::Service
    );
}

#[test]
fn a_claimed_name_is_accepted_only_where_no_token_exists() {
    let open = Authenticator::new(&deployment("[approvers.alice]\nroles = [\"finance\"]\n"));
    assert!(!open.requires_tokens());
    let p = open.claim("alice").unwrap();
    assert_eq!(p.method, AuthMethod::Claimed);
    assert!(matches!(open.claim("zed"), Err(ClaimError::Unknown { .. })));

    let bob = mint("bob", None).unwrap();
    let closed = Authenticator::new(&deployment(&with_token("bob", "person", &bob)));
    let err = closed.claim("bob").unwrap_err().to_string();
    assert!(err.contains("CHARTER_TOKEN"), "{err}");
}

#[test]
fn minting_refuses_names_that_could_not_be_read_back() {
    for bad in ["", "Bob", "a b", "x/y", "é"] {
        assert!(mint(bad, None).is_err(), "{bad:?}");
    }
    // Two mints never collide.
    assert_ne!(
        mint("a", None).unwrap().token,
        mint("a", None).unwrap().token
    );
}
