//! The region registry, folded from the regions topic the same way by every reader: the orchestrator
//! and the dispatcher keep it in their state stores (`region/{name}` → [`RegionEntry`] as JSON), the
//! client commands fold it in memory ([`Registry`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::StateStore;
use super::processor::StateView;
use crate::error::Result;
use crate::events::Event;
use crate::ids::RegionName;

/// A registered region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionEntry {
    pub name: RegionName,
    pub endpoint: String,
    pub priority: i32,
}

const PREFIX: &str = "region/";

fn key(region: &RegionName) -> Vec<u8> {
    format!("{PREFIX}{region}").into_bytes()
}

/// The entry a regions-topic event leaves for its region: `Some` for a registration, `None` for a
/// removal; other events are not about the registry (`Err(())`).
fn entry_after(event: &Event) -> std::result::Result<(&RegionName, Option<RegionEntry>), ()> {
    match event {
        Event::RegionRegistered(e) => Ok((
            &e.region,
            Some(RegionEntry { name: e.region.clone(), endpoint: e.endpoint.clone(), priority: e.priority }),
        )),
        Event::RegionRemoved(e) => Ok((&e.region, None)),
        _ => Err(()),
    }
}

/// Applies a regions-topic event to the registry in `state` (other events change nothing).
pub fn fold(state: &mut StateView<'_>, event: &Event) -> Result<()> {
    match entry_after(event) {
        Ok((region, Some(entry))) => state.put_json(key(region), &entry),
        Ok((region, None)) => {
            state.remove(key(region));
            Ok(())
        }
        Err(()) => Ok(()),
    }
}

/// A region's entry, as this batch sees it.
pub fn get(state: &StateView<'_>, region: &RegionName) -> Result<Option<RegionEntry>> {
    state.get_json(&key(region))
}

/// Every registered region, as this batch sees it, by name.
pub fn all(state: &StateView<'_>) -> Result<Vec<RegionEntry>> {
    Ok(state.scan_json(PREFIX.as_bytes())?.into_iter().map(|(_, entry)| entry).collect())
}

/// Every registered region, as committed, by name.
pub fn committed(store: &StateStore) -> Result<Vec<RegionEntry>> {
    Ok(store.scan_json(PREFIX.as_bytes())?.into_iter().map(|(_, entry)| entry).collect())
}

/// The registry in memory, for a client reading the regions topic from the beginning.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    regions: BTreeMap<String, RegionEntry>,
}

impl Registry {
    /// Applies a regions-topic event (other events change nothing).
    pub fn apply(&mut self, event: &Event) {
        match entry_after(event) {
            Ok((region, Some(entry))) => {
                self.regions.insert(region.to_string(), entry);
            }
            Ok((region, None)) => {
                self.regions.remove(region.as_str());
            }
            Err(()) => {}
        }
    }

    /// The registered regions, highest priority first, then by name.
    pub fn by_priority(&self) -> Vec<RegionEntry> {
        let mut out: Vec<RegionEntry> = self.regions.values().cloned().collect();
        out.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.as_str().cmp(b.name.as_str())));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::samples;

    #[test]
    fn the_store_and_the_memory_fold_agree() {
        let Event::RegionRegistered(mut a) = samples::sample(EventKind::RegionRegistered) else { unreachable!() };
        a.region = RegionName::new("a");
        a.priority = 1;
        let mut b = a.clone();
        b.region = RegionName::new("b");
        b.priority = 5;
        let Event::RegionRemoved(mut gone) = samples::sample(EventKind::RegionRemoved) else { unreachable!() };
        gone.region = RegionName::new("a");
        let events = [Event::RegionRegistered(a.clone()), Event::RegionRegistered(b), Event::RegionRemoved(gone)];
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("store");
        let mut pending = BTreeMap::new();
        let mut view = StateView::new(&store, &mut pending);
        let mut memory = Registry::default();
        for event in &events {
            fold(&mut view, event).expect("fold");
            memory.apply(event);
        }
        assert_eq!(all(&view).expect("all"), memory.by_priority());
        assert_eq!(memory.by_priority().iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(get(&view, &RegionName::new("a")).expect("get"), None);
    }
}
