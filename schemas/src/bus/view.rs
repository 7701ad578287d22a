//! A processor's view of its state during a batch, and the typed (JSON) access to it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{StateStore, parse_state};
use crate::error::{Error, Result};

/// A processor's view of its state during a batch: committed values overlaid with the batch's own writes.
#[derive(Debug)]
pub struct StateView<'a> {
    pub(super) store: &'a StateStore,
    pub(super) pending: &'a mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> StateView<'a> {
    /// A view over `store` that records writes in `pending` (the runner commits them with the offsets).
    pub fn new(store: &'a StateStore, pending: &'a mut BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Self {
        Self { store, pending }
    }

    /// The current value of a key, including writes earlier in this batch.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.store.get(key),
        }
    }

    /// Every key with `prefix` and its current value, in key order, including this batch's writes.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.store.scan_prefix(prefix)?.into_iter().collect();
        for (key, value) in self.pending.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)) {
            match value {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Sets a key.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), Some(value.into()));
    }

    /// Deletes a key.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), None);
    }

    /// The value at `key` as JSON of type `T`. A value that does not parse is corrupt state: an error
    /// ([`Error::CorruptState`], which stops the runner), never taken as absent.
    pub fn get_json<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        self.get(key)?.map(|bytes| parse_state(key, &bytes)).transpose()
    }

    /// Every value under `prefix` as JSON of type `T`, with its key, in key order; corrupt state is an
    /// error, as in [`StateView::get_json`].
    pub fn scan_json<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>> {
        self.scan_prefix(prefix)?.into_iter().map(|(k, v)| parse_state(&k, &v).map(|t| (k, t))).collect()
    }

    /// Sets `key` to `value` as JSON.
    pub fn put_json<T: Serialize + ?Sized>(&mut self, key: impl Into<Vec<u8>>, value: &T) -> Result<()> {
        let key = key.into();
        let bytes = serde_json::to_vec(value).map_err(|e| Error::CorruptState {
            key: String::from_utf8_lossy(&key).into_owned(),
            reason: format!("cannot be written as JSON: {e}"),
        })?;
        self.put(key, bytes);
        Ok(())
    }
}
