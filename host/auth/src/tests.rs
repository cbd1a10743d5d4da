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

// ---- OIDC -------------------------------------------------------------------

mod jwt {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::json;

    /// Test-only keys (tests/fixtures/oidc/README.md).
    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/oidc")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn rsa(name: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(&fixture(name)).unwrap()
    }

    fn ec() -> EncodingKey {
        EncodingKey::from_ec_pem(&fixture("ec.pem")).unwrap()
    }

    fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
        let mut j = Jwk::from_encoding_key(key, alg).unwrap();
        j.common.key_id = Some(kid.into());
        j
    }

    /// The issuer's keys: rsa-a as "a", the P-256 key as "e", and an
    /// HMAC ("oct") key "h" that must be ignored.
    fn jwks() -> Vec<u8> {
        let set = JwkSet {
            keys: vec![
                jwk(&rsa("rsa-a.pem"), Algorithm::RS256, "a"),
                jwk(&ec(), Algorithm::ES256, "e"),
            ],
        };
        let mut v = serde_json::to_value(set).unwrap();
        v["keys"].as_array_mut().unwrap().push(json!({
            "kty": "oct", "kid": "h", "k": "c2hhcmVkLXNlY3JldC1zaGFyZWQtc2VjcmV0"
        }));
        serde_json::to_vec(&v).unwrap()
    }

    const NOW: u64 = 1_800_000_000;

    fn oidc_deployment() -> Authenticator {
        // One file per call: the tests run in parallel in one process.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("charter-auth-jwks-{}-{n}.json", std::process::id()));
        std::fs::write(&path, jwks()).unwrap();
        let d = deployment(&format!(
            "[oidc]\nissuer = \"https://idp.test\"\naudience = \"charter\"\njwks_file = \"{}\"\n\
             [identities.bob]\nroles = [\"finance\"]\noidc_subjects = [\"u-bob\"]\n\
             [identities.ci]\nkind = \"service\"\noidc_subjects = [\"u-ci\"]\n",
            path.display()
        ));
        let auth = Authenticator::new(&d);
        std::fs::remove_file(&path).unwrap();
        auth
    }

    fn claims(sub: &str) -> serde_json::Value {
        json!({"iss": "https://idp.test", "aud": "charter", "sub": sub, "exp": NOW + 300, "nbf": NOW - 10})
    }

    fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, c: &serde_json::Value) -> String {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        encode(&h, c, key).unwrap()
    }

    fn refused(auth: &Authenticator, jwt: &str) -> &'static str {
        match auth.authenticate(Some(jwt), NOW) {
            Ok(p) => panic!("accepted as {}", p.name),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn a_jwt_of_the_issuer_proves_the_identity_its_subject_maps_to() {
        let auth = oidc_deployment();
        assert!(auth.requires_tokens(), "an issuer makes proof required");
        assert_eq!(
            auth.oidc().unwrap().key_ids(),
            vec!["a", "e"],
            "the oct key is ignored"
        );
        let rs = sign(Algorithm::RS256, "a", &rsa("rsa-a.pem"), &claims("u-bob"));
        let p = auth.authenticate(Some(&rs), NOW).unwrap();
        assert_eq!((p.name.as_str(), &p.method), ("bob", &AuthMethod::Oidc));
        // Roles are the file's, not the token's.
        assert_eq!(p.roles, vec!["finance"]);
        let mut with_roles = claims("u-ci");
        with_roles["roles"] = json!(["finance", "admin"]);
        let es = sign(Algorithm::ES256, "e", &ec(), &with_roles);
        let p = auth.authenticate(Some(&es), NOW).unwrap();
        assert_eq!(p.name, "ci");
        assert!(p.roles.is_empty(), "a roles claim grants nothing");
        // Within the leeway of exp and nbf.
        let mut edge = claims("u-bob");
        edge["exp"] = json!(NOW - 20);
        edge["nbf"] = json!(NOW + 20);
        assert!(
            auth.authenticate(
                Some(&sign(Algorithm::RS256, "a", &rsa("rsa-a.pem"), &edge)),
                NOW
            )
            .is_ok()
        );
    }

    /// An applied configuration that moves or removes a subject: the JWT
    /// proves the identity the new file maps it to, or nothing; the keys
    /// held stay.
    #[test]
    fn a_subject_follows_the_identities_in_force() {
        let auth = oidc_deployment();
        let bob = sign(Algorithm::RS256, "a", &rsa("rsa-a.pem"), &claims("u-bob"));
        assert_eq!(auth.authenticate(Some(&bob), NOW).unwrap().name, "bob");
        let oidc = "[oidc]\nissuer = \"https://idp.test\"\naudience = \"charter\"\njwks_file = \"/nonexistent\"\n";
        let moved = auth.with_identities_of(&deployment(&format!(
            "{oidc}[identities.bob]\nroles = [\"finance\"]\n\
             [identities.viewer]\noidc_subjects = [\"u-bob\"]\n"
        )));
        let p = moved.authenticate(Some(&bob), NOW).unwrap();
        assert_eq!((p.name.as_str(), p.roles.len()), ("viewer", 0));
        let removed = auth.with_identities_of(&deployment(&format!(
            "{oidc}[identities.bob]\nroles = [\"finance\"]\n"
        )));
        assert_eq!(refused(&removed, &bob), "jwt-unknown-subject");
    }

    #[test]
    fn refused_jwts_say_why() {
        let auth = oidc_deployment();
        let a = rsa("rsa-a.pem");
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims("u-bob");
            f(&mut c);
            sign(Algorithm::RS256, "a", &a, &c)
        };
        assert_eq!(
            refused(&auth, &with(&|c| c["exp"] = json!(NOW - 31))),
            "jwt-expired"
        );
        assert_eq!(
            refused(&auth, &with(&|c| c["nbf"] = json!(NOW + 31))),
            "jwt-not-yet-valid"
        );
        assert_eq!(
            refused(&auth, &with(&|c| c["iss"] = json!("https://evil.test"))),
            "jwt-wrong-issuer"
        );
        assert_eq!(
            refused(&auth, &with(&|c| c["aud"] = json!("other"))),
            "jwt-wrong-audience"
        );
        assert_eq!(
            refused(&auth, &with(&|c| c["sub"] = json!("u-eve"))),
            "jwt-unknown-subject"
        );
        for claim in ["exp", "iss", "aud", "sub"] {
            let k = refused(
                &auth,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove(claim);
                }),
            );
            assert!(k.starts_with("jwt-"), "{claim}: {k}");
        }
        // Signed by another RSA key under the issuer's kid.
        let forged = sign(Algorithm::RS256, "a", &rsa("rsa-b.pem"), &claims("u-bob"));
        assert_eq!(refused(&auth, &forged), "jwt-bad-signature");
        // A body changed after signing.
        let good = sign(Algorithm::RS256, "a", &a, &claims("u-bob"));
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims("u-ci")).unwrap());
        parts[1] = &evil;
        assert_eq!(refused(&auth, &parts.join(".")), "jwt-bad-signature");
        // An unknown kid, and none at all.
        let unknown = sign(Algorithm::RS256, "b", &rsa("rsa-b.pem"), &claims("u-bob"));
        assert_eq!(refused(&auth, &unknown), "jwt-unknown-key");
        let mut h = Header::new(Algorithm::RS256);
        h.kid = None;
        assert_eq!(
            refused(&auth, &encode(&h, &claims("u-bob"), &a).unwrap()),
            "jwt-unknown-key"
        );
        // An RSA key's kid on an ES256 token: the key decides the algorithm.
        let crossed = sign(Algorithm::ES256, "a", &ec(), &claims("u-bob"));
        assert_eq!(refused(&auth, &crossed), "jwt-algorithm");
        // Not a JWT at all.
        assert_eq!(refused(&auth, "a.b"), "malformed-token");
        assert_eq!(refused(&auth, "!!.??.**"), "malformed-token");
        assert_eq!(refused(&auth, "eyJ.eyJ.x"), "jwt-malformed");
    }

    use base64::Engine as _;

    #[test]
    fn alg_none_and_hmac_with_the_public_key_are_refused() {
        let auth = oidc_deployment();
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        let body = b64(&claims("u-bob"));
        for alg in ["none", "None", "NONE", ""] {
            let head = b64(&json!({"alg": alg, "kid": "a", "typ": "JWT"}));
            assert_eq!(
                refused(&auth, &format!("{head}.{body}.")),
                "jwt-algorithm",
                "{alg}"
            );
        }
        // The classic confusion: HS256 keyed with the RSA public key the
        // JWKS publishes (as PEM and as the JWK's modulus).
        let public = fixture("rsa-a.pub.pem");
        for secret in [&public[..], b"c2hhcmVkLXNlY3JldC1zaGFyZWQtc2VjcmV0"] {
            for kid in ["a", "h"] {
                let jwt = sign(
                    Algorithm::HS256,
                    kid,
                    &EncodingKey::from_secret(secret).unwrap(),
                    &claims("u-bob"),
                );
                assert_eq!(refused(&auth, &jwt), "jwt-algorithm", "{kid}");
            }
        }
        // Even a deployment that lists HS256 cannot be made: only RS256/ES256.
        let text = "[deployment]\nname = \"t\"\nphase = 5\n[oidc]\nissuer = \"i\"\naudience = \"a\"\n\
                    jwks_url = \"https://i/jwks\"\nalgorithms = [\"RS256\", \"HS256\"]\n";
        let e = Deployment::parse(text, Path::new("/x/charter.toml"), &NoFunctions).unwrap_err();
        assert!(e.to_string().contains("HS256"), "{e}");
    }

    /// The keys decide who may sign in: fetched over TLS, or plain HTTP
    /// only from a literal loopback address (whoever is on the path of a
    /// plain fetch could answer with keys of their own).
    #[test]
    fn a_jwks_url_is_https_or_loopback() {
        let parse = |url: &str| {
            let text = format!(
                "[deployment]\nname = \"t\"\nphase = 5\n[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"{url}\"\n"
            );
            Deployment::parse(&text, Path::new("/x/charter.toml"), &NoFunctions)
        };
        for ok in [
            "https://idp.example.com/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]:9/k",
            "http://127.0.0.1",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://localhost/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "http://10.0.0.1/jwks",
            "ftp://127.0.0.1/jwks",
            "https://user@idp.example.com/jwks",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("https://"), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_are_refreshed_at_most_once_per_interval() {
        let auth = oidc_deployment();
        let v = auth.oidc().unwrap();
        assert!(v.claim_refresh(1_000_000));
        assert!(
            !v.claim_refresh(1_000_000 + 59_999),
            "a flood of unknown kids fetches nothing"
        );
        assert!(v.claim_refresh(1_000_000 + 60_000));
        // A rotation: b's key replaces a's; a's tokens stop verifying.
        let set = JwkSet {
            keys: vec![jwk(&rsa("rsa-b.pem"), Algorithm::RS256, "b")],
        };
        assert_eq!(v.set_jwks(&serde_json::to_vec(&set).unwrap()), Ok(1));
        let b = sign(Algorithm::RS256, "b", &rsa("rsa-b.pem"), &claims("u-bob"));
        assert_eq!(auth.authenticate(Some(&b), NOW).unwrap().name, "bob");
        let a = sign(Algorithm::RS256, "a", &rsa("rsa-a.pem"), &claims("u-bob"));
        assert_eq!(refused(&auth, &a), "jwt-unknown-key");
        // A document that is not a JWKS keeps the keys.
        assert!(v.set_jwks(b"{\"nokeys\": 1}").is_err());
        assert_eq!(v.key_ids(), vec!["b"]);
    }

    #[test]
    fn subjects_map_to_one_identity_and_need_an_issuer() {
        let e = Deployment::parse(
            "[deployment]\nname = \"t\"\nphase = 5\n[identities.bob]\noidc_subjects = [\"x\"]\n",
            Path::new("/x/charter.toml"),
            &NoFunctions,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no [oidc]"), "{e}");
        let e = Deployment::parse(
            "[deployment]\nname = \"t\"\nphase = 5\n[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"k\"\n\
             [identities.bob]\noidc_subjects = [\"x\"]\n[identities.eve]\noidc_subjects = [\"x\"]\n",
            Path::new("/x/charter.toml"),
            &NoFunctions,
        )
        .unwrap_err();
        assert!(e.to_string().contains("declared twice"), "{e}");
    }
}
