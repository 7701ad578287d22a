//! ChaosEater's event contract and the Kafka bus every role shares.
//!
//! - [`topics`]: topic names and their creation settings.
//! - [`ids`]: newtype ids (`RunId`, `RegionName`, ...) and deterministic event ids.
//! - [`experiment`]: the experiment as events carry it (layer, validated parameters, rollback config).
//! - [`faults`]: the fault catalogue and parameter validation, shared by every edge that accepts a fault.
//! - [`limits`]: what the platform accepts: string lengths, id alphabets, number ranges, finite floats.
//! - [`events`]: one typed struct per `avro/*.avsc` file and the [`events::Event`] enum.
//! - [`codec`]: Avro single-object (default) and Confluent framing; decoding dispatches on the header.
//! - [`sync`]: the one policy for poisoned locks (recover the data, never skip the work).
//! - [`rng`]: the one seedable generator (SplitMix64) for the demo data, fault decisions, the synthetic
//!   history and simulations.
//! - `bus` (feature `bus`, on by default): the producer, the consumer whose offsets live in a sled state
//!   store next to the state they produced, the dead-letter queue, topic admin and the embedded broker.
//!
//! Data flows: a component builds an [`events::Event`], the [`codec::Codec`] turns it into bytes, the
//! bus publishes them to [`events::Event::topic`] keyed by [`events::Event::key`]; a consumer decodes them
//! back, or sends them to the DLQ when it cannot.

pub mod codec;
pub mod error;
pub mod events;
pub mod experiment;
pub mod faults;
pub mod ids;
pub mod limits;
pub mod rng;
pub mod samples;
pub mod sync;
pub mod topics;

mod rabin;

#[cfg(feature = "bus")]
pub mod bus;

pub use error::{Error, Result};

/// The folder of the package whose code expands it, for tests reading their checked-in files: cargo's
/// runtime `CARGO_MANIFEST_DIR` first, so that a test binary built from another checkout of the same
/// commit (a shared target directory) reads this checkout's files; the compile-time one otherwise.
#[macro_export]
macro_rules! package_dir {
    () => {
        ::std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| ::std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), ::std::path::PathBuf::from)
    };
}
