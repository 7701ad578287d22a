//! The filters of `query` and `export`, as the WHERE clause over the experiments table.

use super::{AnalyticsError, Result, literal};

/// Filters of `query` (and `export`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub name: Option<String>,
    pub layer: Option<String>,
    pub fault_type: Option<String>,
    pub status: Option<String>,
    pub region: Option<String>,
    pub min_score: Option<f64>,
    pub max_score: Option<f64>,
    pub score_version: Option<i32>,
    /// `key=value` pairs a run must carry.
    pub tags: Vec<(String, String)>,
    /// Days (`YYYY-MM-DD`), inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<usize>,
    pub order: Order,
}

/// Row order of `query`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Newest,
    Oldest,
    ScoreAsc,
    ScoreDesc,
}

impl Order {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "newest" => Some(Order::Newest),
            "oldest" => Some(Order::Oldest),
            "lowest" | "score" => Some(Order::ScoreAsc),
            "highest" | "-score" => Some(Order::ScoreDesc),
            _ => None,
        }
    }

    pub(super) fn sql(self) -> &'static str {
        match self {
            Order::Newest => "finished_at DESC, run_id, region",
            Order::Oldest => "finished_at ASC, run_id, region",
            Order::ScoreAsc => "resilience_score ASC NULLS FIRST, finished_at DESC, run_id, region",
            Order::ScoreDesc => "resilience_score DESC NULLS LAST, finished_at DESC, run_id, region",
        }
    }
}

/// Checks a day given on the command line.
pub fn check_day(field: &str, value: &str) -> Result<()> {
    let ok = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if ok { Ok(()) } else { Err(AnalyticsError::Invalid(format!("{field}: expected a day YYYY-MM-DD, got {value:?}"))) }
}

impl Filters {
    /// The WHERE clause (with its keyword), or an empty string.
    pub fn clause(&self) -> Result<String> {
        let mut conds = Vec::new();
        let eq = |column: &str, value: &Option<String>, conds: &mut Vec<String>| {
            if let Some(v) = value {
                conds.push(format!("{column} = {}", literal(v)));
            }
        };
        eq("experiment_name", &self.name, &mut conds);
        eq("layer", &self.layer, &mut conds);
        eq("fault_type", &self.fault_type, &mut conds);
        eq("status", &self.status.as_ref().map(|s| s.to_uppercase()), &mut conds);
        eq("region", &self.region, &mut conds);
        if let Some(min) = self.min_score {
            conds.push(format!("resilience_score >= {min}"));
        }
        if let Some(max) = self.max_score {
            conds.push(format!("resilience_score <= {max}"));
        }
        if let Some(version) = self.score_version {
            conds.push(format!("score_version = {version}"));
        }
        for (key, value) in &self.tags {
            conds.push(format!(
                "run_id IN (SELECT run_id FROM tags WHERE key = {} AND value = {})",
                literal(key),
                literal(value)
            ));
        }
        if let Some(since) = &self.since {
            check_day("since", since)?;
            conds.push(format!("date >= {}", literal(since)));
        }
        if let Some(until) = &self.until {
            check_day("until", until)?;
            conds.push(format!("date <= {}", literal(until)));
        }
        Ok(if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) })
    }
}
