//! Agent tokens, per region, from the dispatcher's own configuration: they never travel in events.
//!
//! Looked up in order: `CHAOSEATER_AGENT_TOKEN_<REGION>` (the region name upper-cased, every other
//! character than A–Z and 0–9 as `_`), the tokens file (TOML: `region = "token"`, plus an optional
//! `default`), then `CHAOSEATER_AGENT_TOKEN`.

use std::collections::BTreeMap;
use std::path::Path;

use chaoseater_schemas::ids::RegionName;

/// Where tokens come from. Debug never shows them.
#[derive(Clone, Default)]
pub struct AgentTokens {
    env: BTreeMap<String, String>,
    file: BTreeMap<String, String>,
}

impl std::fmt::Debug for AgentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTokens")
            .field("env_entries", &self.env.len())
            .field("file_entries", &self.file.len())
            .finish()
    }
}

/// The variable name for a region's token.
pub fn env_name(region: &str) -> String {
    let suffix: String =
        region.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("CHAOSEATER_AGENT_TOKEN_{suffix}")
}

impl AgentTokens {
    /// Reads the tokens file (if any) and keeps the `CHAOSEATER_AGENT_TOKEN*` variables of `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                toml::from_str::<BTreeMap<String, String>>(&text)
                    .map_err(|e| format!("{}: expected `region = \"token\"` lines: {e}", path.display()))?
            }
            None => BTreeMap::new(),
        };
        let env = env.into_iter().filter(|(k, _)| k.starts_with("CHAOSEATER_AGENT_TOKEN")).collect();
        Ok(Self { env, file })
    }

    /// Where a token shared by every region without one of its own comes from, if one is configured:
    /// the tokens file's `default` or `CHAOSEATER_AGENT_TOKEN`.
    pub fn shared_fallback(&self) -> Option<&'static str> {
        if self.file.contains_key("default") {
            Some("tokens_file default")
        } else if self.env.contains_key("CHAOSEATER_AGENT_TOKEN") {
            Some("CHAOSEATER_AGENT_TOKEN")
        } else {
            None
        }
    }

    /// The token for `region`: its own first, then the shared fallback.
    pub fn for_region(&self, region: &RegionName) -> Option<String> {
        self.env
            .get(&env_name(region.as_str()))
            .or_else(|| self.file.get(region.as_str()))
            .or_else(|| self.file.get("default"))
            .or_else(|| self.env.get("CHAOSEATER_AGENT_TOKEN"))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_order_and_no_token_in_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens.toml");
        std::fs::write(&file, "eu-west = \"from-file\"\ndefault = \"file-default\"\n").expect("write");
        let env = [
            ("CHAOSEATER_AGENT_TOKEN_US_EAST".to_owned(), "from-env".to_owned()),
            ("CHAOSEATER_AGENT_TOKEN".to_owned(), "global".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let tokens = AgentTokens::load(Some(&file), env).expect("tokens");
        assert_eq!(tokens.for_region(&RegionName::new("us-east")).as_deref(), Some("from-env"));
        assert_eq!(tokens.for_region(&RegionName::new("eu-west")).as_deref(), Some("from-file"));
        assert_eq!(tokens.for_region(&RegionName::new("ap-south")).as_deref(), Some("file-default"));
        assert!(!format!("{tokens:?}").contains("from-"));
    }
}
