//! A processor over a real state store, without a broker: events in, events out, each applied and
//! committed as its own batch, with `on_commit` after the commit and `on_discard` after a refusal, as the
//! runner does. The unit tests of every processor use it (feature `testing`, for dev-dependencies).

use super::state::Commit;
use super::{ApplyError, Origin, Processor, StateStore, StateView};
use crate::events::Event;
use crate::ids::TimestampMs;

#[derive(Debug)]
pub struct Rig<P: Processor> {
    _dir: tempfile::TempDir,
    pub store: StateStore,
    pub processor: P,
    offset: i64,
    /// The time `apply` sees ([`Origin::now`]); tests move it.
    pub now: TimestampMs,
}

impl<P: Processor> Rig<P> {
    pub fn new(processor: P) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("store");
        Self { _dir: dir, store, processor, offset: 0, now: TimestampMs::now() }
    }

    /// Applies `event` as the next message of one partition and commits what it wrote.
    pub fn apply(&mut self, event: Event) -> Vec<Event> {
        self.try_apply(event).expect("applied")
    }

    /// As [`Rig::apply`], returning a refusal instead of panicking on it (nothing is committed then).
    pub fn try_apply(&mut self, event: Event) -> Result<Vec<Event>, ApplyError> {
        let mut pending = Default::default();
        let origin = Origin { topic: "t".into(), partition: 0, offset: self.offset, now: self.now };
        self.offset += 1;
        let applied = {
            let mut view = StateView::new(&self.store, &mut pending);
            self.processor.apply(&event, &origin, &mut view)
        };
        let out = match applied {
            Ok(out) => out,
            Err(e) => {
                self.processor.on_discard();
                return Err(e);
            }
        };
        self.store.commit(Commit { state: pending, ..Commit::default() }).expect("commit");
        self.processor.on_commit(&self.store);
        Ok(out)
    }

    /// Lets the processor see `now` and commits what it wrote.
    pub fn tick(&mut self, now: TimestampMs) -> Vec<Event> {
        let mut pending = Default::default();
        let out = {
            let mut view = StateView::new(&self.store, &mut pending);
            self.processor.tick(now, &mut view).expect("tick")
        };
        self.store.commit(Commit { state: pending, ..Commit::default() }).expect("commit");
        self.processor.on_commit(&self.store);
        out
    }
}
