//! The reviewer's reports as text: `inspect`, `check`, `grants`.

use charter_api::{CheckResponse, Effect, GrantsReport, ImportClass, InspectReport, PluginStatus};
use charter_runtime::error::{EXIT_OK, EXIT_REFUSED};

/// "3 (analysis only)": a phase with what it means.
fn phase(n: u8) -> String {
    charter_config::Phase::new(n).map_or_else(|| n.to_string(), |p| p.to_string())
}

pub fn inspect_text(r: &InspectReport) {
    println!("{}", r.path.display());
    println!("  digest   {}", r.digest);
    println!("  size     {} bytes", r.size);
    match (&r.world, r.step_problem()) {
        (Some(w), _) => println!("  world    {w}"),
        (None, p) => println!("  world    (not a charter step: {})", p.unwrap_or_default()),
    }
    println!("  imports");
    if r.imports.is_empty() {
        println!("    (none)");
    }
    for i in &r.imports {
        let class = match i.class {
            ImportClass::Capability => "capability",
            ImportClass::WasiBaseline => "wasi-baseline (inert)",
            ImportClass::TypesOnly => "types-only",
        };
        println!("    {}  [{class}]", i.interface);
        for f in &i.functions {
            // Groups are known with a deployment, for capabilities only.
            match i.granted_by_groups.as_ref().map(|g| g.get(f)) {
                Some(None) => println!("      {f}    granted by: no group"),
                Some(Some(g)) if g.is_empty() => println!("      {f}    granted by: no group"),
                Some(Some(g)) => println!("      {f}    granted by: {}", g.join(", ")),
                None => println!("      {f}"),
            }
        }
    }
    println!("  exports");
    for e in &r.exports {
        println!("    {} ({})", e.name, e.kind);
    }
}

pub fn check_text(resp: &CheckResponse) {
    let r = &resp.report;
    println!(
        "deployment {} (phase {}) from {}",
        r.deployment,
        phase(r.phase),
        r.config.display()
    );
    for p in &r.plugins {
        match (p.status, resp.loads.get(&p.name)) {
            (PluginStatus::Ok, Some(l)) => println!(
                "ok       {}  {}  ({} granted, loaded in {} ms)",
                p.name,
                p.digest.as_deref().unwrap_or_default(),
                crate::count(
                    l.capability_imports,
                    "capability import",
                    "capability imports"
                ),
                l.load_ms
            ),
            (status, _) => {
                for e in &p.errors {
                    println!("{:<8} {e}", status.as_str());
                }
            }
        }
    }
    for p in &r.policy_problems {
        println!("refused  policy: {p}");
    }
    for p in &r.effect_problems {
        println!("refused  effects: {p}");
    }
    for p in &r.grant_problems {
        println!("refused  grants: {p}");
    }
    for v in r.violations.iter().filter(|v| v.rule == "workflow") {
        println!("refused  {v}");
    }
    // Deployment-wide violations (no plugin to refuse), e.g. a group
    // labelled read that grants writes, granted to nobody yet.
    for v in r
        .violations
        .iter()
        .filter(|v| v.plugin.is_none() && v.rule != "workflow")
    {
        println!("refused  {v}");
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    for t in &r.triggers {
        println!("trigger  {t}");
    }
    match r.exit_code {
        EXIT_OK => println!(
            "check passed: {}, {}",
            crate::count(r.plugins.len(), "plugin", "plugins"),
            crate::count(r.workflows.len(), "workflow", "workflows")
        ),
        EXIT_REFUSED => println!("check refused: governance violations above"),
        _ => println!("check failed: errors above"),
    }
}

pub fn grants_text(r: &GrantsReport) {
    println!("deployment {} (phase {})", r.deployment, phase(r.phase));
    println!("\nplugins");
    for p in &r.plugins {
        println!(
            "  {}  {}{}",
            p.name,
            p.digest,
            if p.pinned {
                "  (pinned)"
            } else {
                "  (not pinned)"
            }
        );
        println!("    groups: {}", p.groups.join(", "));
        if let Some(by) = &p.granted_by {
            println!(
                "    granted by: {by}{}",
                p.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        for f in &p.functions {
            let w = if f.effect == Effect::Write {
                "  WRITE"
            } else {
                ""
            };
            println!("      {}  [{}]{w}", f.function, f.group);
        }
    }
    println!("\ncapabilities");
    for c in &r.capabilities {
        let w = if c.write { "WRITE " } else { "      " };
        println!("  {w}{}  <- {}", c.function, c.plugins.join(", "));
    }
    if !r.violations.is_empty() {
        println!("\nviolations");
        for v in &r.violations {
            println!("  {v}");
        }
    }
}
