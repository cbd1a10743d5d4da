//! Identities and tokens (issue 13, item 2, on the command line): once a
//! deployment declares a token, every person an event records is proven by
//! a token; a claimed name, a forged, edited, expired or unknown token, a
//! service account and the run's own initiator cannot approve.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::cli::refunds_deployment;
use crate::support::{charter_bin, text};

fn charter_as(token: Option<&str>, args: &[&str], cwd: &Path) -> Output {
    let mut cmd = std::process::Command::new(charter_bin());
    cmd.args(args).current_dir(cwd).env_remove("CHARTER_LOG");
    match token {
        Some(t) => cmd.env("CHARTER_TOKEN", t),
        None => cmd.env_remove("CHARTER_TOKEN"),
    };
    cmd.output().expect("run charter")
}

/// Mint a token for `name` with `charter tokens create --json`.
fn mint(name: &str, expires_in: &str, cwd: &Path) -> (String, String) {
    let out = charter_as(
        None,
        &[
            "tokens",
            "create",
            name,
            "--expires-in",
            expires_in,
            "--json",
        ],
        cwd,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["token"].as_str().unwrap().to_string(),
        v["hash"].as_str().unwrap().to_string(),
    )
}

/// Give `name` (declared in the refunds example under [approvers]) the
/// token hashes `hashes`, or declare a service account.
fn declare(cwd: &Path, name: &str, hashes: &[&str], service: bool) {
    let path = cwd.join("charter.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap();
    let list = hashes
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    if service {
        toml.push_str(&format!(
            "\n[identities.{name}]\nkind = \"service\"\nroles = [\"refund-approver\"]\ntokens = [{list}]\n"
        ));
    } else {
        let header = format!("[approvers.{name}]\n");
        assert!(
            toml.contains(&header),
            "{name} is not an approver of the example"
        );
        toml = toml.replace(&header, &format!("{header}tokens = [{list}]\n"));
    }
    std::fs::write(&path, toml).unwrap();
}

#[test]
fn only_a_token_proves_who_decides() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let (carol, carol_hash) = mint("carol", "30d", cwd);
    let (bob, bob_hash) = mint("bob", "never", cwd);
    let (bob_old, bob_old_hash) = mint("bob", "1s", cwd);
    let (shop, shop_hash) = mint("shop", "30d", cwd);
    declare(cwd, "carol", &[&carol_hash], false);
    declare(cwd, "bob", &[&bob_hash, &bob_old_hash], false);
    declare(cwd, "shop", &[&shop_hash], true);
    assert!(carol.starts_with("cht_carol_") && bob.starts_with("cht_bob_0_"));
    let toml = std::fs::read_to_string(cwd.join("charter.toml")).unwrap();
    assert!(
        !toml.contains(&carol) && !toml.contains(&bob),
        "a token is in the file"
    );

    let input = serde_json::json!({"order_id": "A-9", "amount_cents": 20_000, "reason": "lost"})
        .to_string();
    let run = |token: Option<&str>, extra: &[&str]| {
        let mut args = vec!["run", "refund", "--json", "--input", &input];
        args.extend_from_slice(extra);
        charter_as(token, &args, cwd)
    };

    // No token: nothing a person does is recorded, not even starting a run,
    // and a claimed name is no substitute.
    for extra in [&[][..], &["--as", "carol"][..]] {
        let out = run(None, extra);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("no token"), "{}", text(&out));
    }
    let out = charter_as(None, &["runs", "list", "--json"], cwd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "reading needs no token: {}",
        text(&out)
    );

    // carol starts a refund that needs an approval.
    let out = run(Some(&carol), &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["initiator"], "carol", "{v}");
    let proposal = v["proposal"].as_str().unwrap().to_string();
    let approve = |token: Option<&str>, extra: &[&str]| {
        let mut args = vec!["proposals", "approve", proposal.as_str(), "--json"];
        args.extend_from_slice(extra);
        charter_as(token, &args, cwd)
    };

    let secret = bob.rsplit_once('_').unwrap().1;
    let forged = [
        format!("cht_bob_0_{}", "0".repeat(64)), // a guessed secret
        format!("cht_bob_1_{secret}"),           // an edited expiry
        format!("cht_alice_0_{secret}"),         // a borrowed secret
        bob_hash.clone(),                        // the hash itself
        format!("{bob}\nerror: forged"),         // a second line
    ];
    for t in &forged {
        let out = approve(Some(t), &[]);
        assert_eq!(out.status.code(), Some(2), "{t}: {}", text(&out));
        let e: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let shown = text(&out);
        assert!(
            shown.contains("unknown token") || shown.contains("not a Charter token"),
            "{shown} {e}"
        );
        assert!(!shown.contains(secret), "the secret is echoed: {shown}");
    }

    // The run's initiator, proven, still may not approve it.
    let out = approve(Some(&carol), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("started"), "{}", text(&out));
    // A token for carol with --as bob is a contradiction, not bob.
    let out = approve(Some(&carol), &["--as", "bob"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    // A service account never decides, whatever its roles.
    let out = approve(Some(&shop), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // bob's expired token.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let out = approve(Some(&bob_old), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("expired"), "{}", text(&out));

    // bob, proven, approves; the run completes and the log says bob.
    let out = approve(Some(&bob), &["--comment", "carrier confirmed"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = charter_as(
        None,
        &["audit", "show", "--type", "approval-decision", "--json"],
        cwd,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let accepted: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["accepted"] == true)
        .collect();
    assert_eq!(accepted.len(), 1, "{v}");
    assert_eq!(accepted[0]["by"], "bob", "{v}");
    let out = charter_as(None, &["kpi", "--json"], cwd);
    let k: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(k["unauthorized_actions_executed"], 0, "{k}");
}

#[test]
fn tokens_create_teaches_where_the_hash_goes() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    refunds_deployment(cwd);
    let out = charter_as(None, &["tokens", "create", "bob"], cwd);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("shown once") && t.contains("tokens = [\"sha256:"),
        "{t}"
    );
    let out = charter_as(None, &["tokens", "create", "erin"], cwd);
    assert!(text(&out).contains("[identities.erin]"), "{}", text(&out));
    for bad in [
        &["tokens", "create", "Bob"][..],
        &["tokens", "create", "bob", "--expires-in", "soon"][..],
    ] {
        let out = charter_as(None, bad, cwd);
        assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    }
    // A deployment without tokens works as before: --as names the person.
    let out = charter_as(
        None,
        &["run", "refund", "--as", "carol", "--input", "{}"],
        cwd,
    );
    assert!(!text(&out).contains("no token"), "{}", text(&out));
}
