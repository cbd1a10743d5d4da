//! The reviewer's reports: `inspect`, `check`, `grants`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use charter_config::{Deployment, Effect, FunctionName, Pattern};
use charter_runtime::error::{EXIT_ERROR, EXIT_OK, EXIT_REFUSED};
use charter_runtime::inspect::ImportClass;
use charter_runtime::{Host, HostOptions, LoadError, LoadedPlugin};
use serde_json::{Value, json};

pub async fn inspect(path: &Path, deployment: Option<&Deployment>, as_json: bool) -> Result<i32> {
    let opts = charter_runtime::engine::EngineOptions {
        cache_dir: deployment.map(|d| charter_runtime::engine::cache_dir(&d.data_dir)),
        ..Default::default()
    };
    let engine = charter_runtime::engine::build_engine(&opts)
        .map_err(|e| anyhow::anyhow!("engine: {e:#}"))?;
    let insp = match charter_runtime::inspect_file(&engine, path).await {
        Ok(i) => i,
        Err(e) => {
            let code = e.exit_code();
            if as_json {
                println!(
                    "{}",
                    json!({"path": path, "error": {"message": e.to_string(), "exit_code": code}})
                );
            } else {
                eprintln!("error: {e}");
            }
            return Ok(code);
        }
    };
    let groups_for = |iface: &str, func: &str| -> Option<Vec<String>> {
        deployment.map(|d| {
            d.groups_granting(&FunctionName::new(iface, func))
                .into_iter()
                .map(str::to_string)
                .collect()
        })
    };
    if as_json {
        let imports: Vec<Value> = insp
            .imports
            .iter()
            .map(|i| {
                let mut v = json!({
                    "interface": i.interface,
                    "class": i.class,
                    "functions": i.functions,
                    "resources": i.resources,
                });
                if deployment.is_some() && i.class == ImportClass::Capability {
                    let g: BTreeMap<_, _> = i
                        .functions
                        .iter()
                        .map(|f| (f.clone(), groups_for(&i.interface, f).unwrap_or_default()))
                        .collect();
                    v["granted_by_groups"] = json!(g);
                }
                v
            })
            .collect();
        let mut doc = json!({
            "path": path,
            "digest": insp.digest,
            "size": insp.size,
            "world": insp.world,
            "imports": imports,
            "exports": insp.exports,
        });
        if let Some(t) = &insp.run_type {
            doc["run_type"] = json!(t);
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(EXIT_OK);
    }
    println!("{}", path.display());
    println!("  digest   {}", insp.digest);
    println!("  size     {} bytes", insp.size);
    match (&insp.world, insp.step_problem()) {
        (Some(w), _) => println!("  world    {w}"),
        (None, p) => println!("  world    (not a charter step: {})", p.unwrap_or_default()),
    }
    println!("  imports");
    if insp.imports.is_empty() {
        println!("    (none)");
    }
    for i in &insp.imports {
        let class = match i.class {
            ImportClass::Capability => "capability",
            ImportClass::WasiBaseline => "wasi-baseline (inert)",
            ImportClass::TypesOnly => "types-only",
        };
        println!("    {}  [{class}]", i.interface);
        for f in &i.functions {
            match (i.class, groups_for(&i.interface, f)) {
                (ImportClass::Capability, Some(g)) if g.is_empty() => {
                    println!("      {f}    granted by: no group")
                }
                (ImportClass::Capability, Some(g)) => {
                    println!("      {f}    granted by: {}", g.join(", "))
                }
                _ => println!("      {f}"),
            }
        }
    }
    println!("  exports");
    for e in &insp.exports {
        println!("    {} ({})", e.name, e.kind);
    }
    Ok(EXIT_OK)
}

pub async fn check(deployment: Deployment, as_json: bool) -> Result<i32> {
    let mut violations = deployment.violations();
    let workflow_problems = deployment.workflow_problems();
    violations.extend(workflow_problems.iter().cloned());
    let workflows: Vec<String> = deployment.workflows.keys().cloned().collect();
    let patterns: Vec<(String, Pattern)> = deployment
        .groups
        .values()
        .flat_map(|g| g.capabilities.iter().map(|p| (g.name.clone(), p.clone())))
        .collect();
    let name = deployment.name.clone();
    let phase = deployment.phase;
    let source = deployment.source.clone();
    // Checking runs no step: no need for (or a lock on) the state store.
    let host = Host::new(
        deployment,
        HostOptions {
            store: Some(std::sync::Arc::new(charter_store::MemStore::default())),
            ..Default::default()
        },
    )?;
    let mut code = if violations.is_empty() {
        EXIT_OK
    } else {
        EXIT_REFUSED
    };
    let mut plugins = Vec::new();
    let mut lines = Vec::new();
    let mut grant_problems = Vec::new();
    for (pname, r) in host.load_all().await {
        match r {
            Ok(p) => {
                grant_problems.extend(connector_grant_problems(&p, &patterns));
                let caps = p
                    .inspection
                    .imports
                    .iter()
                    .filter(|i| i.class == ImportClass::Capability)
                    .map(|i| i.functions.len())
                    .sum::<usize>();
                lines.push(format!(
                    "ok       {pname}  {}  ({} granted, loaded in {} ms)",
                    p.digest,
                    crate::count(caps, "capability import", "capability imports"),
                    p.load_time.as_millis()
                ));
                plugins
                    .push(json!({"name": pname, "status": "ok", "digest": p.digest, "errors": []}));
            }
            Err(e) => {
                let refused = e.exit_code() == EXIT_REFUSED;
                let status = if refused { "refused" } else { "error" };
                let errors: Vec<String> = match &e {
                    LoadError::Ungranted(v) => v.iter().map(|u| u.to_string()).collect(),
                    LoadError::Governance(v) => v.iter().map(|u| u.to_string()).collect(),
                    other => vec![other.to_string()],
                };
                for l in &errors {
                    lines.push(format!("{status:<8} {l}"));
                }
                code = match (code, refused) {
                    (EXIT_ERROR, _) => EXIT_ERROR,
                    (_, true) => EXIT_REFUSED,
                    _ => EXIT_ERROR,
                };
                plugins.push(json!({"name": pname, "status": status, "errors": errors}));
            }
        }
    }
    let policy_problems = host.policy_problems();
    for p in &policy_problems {
        lines.push(format!("refused  policy: {p}"));
    }
    let effect_problems = host.effect_problems();
    for p in &effect_problems {
        lines.push(format!("refused  effects: {p}"));
    }
    for p in &grant_problems {
        lines.push(format!("refused  grants: {p}"));
    }
    if !(policy_problems.is_empty() && effect_problems.is_empty() && grant_problems.is_empty())
        && code == EXIT_OK
    {
        code = EXIT_REFUSED;
    }
    // Warnings do not change the outcome.
    let warnings = host.policy_warnings();
    if code != EXIT_OK {
        let problems: Vec<String> = lines
            .iter()
            .filter(|l| !l.starts_with("ok "))
            .cloned()
            .chain(violations.iter().map(|v| v.to_string()))
            .collect();
        host.record_check_failure(problems).await;
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "deployment": name,
                "config": source,
                "policy_problems": policy_problems,
                "effect_problems": effect_problems,
                "grant_problems": grant_problems,
                "warnings": warnings,
                "phase": phase.get(),
                "ok": code == EXIT_OK,
                "exit_code": code,
                "violations": violations,
                "plugins": plugins,
                "workflows": workflows,
            }))?
        );
    } else {
        println!(
            "deployment {name} (phase {phase}) from {}",
            source.display()
        );
        for l in &lines {
            println!("{l}");
        }
        for v in &workflow_problems {
            println!("refused  {v}");
        }
        // Deployment-wide violations (no plugin to refuse), e.g. a group
        // labelled read that grants writes, granted to nobody yet.
        for v in violations
            .iter()
            .filter(|v| v.plugin.is_none() && v.rule != "workflow")
        {
            println!("refused  {v}");
        }
        for w in &warnings {
            println!("warning: {w}");
        }
        match code {
            EXIT_OK => println!(
                "check passed: {}, {}",
                crate::count(plugins.len(), "plugin", "plugins"),
                crate::count(workflows.len(), "workflow", "workflows")
            ),
            EXIT_REFUSED => println!("check refused: governance violations above"),
            _ => println!("check failed: errors above"),
        }
    }
    Ok(code)
}

/// Grant patterns over an interface `conn` provides that match none of the
/// functions it exports: the file alone cannot tell (any function of a
/// provided interface is accepted when it is read), the loaded connector
/// can.
fn connector_grant_problems(conn: &LoadedPlugin, patterns: &[(String, Pattern)]) -> Vec<String> {
    let mut out = Vec::new();
    for (iface, export) in &conn.provides {
        let functions: &[String] = conn
            .inspection
            .exports
            .iter()
            .find(|e| &e.name == export)
            .map_or(&[], |e| &e.functions);
        for (group, pat) in patterns.iter().filter(|(_, p)| p.interface == *iface) {
            if functions
                .iter()
                .any(|f| pat.matches(&FunctionName::new(export, f)))
            {
                continue;
            }
            let wanted = pat.unversioned();
            let closest = functions
                .iter()
                .map(|f| format!("{iface}.{f}"))
                .min_by_key(|k| charter_config::edit_distance(&wanted, k))
                .map(|k| format!("; did you mean {k}?"))
                .unwrap_or_default();
            out.push(format!(
                "group {group}: capability pattern \"{pat}\" matches no function that {} exports as {export} (its functions: {}){closest}",
                conn.name,
                functions.join(", ")
            ));
        }
    }
    out.sort();
    out
}

pub fn grants(d: &Deployment, as_json: bool) -> Result<i32> {
    // function -> (effect, plugins)
    let mut caps: BTreeMap<String, (Effect, Vec<String>)> = BTreeMap::new();
    let mut plugins = Vec::new();
    for (pname, p) in &d.plugins {
        let digest = std::fs::read(&p.path)
            .map(|b| charter_runtime::digest(&b))
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        let mut functions = Vec::new();
        for g in d.granted_groups(p) {
            for pat in &g.capabilities {
                // Expand patterns over the host's own functions; other
                // patterns (connectors, wasi:http) are listed as written.
                let expanded: Vec<(String, Effect)> = if pat.interface.starts_with("charter:host/")
                {
                    let mut seen = std::collections::BTreeSet::new();
                    charter_runtime::catalog()
                        .iter()
                        // Once per function, whatever versions serve it.
                        .filter(|(_, f)| pat.matches(f.function_name()) && seen.insert(f.action()))
                        // Per function, not per group: a group that
                        // holds `kv.set` does not make its `kv.get` write.
                        .map(|(_, f)| {
                            (f.action().to_string(), d.function_effect(f.function_name()))
                        })
                        .collect()
                } else {
                    // A named function has its own effect (a connector's
                    // declaration, or write); a wildcard, the group's label.
                    let eff = match &pat.func {
                        Some(func) => d.function_effect(&FunctionName::new(&pat.interface, func)),
                        None => g.effect,
                    };
                    vec![(pat.to_string(), eff)]
                };
                for (f, eff) in expanded {
                    functions.push(json!({"function": f, "effect": eff, "group": g.name}));
                    let e = caps.entry(f).or_insert((eff, vec![]));
                    if eff == Effect::Write {
                        e.0 = Effect::Write;
                    }
                    if !e.1.contains(pname) {
                        e.1.push(pname.clone());
                    }
                }
            }
        }
        plugins.push(json!({
            "name": pname,
            "path": p.path,
            "digest": digest,
            "pinned": p.digest.is_some(),
            "groups": p.groups,
            "granted_by": p.granted_by,
            "reason": p.reason,
            "owner": p.owner,
            "wasi": p.wasi,
            "functions": functions,
            "allow_hosts": d.allowed_hosts(p),
            "secrets": d.granted_secrets(p),
            "channels": d.granted_channels(p),
        }));
    }
    let violations = d.violations();
    if as_json {
        let capabilities: Vec<Value> = caps
            .iter()
            .map(|(f, (eff, ps))| json!({"function": f, "effect": eff, "write": *eff == Effect::Write, "plugins": ps}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "deployment": d.name,
                "phase": d.phase.get(),
                "plugins": plugins,
                "capabilities": capabilities,
                "violations": violations,
            }))?
        );
    } else {
        println!("deployment {} (phase {})", d.name, d.phase);
        println!("\nplugins");
        for p in &plugins {
            println!(
                "  {}  {}{}",
                p["name"].as_str().unwrap_or(""),
                p["digest"].as_str().unwrap_or(""),
                if p["pinned"].as_bool() == Some(true) {
                    "  (pinned)"
                } else {
                    "  (not pinned)"
                }
            );
            println!(
                "    groups: {}",
                p["groups"]
                    .as_array()
                    .map(|g| g
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            );
            if let Some(by) = p["granted_by"].as_str() {
                println!(
                    "    granted by: {by}{}",
                    p["reason"]
                        .as_str()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
            for f in p["functions"].as_array().into_iter().flatten() {
                let w = if f["effect"] == "write" {
                    "  WRITE"
                } else {
                    ""
                };
                println!(
                    "      {}  [{}]{w}",
                    f["function"].as_str().unwrap_or(""),
                    f["group"].as_str().unwrap_or("")
                );
            }
        }
        println!("\ncapabilities");
        for (f, (eff, ps)) in &caps {
            let w = if *eff == Effect::Write {
                "WRITE "
            } else {
                "      "
            };
            println!("  {w}{f}  <- {}", ps.join(", "));
        }
        if !violations.is_empty() {
            println!("\nviolations");
            for v in &violations {
                println!("  {v}");
            }
        }
    }
    Ok(if violations.is_empty() {
        EXIT_OK
    } else {
        EXIT_REFUSED
    })
}
