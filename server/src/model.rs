//! The active model and how versions get there.
//!
//! [`ModelSlot`] holds the model serving requests and the one before it. Activation loads
//! the new version completely (verify, decrypt, load, warm up, golden set) before the
//! switch, which is a pointer swap: requests already batched finish on the model they
//! started with, and the previous model stays loaded so switching back is instant.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rankd_artifact::{ModelRecord, Store, StoreError};
use rankd_kernels::{Bundle, EngineConfig, KernelError, ModelInfo, Ranker, TorchRanker};

use crate::quality::live::LiveSignals;
use crate::quality::replay::Round;
use crate::quality::ScoreStats;

/// Locks a field no code panics while holding; a poisoned one is still whole.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a version could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("the artifact holds {found}, but the store recorded {expected}")]
    Mismatch { expected: String, found: String },
}

/// A loaded, validated model version.
pub struct Loaded {
    pub ranker: Arc<dyn Ranker>,
    pub info: ModelInfo,
    pub load_seconds: f64,
    /// `(term, log index)` of the registry entry that activated this version; `(0, 0)`
    /// while it is only loaded, not active.
    pub fence: (u64, u64),
    /// What this version's live traffic got scored; shared by every activation of it.
    pub scores: Arc<ScoreStats>,
    /// The bundle's golden set, replayed periodically while the version serves.
    pub golden: Option<Arc<GoldenReference>>,
    /// Rank calls answered while this version was the one serving: what a bake judges.
    pub live: Arc<LiveSignals>,
    /// The last complete golden replay of this version, if one ran.
    pub last_replay: Arc<Mutex<Option<Round>>>,
    /// Its score drift (PSI) as last exported; `None` until there are enough scores.
    pub drift: Arc<Mutex<Option<f64>>>,
}

/// A golden set and the tolerance it was validated with at load.
pub struct GoldenReference {
    pub set: rankd_kernels::GoldenSet,
    pub tolerance: f32,
}

impl Loaded {
    pub fn new(ranker: Arc<dyn Ranker>, load_seconds: f64) -> Loaded {
        let info = ranker.info().clone();
        Loaded {
            ranker,
            info,
            load_seconds,
            fence: (0, 0),
            scores: Arc::new(ScoreStats::new()),
            golden: None,
            live: Arc::new(LiveSignals::new()),
            last_replay: Default::default(),
            drift: Default::default(),
        }
    }

    pub fn with_golden(mut self, golden: GoldenReference) -> Loaded {
        self.golden = Some(Arc::new(golden));
        self
    }

    /// The same loaded model under an activation's fence (shares the engine: no reload).
    pub fn activated(&self, term: u64, index: u64) -> Loaded {
        Loaded {
            ranker: self.ranker.clone(),
            info: self.info.clone(),
            load_seconds: self.load_seconds,
            fence: (term, index),
            scores: self.scores.clone(),
            golden: self.golden.clone(),
            live: self.live.clone(),
            last_replay: self.last_replay.clone(),
            drift: self.drift.clone(),
        }
    }
}

#[derive(Default)]
pub struct ModelSlot {
    current: RwLock<Option<Arc<Loaded>>>,
    previous: RwLock<Option<Arc<Loaded>>>,
}

impl ModelSlot {
    pub fn new() -> ModelSlot {
        ModelSlot::default()
    }

    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `model` the serving model; the one it replaces stays loaded as previous.
    ///
    /// A different version inherits, as its drift baseline, the scores the outgoing version
    /// served just before the switch: the same traffic, so a new model that scores it very
    /// differently shows up as drift.
    pub fn install(&self, model: Arc<Loaded>) {
        if let Some(old) = self.current() {
            if old.info.version != model.info.version || old.info.name != model.info.name {
                let source = format!(
                    "{}@{}'s live scores at the switch",
                    old.info.name, old.info.version
                );
                if let Some(b) = old.scores.as_baseline(source) {
                    model.scores.set_baseline(b);
                }
            }
        }
        let old = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace(model);
        if let Some(old) = old {
            *self.previous.write().unwrap_or_else(|p| p.into_inner()) = Some(old);
        }
    }

    /// Stops serving: the registry names a version this node has not loaded yet, and
    /// serving any other would break the fence.
    pub fn clear(&self) {
        let old = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(old) = old {
            *self.previous.write().unwrap_or_else(|p| p.into_inner()) = Some(old);
        }
    }
}

/// Verifies, decrypts and loads a stored version. The plaintext lives only for the call.
pub fn load_stored(
    store: &Store,
    name: &str,
    version: &str,
    engine: &EngineConfig,
) -> Result<Loaded, LoadError> {
    let start = Instant::now();
    let checkout = store.checkout(name, version)?;
    let bundle = Bundle::open(checkout.dir())?;
    let m = &bundle.manifest;
    if m.name != name || m.version != version {
        return Err(LoadError::Mismatch {
            expected: format!("{name} version {version}"),
            found: format!("{} version {}", m.name, m.version),
        });
    }
    let (ranker, _) = TorchRanker::load(&bundle, engine)?;
    let golden = GoldenReference {
        set: bundle.golden.clone(),
        tolerance: engine
            .golden_tolerance
            .unwrap_or_else(|| engine.precision.default_golden_tolerance()),
    };
    Ok(Loaded::new(Arc::new(ranker), start.elapsed().as_secs_f64()).with_golden(golden))
}

/// Seals the bundle in `dir` into the store and proves it loads from the store (checksums,
/// decryption, golden set). A bundle that fails is removed again, so nothing unservable
/// is ever kept. Returns the record and the loaded model.
pub fn store_and_validate(
    store: &Store,
    dir: &Path,
    uploaded_by: &str,
    engine: &EngineConfig,
) -> Result<(ModelRecord, Loaded), LoadError> {
    // Checks the manifest and every file's checksum before anything is sealed.
    let bundle = Bundle::open(dir)?;
    let (name, version) = (
        bundle.manifest.name.clone(),
        bundle.manifest.version.clone(),
    );
    let files = bundle.file_names();
    let existed = store.get(&name, &version).is_some();
    let record = store.put(dir, &files, &name, &version, uploaded_by)?;
    match load_stored(store, &name, &version, engine) {
        Ok(loaded) => Ok((record, loaded)),
        Err(e) => {
            if !existed {
                let _ = store.remove(&name, &version);
            }
            Err(e)
        }
    }
}
