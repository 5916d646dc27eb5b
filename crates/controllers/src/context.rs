//! What every reconciler gets: the store, an event recorder, and where vmsnap keeps its data.

use crate::events::Recorder;
use std::path::PathBuf;
use std::sync::Arc;
use store::Store;

#[derive(Clone)]
pub struct Context {
    pub store: Arc<dyn Store>,
    pub recorder: Recorder,
    /// The data dir: pools live under `pools/`, VM run dirs under `run/`.
    pub data_dir: PathBuf,
}

impl Context {
    pub fn new(store: Arc<dyn Store>, data_dir: PathBuf) -> Self {
        Context {
            recorder: Recorder::new(store.clone(), "vmsnap-controller"),
            store,
            data_dir,
        }
    }
}
