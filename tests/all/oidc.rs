//! OIDC end to end (issue 13 item 2): `charter up` fetches its issuer's
//! JWKS from a loopback URL, a JWT proves the identity its subject maps
//! to, the approval it makes records `auth: oidc`, every refused JWT is a
//! 401 and an `auth-refused` event with its reason, a rotated key is
//! fetched on its unknown `kid` and a flood of unknown `kid`s fetches the
//! keys at most once per interval. The keys are test-only
//! (tests/fixtures/oidc/README.md).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::cli::refunds_deployment;
use crate::up::{http, mint, up, wait_for};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/oidc")
            .join(name),
    )
    .unwrap()
}

fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture(name)).unwrap()
}

fn jwks(keys: &[(&str, &str)]) -> Vec<u8> {
    let keys = keys
        .iter()
        .map(|(pem, kid)| {
            let mut j = Jwk::from_encoding_key(&rsa(pem), Algorithm::RS256).unwrap();
            j.common.key_id = Some(kid.to_string());
            j
        })
        .collect();
    serde_json::to_vec(&JwkSet { keys }).unwrap()
}

/// A loopback issuer: serves `doc` at any path, counting requests.
struct Issuer {
    url: String,
    doc: Arc<Mutex<Vec<u8>>>,
    hits: Arc<AtomicUsize>,
}

fn issuer(doc: Vec<u8>) -> Issuer {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", l.local_addr().unwrap());
    let doc = Arc::new(Mutex::new(doc));
    let hits = Arc::new(AtomicUsize::new(0));
    let (d, h) = (doc.clone(), hits.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            // Read the whole request head before answering: closing a
            // socket with unread bytes resets the connection.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            h.fetch_add(1, Ordering::SeqCst);
            let body = d.lock().unwrap().clone();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    Issuer { url, doc, hits }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"iss": "https://idp.test", "aud": "charter", "sub": sub, "exp": now() + 600})
}

fn jwt(alg: Algorithm, kid: &str, key: &EncodingKey, c: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    format!("Bearer {}", encode(&h, c, key).unwrap())
}

#[test]
fn oidc_jwts_prove_people_to_the_running_host() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let idp = issuer(jwks(&[("rsa-a.pem", "a")]));
    let (carol, carol_h) = mint("carol", cwd);
    let mut toml = std::fs::read_to_string(cwd.join("charter.toml")).unwrap();
    toml = toml.replace(
        "[approvers.carol]\n",
        &format!("[approvers.carol]\ntokens = [\"{carol_h}\"]\n"),
    );
    toml = toml.replace(
        "[approvers.bob]\n",
        "[approvers.bob]\noidc_subjects = [\"00u-bob\"]\n",
    );
    toml.push_str(&format!(
        "\n[oidc]\nissuer = \"https://idp.test\"\naudience = \"charter\"\njwks_url = \"{}\"\njwks_refresh_seconds = 1\n",
        idp.url
    ));
    std::fs::write(cwd.join("charter.toml"), toml).unwrap();

    let (mut child, addr) = up(cwd);
    let a = addr.as_str();
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1, "fetched once at start");
    let key = rsa("rsa-a.pem");
    let bob = jwt(Algorithm::RS256, "a", &key, &claims("00u-bob"));
    let me = http(a, "GET", "/v1/whoami", Some(&bob), None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["identity"], "bob");

    // Every refused JWT: 401, and an auth-refused event saying why.
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("00u-bob");
        f(&mut c);
        jwt(Algorithm::RS256, "a", &key, &c)
    };
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let none = format!(
        "Bearer {}.{}.",
        b64(&json!({"alg": "none", "kid": "a"})),
        b64(&claims("00u-bob"))
    );
    let hmac = EncodingKey::from_secret(&fixture("rsa-a.pub.pem")).unwrap();
    let cases = [
        ("jwt-expired", with(&|c| c["exp"] = json!(now() - 3600))),
        (
            "jwt-wrong-issuer",
            with(&|c| c["iss"] = json!("https://evil.test")),
        ),
        (
            "jwt-wrong-audience",
            with(&|c| c["aud"] = json!("someone-else")),
        ),
        (
            "jwt-unknown-subject",
            with(&|c| c["sub"] = json!("00u-eve")),
        ),
        (
            "jwt-bad-signature",
            jwt(Algorithm::RS256, "a", &rsa("rsa-b.pem"), &claims("00u-bob")),
        ),
        ("jwt-algorithm", none),
        (
            "jwt-algorithm",
            jwt(Algorithm::HS256, "a", &hmac, &claims("00u-bob")),
        ),
    ];
    for (reason, token) in &cases {
        let r = http(a, "GET", "/v1/runs", Some(token), None);
        assert_eq!(r.status, 401, "{reason}: {}", r.body);
        assert_eq!(r.json()["error"]["kind"], "unauthenticated", "{}", r.body);
    }
    let events = http(a, "GET", "/v1/audit?type=auth-refused", Some(&carol), None).json();
    let reasons: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for (reason, _) in &cases {
        assert!(
            reasons.contains(reason),
            "{reason} not in {reasons:?}: {events}"
        );
    }

    // carol starts a refund; bob approves it with his JWT: recorded as oidc.
    let input = json!({"order_id": "A-9", "amount_cents": 20_000, "reason": "lost"});
    let r = http(
        a,
        "POST",
        "/v1/runs",
        Some(&carol),
        Some(&json!({"workflow": "refund", "input": input})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let run = r.json()["run"].as_str().unwrap().to_string();
    let v = wait_for(a, &carol, &run, |v| v["status"] != "running");
    let proposal = v["proposal"].as_str().unwrap().to_string();
    let r = http(
        a,
        "POST",
        &format!("/v1/proposals/{proposal}/approve"),
        Some(&bob),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = wait_for(a, &carol, &run, |v| {
        v["status"] == "completed" || v["status"] == "failed"
    });
    assert_eq!(v["status"], "completed", "{v}");
    let decisions = http(
        a,
        "GET",
        "/v1/audit?type=approval-decision",
        Some(&carol),
        None,
    )
    .json();
    let d = decisions["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["by"] == "bob")
        .unwrap_or_else(|| panic!("{decisions}"));
    assert_eq!(d["auth"], "oidc", "{d}");
    let starts = http(a, "GET", "/v1/audit?type=run-started", Some(&carol), None).json();
    assert!(
        starts.to_string().contains("\"auth\":\"token\""),
        "{starts}"
    );

    // The issuer rotates to key b: a JWT under b is accepted once the
    // keys are re-read (an unknown kid asks for it, at most once a second).
    *idp.doc.lock().unwrap() = jwks(&[("rsa-b.pem", "b")]);
    let rotated = jwt(Algorithm::RS256, "b", &rsa("rsa-b.pem"), &claims("00u-bob"));
    // Each try past the interval may re-read the keys; a read that fails
    // (a loaded machine) waits for the next interval, so try a few.
    let mut r = http(a, "GET", "/v1/whoami", Some(&rotated), None);
    for _ in 0..5 {
        if r.status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1_100));
        r = http(a, "GET", "/v1/whoami", Some(&rotated), None);
    }
    if r.status != 200 {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("{}: {err}", r.body);
    }
    // A flood of unknown kids re-reads the keys at most once per second.
    let before = idp.hits.load(Ordering::SeqCst);
    let t = Instant::now();
    for i in 0..40 {
        let t = jwt(Algorithm::RS256, &format!("x{i}"), &key, &claims("00u-bob"));
        assert_eq!(http(a, "GET", "/v1/runs", Some(&t), None).status, 401);
    }
    let fetched = idp.hits.load(Ordering::SeqCst) - before;
    let bound = t.elapsed().as_secs() as usize + 1;
    assert!(fetched <= bound, "{fetched} fetches in {:?}", t.elapsed());

    let k = http(a, "GET", "/v1/kpi", Some(&carol), None).json();
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
    let _ = child.kill();
    let _ = child.wait();
}
