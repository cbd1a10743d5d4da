//! `charter:host/llm`: language-model calls through the deployment's
//! provider ([`super::llm_provider`]: offline and deterministic by default,
//! or an OpenAI-compatible endpoint). A call waits under the host-call
//! timeout; its result is journaled and stands in on replay (a model's
//! answer differs from run to run and has no effect of its own).

use std::sync::Arc;

use charter_config::LlmProvider;
use serde_json::{Value, json};
use wasmtime::component::{ComponentType, LinkerInstance, Lower};

use super::llm_provider::{Llm, OfflineLlm, OpenAiLlm};
use super::{
    Builtin, Capability, Cx, Exec, FnId, Function, HostFunction, Interface, MAX_KEY, Param,
    Refusal, arg, call_waiting, over, shape,
};
use crate::mediator::Dispatch;
use crate::state::HostState;

/// Longest prompt or text handed to the provider, in bytes.
pub const MAX_LLM_TEXT: usize = 1 << 20;
/// Most labels of one `llm.classify`.
pub const MAX_LABELS: usize = 256;

pub(super) const INTERFACE: Interface = Interface {
    name: "charter:host/llm",
    since: Some("0.1.0"),
    functions: &[
        Function {
            replay: true,
            result_shown: false,
            ..Function::read("complete", &[("prompt", Param::String)])
        },
        Function {
            replay: true,
            ..Function::read(
                "classify",
                &[("text", Param::String), ("labels", Param::StringList)],
            )
        },
    ],
};

pub(super) const BUILTIN: Builtin = Builtin {
    interface: &INTERFACE,
    build: |dep, setup| {
        let provider: Arc<dyn Llm> = match setup.llm.take() {
            Some(l) => l,
            None => match &dep.llm {
                LlmProvider::Offline => Arc::new(OfflineLlm),
                LlmProvider::OpenAi {
                    base_url,
                    model,
                    api_key_secret,
                } => {
                    let key = match api_key_secret {
                        None => None,
                        Some(name) => Some(
                            super::read_secret(&dep.secrets, name)
                                .map_err(|e| format!("llm: {e}"))?,
                        ),
                    };
                    Arc::new(OpenAiLlm::new(base_url.clone(), model.clone(), key))
                }
            },
        };
        Ok(Arc::new(LlmCap { provider }))
    },
};

struct LlmCap {
    provider: Arc<dyn Llm>,
}

#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
struct Classification {
    label: String,
    confidence: f32,
}

impl Capability for LlmCap {
    fn check(
        &self,
        f: &Function,
        args: &Value,
        _: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<(), Refusal> {
        if f.name == "complete" {
            return over("prompt", arg(args, "prompt").len(), MAX_LLM_TEXT);
        }
        over("text", arg(args, "text").len(), MAX_LLM_TEXT)?;
        let labels = args["labels"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if labels.len() > MAX_LABELS {
            return Err(Refusal::Oversize(format!(
                "{} labels, over the limit of {MAX_LABELS}",
                labels.len()
            )));
        }
        labels
            .iter()
            .try_for_each(|l| over("label", l.as_str().unwrap_or_default().len(), MAX_KEY))
    }

    fn link(
        &self,
        inst: &mut LinkerInstance<'_, HostState>,
        id: FnId,
        f: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        match f.name() {
            "complete" => {
                inst.func_wrap_async(f.name(), move |mut store: Cx<'_>, (prompt,): (String,)| {
                    Box::new(async move {
                        let r = call_waiting(&mut store, id, json!({"prompt": prompt})).await?;
                        Ok((match r {
                            Ok(v) => Ok(shape(v.as_str().map(str::to_string))?),
                            Err(e) => Err(e),
                        },))
                    })
                })
            }
            _ => inst.func_wrap_async(
                f.name(),
                move |mut store: Cx<'_>, (text, labels): (String, Vec<String>)| {
                    Box::new(async move {
                        let args = json!({"text": text, "labels": labels});
                        let r = call_waiting(&mut store, id, args).await?;
                        Ok((match r {
                            Ok(v) => Ok(Classification {
                                label: shape(v["label"].as_str().map(str::to_string))?,
                                confidence: shape(v["confidence"].as_f64())? as f32,
                            }),
                            Err(e) => Err(e),
                        },))
                    })
                },
            ),
        }
    }

    fn execute(&self, args: &Value, x: Exec<'_>) -> Dispatch {
        if x.f.name() == "complete" {
            let fut = self.provider.complete(arg(args, "prompt").to_string());
            return Dispatch::Wait(Box::pin(async move { fut.await.map(Value::String) }));
        }
        let labels = serde_json::from_value(args["labels"].clone()).unwrap_or_default();
        let fut = self
            .provider
            .classify(arg(args, "text").to_string(), labels);
        Dispatch::Wait(Box::pin(async move {
            fut.await.map(|(l, c)| json!({"label": l, "confidence": c}))
        }))
    }
}
