//! The `ab:` section of an experiment file: an A/B test of two variants under the file's experiments.
//!
//! ```yaml
//! ab:
//!   samples: 8                       # per variant (default 10, at least 3)
//!   confidence: 0.98                 # default 0.98, as Kayenta's judge
//!   tolerance: 0.25                  # default 0.25
//!   metrics: [resilience_score, recovery_time_s]   # default: all six
//!   variant_a: {label: current, regions: [us-east]}
//!   variant_b: {label: candidate, regions: [eu-west]}
//! experiments:
//!   - {name: corrupt, layer: data, fault_type: data_corruption, duration: 2s}
//! ```
//!
//! A variant runs the file's one experiment, or the one it names (`experiment: NAME`) when the file has
//! several; its regions default to that experiment's. Everything is checked before anything is published,
//! with the same rules the coordinator applies to other systems' requests.

use chaoseater_schemas::events::{AbMetric, AbTestRequested, AbVariant, RunRequested, ab};
use chaoseater_schemas::ids::{RegionName, RunId, TimestampMs};
use serde::Deserialize;

use super::file::{GatewayError, RunOverrides, parse_file};

/// The `ab:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbSection {
    /// Samples per variant (default 10, at least 3).
    samples: Option<i64>,
    /// Confidence level of the intervals, in (0, 1) (default 0.98).
    confidence: Option<f64>,
    /// Kayenta's tolerance (default 0.25).
    tolerance: Option<f64>,
    /// The metrics judged (default: all six, each in its usual direction).
    metrics: Option<Vec<String>>,
    variant_a: Option<VariantEntry>,
    variant_b: Option<VariantEntry>,
}

/// One variant in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantEntry {
    /// Shown in reports (default: `A` or `B`).
    label: Option<String>,
    /// Where its samples run (default: its experiment's regions).
    regions: Option<Vec<String>>,
    /// The experiment of the file it runs (needed when the file has several).
    experiment: Option<String>,
}

/// Command-line settings that win over the file's.
#[derive(Debug, Default, Clone)]
pub struct AbOverrides {
    pub samples: Option<i64>,
}

/// Parses and validates an A/B test file into the request to publish, or the first error, naming the field.
pub fn parse_ab_test(
    file: &str,
    text: &str,
    overrides: &AbOverrides,
    requested_by: &str,
    now: TimestampMs,
) -> Result<AbTestRequested, GatewayError> {
    let parsed = parse_file(file, text, &RunOverrides::default(), requested_by, now)?;
    let (section, experiments) = (parsed.ab, parsed.requests);
    let at = |field: &str, message: String| GatewayError {
        file: file.to_owned(),
        experiment: None,
        field: Some(format!("ab.{field}")),
        message,
    };
    let Some(section) = section else {
        return Err(GatewayError {
            file: file.to_owned(),
            experiment: None,
            field: Some("ab".into()),
            message: "missing: an A/B test file has an `ab:` section with variant_a and variant_b".into(),
        });
    };
    let variant = |name: &str, entry: &Option<VariantEntry>, default_label: &str| {
        let entry = entry.as_ref().ok_or_else(|| at(name, "missing: give its label and regions".into()))?;
        variant(name, entry, default_label, &experiments, &at)
    };
    let (variant_a, experiment_a) = variant("variant_a", &section.variant_a, "A")?;
    let (mut variant_b, experiment_b) = variant("variant_b", &section.variant_b, "B")?;
    let experiment = experiment_a.experiment.clone();
    if experiment_b.experiment != experiment {
        variant_b.experiment = Some(Box::new(experiment_b.experiment.clone()));
    }
    let samples = overrides.samples.or(section.samples).unwrap_or(i64::from(ab::DEFAULT_SAMPLES_PER_VARIANT));
    let metrics = match &section.metrics {
        None => Vec::new(),
        Some(names) => names
            .iter()
            .map(|name| {
                AbMetric::parse(name.trim())
                    .map(AbMetric::spec)
                    .ok_or_else(|| at("metrics", format!("unknown metric {name:?}; one of {}", AbMetric::names())))
            })
            .collect::<Result<_, _>>()?,
    };
    let run_id = RunId::random();
    let request = AbTestRequested {
        event_id: AbTestRequested::id_for(&run_id),
        occurred_at: now,
        run_id,
        experiment,
        variant_a,
        variant_b,
        samples_per_variant: i32::try_from(samples).unwrap_or(i32::MAX),
        metrics,
        confidence: section.confidence.unwrap_or(ab::DEFAULT_CONFIDENCE),
        tolerance: section.tolerance.unwrap_or(ab::DEFAULT_TOLERANCE),
        alpha: None,
        requested_by: requested_by.to_owned(),
    };
    request.validate().map_err(|e| {
        let field = if e.field == "samples_per_variant" { "samples".to_owned() } else { e.field };
        at(&field, e.message)
    })?;
    Ok(request)
}

/// A variant and the experiment (as its RunRequested) it runs.
fn variant<'a>(
    name: &str,
    entry: &VariantEntry,
    default_label: &str,
    experiments: &'a [RunRequested],
    at: &dyn Fn(&str, String) -> GatewayError,
) -> Result<(AbVariant, &'a RunRequested), GatewayError> {
    let chosen = match &entry.experiment {
        Some(wanted) => experiments.iter().find(|r| &r.experiment.name == wanted).ok_or_else(|| {
            let names: Vec<&str> = experiments.iter().map(|r| r.experiment.name.as_str()).collect();
            at(
                &format!("{name}.experiment"),
                format!("no experiment named {wanted:?}; the file has {}", names.join(", ")),
            )
        })?,
        None if experiments.len() == 1 => &experiments[0],
        None => {
            return Err(at(
                &format!("{name}.experiment"),
                "missing: the file has several experiments, name the one this variant runs".into(),
            ));
        }
    };
    let regions = match &entry.regions {
        Some(regions) => {
            let mut names = Vec::with_capacity(regions.len());
            for region in regions {
                let region = region.trim();
                if region.is_empty() || region.contains(char::is_whitespace) {
                    return Err(at(&format!("{name}.regions"), format!("invalid region name {region:?}")));
                }
                names.push(RegionName::new(region));
            }
            names
        }
        None => chosen.regions.clone(),
    };
    let label = entry.label.clone().unwrap_or_else(|| default_label.to_owned());
    Ok((AbVariant { label, regions, experiment: None }, chosen))
}
