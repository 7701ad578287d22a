//! Where on the request path each layer's faults act. An agent fronts the pipeline with its proxy (the
//! outer hop: clients and probes enter here); with `[inner]` it also sits between a gateway stage and the
//! model server behind it (the inner hop), so that a fault can strike where the gateway's defences
//! (retries, a fallback model, validation) can answer it:
//!
//! ```text
//! probes, clients ──▶ outer hop ──▶ gateway (transformer) ──▶ inner hop ──▶ model server (predictor)
//!                     data faults                              model and infrastructure faults
//! ```
//!
//! Without `[inner]` every fault acts on the outer hop (the agent in front of a single server).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chaoseater_schemas::experiment::Layer;
use serde::{Deserialize, Serialize};

/// `[inner]`: the second proxy hop. The gateway is configured to call `listen` instead of the model
/// server, and the agent forwards to `upstream`, the model server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InnerHop {
    pub listen: SocketAddr,
    /// The model server (base URL, `http://host:port`).
    pub upstream: String,
    /// Other versions of the model server by name (targets of `wrong_version` on this hop).
    #[serde(default)]
    pub alternates: BTreeMap<String, String>,
}

/// One of the two hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hop {
    Outer,
    Inner,
}

impl Hop {
    pub fn as_str(self) -> &'static str {
        match self {
            Hop::Outer => "outer",
            Hop::Inner => "inner",
        }
    }
}

/// `[hops]`: which hop each layer's faults act on. Unset layers: data faults on the outer hop (records
/// are corrupted before the gateway sees them), model and infrastructure faults on the inner hop when
/// there is one (between the gateway and the model server), else on the outer hop.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hops {
    pub data: Option<Hop>,
    pub model: Option<Hop>,
    pub infrastructure: Option<Hop>,
}

impl Hops {
    /// The hop `layer`'s faults act on, given whether an inner hop is configured.
    pub fn of(&self, layer: Layer, has_inner: bool) -> Hop {
        let set = match layer {
            Layer::Data => self.data,
            Layer::Model => self.model,
            Layer::Infrastructure => self.infrastructure,
        };
        let default = if has_inner && layer != Layer::Data { Hop::Inner } else { Hop::Outer };
        set.unwrap_or(default)
    }

    pub fn validate(&self, inner: Option<&InnerHop>) -> Result<(), String> {
        let named = [("data", self.data), ("model", self.model), ("infrastructure", self.infrastructure)];
        if inner.is_none()
            && let Some((layer, _)) = named.iter().find(|(_, hop)| *hop == Some(Hop::Inner))
        {
            return Err(format!("hops.{layer} = \"inner\" needs an [inner] section (listen, upstream)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_default_to_where_defences_can_answer_and_inner_needs_its_section() {
        let hops = Hops::default();
        assert_eq!(hops.of(Layer::Model, false), Hop::Outer, "a single hop takes everything");
        assert_eq!(
            [Layer::Data, Layer::Model, Layer::Infrastructure].map(|l| hops.of(l, true)),
            [Hop::Outer, Hop::Inner, Hop::Inner]
        );
        let moved = Hops { infrastructure: Some(Hop::Outer), ..Hops::default() };
        assert_eq!(moved.of(Layer::Infrastructure, true), Hop::Outer);
        let err = Hops { model: Some(Hop::Inner), ..Hops::default() }.validate(None).expect_err("no [inner]");
        assert!(err.contains("hops.model") && err.contains("[inner]"), "{err}");
    }
}
