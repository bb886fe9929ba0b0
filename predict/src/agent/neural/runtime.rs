//! Running the exported ONNX graph through `ort`.
//!
//! `ort` talks to one ONNX Runtime API per process. Two backends can stand
//! behind it:
//!
//! - **tract** (cargo feature `tract`, on by default): `ort-tract`, pure
//!   Rust, nothing to download. Sessions use graph optimisation level 3
//!   (tract runs several times faster with it set explicitly).
//! - **ONNX Runtime** (cargo feature `onnxruntime`): the shared library
//!   from the `onnxruntime` wheel on PyPI, loaded at run time with
//!   `ort::init_from(path)` (`load-dynamic`). The wheel ships only a
//!   versioned `libonnxruntime.so.1.*`; pass that path. A missing or
//!   unusable library is a [`ModelError::Runtime`], never a panic.
//!
//! [`init_backend`] picks one, once per process; a later call with the
//! other backend is an error. Without a call, the first neural agent
//! starts tract.

use crate::agent::ModelError;
use std::sync::{Mutex, OnceLock};

/// The inference backend of this process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `ort` over tract (pure Rust).
    Tract,
    /// `ort` over ONNX Runtime loaded from this shared library (for
    /// example `.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1`).
    OnnxRuntime {
        /// Path of `libonnxruntime.so.1.*`.
        library: std::path::PathBuf,
    },
}

impl Backend {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::OnnxRuntime { .. } => "onnxruntime",
        }
    }
}

struct Started {
    backend: Backend,
    env: ort::environment::Environment,
}

static STARTED: OnceLock<Started> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

/// Starts `backend` for this process. Calling it again with the same
/// backend does nothing; with another one it is an error (ort has one API
/// per process).
pub fn init_backend(backend: &Backend) -> Result<(), ModelError> {
    let _guard = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = STARTED.get() {
        if &s.backend == backend {
            return Ok(());
        }
        return Err(ModelError::Runtime(format!(
            "the {} backend is already running in this process; {} cannot start as well",
            s.backend.name(),
            backend.name()
        )));
    }
    let env = match backend {
        Backend::Tract => start_tract()?,
        Backend::OnnxRuntime { library } => start_onnxruntime(library)?,
    };
    let _ = STARTED.set(Started {
        backend: backend.clone(),
        env,
    });
    Ok(())
}

/// The running backend, if any.
pub fn current_backend() -> Option<Backend> {
    STARTED.get().map(|s| s.backend.clone())
}

#[cfg(feature = "tract")]
fn start_tract() -> Result<ort::environment::Environment, ModelError> {
    ort::set_api(ort_tract::api());
    ort::init()
        .with_name("jam-predict")
        .build()
        .map_err(|e| ModelError::Runtime(format!("starting tract: {e}")))
}

#[cfg(not(feature = "tract"))]
fn start_tract() -> Result<ort::environment::Environment, ModelError> {
    Err(ModelError::Runtime(
        "this build has no tract backend (cargo feature `tract`)".into(),
    ))
}

#[cfg(feature = "onnxruntime")]
fn start_onnxruntime(
    library: &std::path::Path,
) -> Result<ort::environment::Environment, ModelError> {
    if !library.is_file() {
        return Err(ModelError::Runtime(format!(
            "onnx runtime library {} does not exist (pip install onnxruntime, then pass onnxruntime/capi/libonnxruntime.so.1.* from its site-packages)",
            library.display()
        )));
    }
    let builder = ort::init_from(library).map_err(|e| {
        ModelError::Runtime(format!(
            "loading onnx runtime from {}: {e}",
            library.display()
        ))
    })?;
    #[cfg(feature = "tract")]
    dylib::hand_api_to_ort(library)?;
    builder
        .with_name("jam-predict")
        .build()
        .map_err(|e| ModelError::Runtime(format!("starting onnx runtime: {e}")))
}

#[cfg(not(feature = "onnxruntime"))]
fn start_onnxruntime(
    library: &std::path::Path,
) -> Result<ort::environment::Environment, ModelError> {
    Err(ModelError::Runtime(format!(
        "this build has no onnx runtime backend (cargo feature `onnxruntime`); cannot load {}",
        library.display()
    )))
}

/// With both features on, `ort` is built for an "alternative backend" and
/// takes its API table only from `ort::set_api`; `ort::init_from` has
/// loaded and version-checked the library, and this hands its API table to
/// `ort`.
#[cfg(all(feature = "onnxruntime", feature = "tract"))]
#[allow(
    unsafe_code,
    reason = "fetching ONNX Runtime's C API table from the loaded library"
)]
mod dylib {
    use crate::agent::ModelError;

    pub(super) fn hand_api_to_ort(library: &std::path::Path) -> Result<(), ModelError> {
        let err = |what: String| ModelError::Runtime(format!("{}: {what}", library.display()));
        // SAFETY: loading ONNX Runtime runs its initialisers, which are
        // safe to run more than once per process; `ort::init_from` has
        // already loaded this same file successfully and checked its version.
        let lib = unsafe { libloading::Library::new(library) }.map_err(|e| err(e.to_string()))?;
        // SAFETY: `OrtGetApiBase` is ONNX Runtime's documented entry point
        // with exactly this signature (onnxruntime_c_api.h).
        let get_base: libloading::Symbol<
            '_,
            unsafe extern "C" fn() -> *const ort::sys::OrtApiBase,
        > = unsafe { lib.get(b"OrtGetApiBase") }.map_err(|e| err(e.to_string()))?;
        // SAFETY: the function takes no arguments and returns a pointer to
        // a static table (or null, checked below).
        let base = unsafe { get_base() };
        if base.is_null() {
            return Err(err("OrtGetApiBase returned null".into()));
        }
        // SAFETY: `base` is non-null and points to ONNX Runtime's static
        // `OrtApiBase`; `GetApi` returns a static table for any version it
        // supports, or null (checked below).
        let api = unsafe { ((*base).GetApi)(ort::sys::ORT_API_VERSION) };
        if api.is_null() {
            return Err(err(format!(
                "the library does not provide ONNX Runtime API version {}",
                ort::sys::ORT_API_VERSION
            )));
        }
        // SAFETY: `api` is non-null and points to a table of at least
        // `size_of::<OrtApi>()` bytes for the requested version; copying it
        // copies function pointers that stay valid while the library stays
        // loaded, which it does for the rest of the process (forgotten
        // below).
        let table = unsafe { std::ptr::read(api) };
        std::mem::forget(lib);
        if !ort::set_api(table) {
            return Err(err("another ort backend was set first".into()));
        }
        Ok(())
    }
}

/// One loaded graph.
pub(crate) struct OrtRunner {
    session: ort::session::Session,
    d: usize,
}

impl std::fmt::Debug for OrtRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtRunner")
            .field("d", &self.d)
            .finish_non_exhaustive()
    }
}

impl OrtRunner {
    /// Loads `onnx` (already validated by `onnx::import`) on the running
    /// backend (tract if none was started), on one thread.
    pub(crate) fn new(onnx: &[u8], d: usize) -> Result<OrtRunner, ModelError> {
        if STARTED.get().is_none() {
            init_backend(&Backend::Tract)?;
        }
        let started = STARTED
            .get()
            .ok_or_else(|| ModelError::Runtime("no inference backend started".into()))?;
        let err = |e: ort::Error| ModelError::Runtime(e.to_string());
        let session = ort::session::Session::builder(&started.env)
            .map_err(err)?
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
            .map_err(|e| ModelError::Runtime(e.to_string()))?
            .with_intra_threads(1)
            .map_err(|e| ModelError::Runtime(e.to_string()))?
            .commit_from_memory(onnx)
            .map_err(err)?;
        Ok(OrtRunner { session, d })
    }

    /// Runs the graph on one feature vector; returns the four heads.
    pub(crate) fn run(&mut self, x: &[f32]) -> Result<[Vec<f32>; 4], String> {
        if x.len() != self.d {
            return Err(format!(
                "{} features given, the graph takes {}",
                x.len(),
                self.d
            ));
        }
        let input = ort::value::TensorRef::from_array_view(([1usize, self.d], x))
            .map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![super::onnx::INPUT => input])
            .map_err(|e| e.to_string())?;
        let mut out: [Vec<f32>; 4] = Default::default();
        for (k, name) in super::onnx::OUTPUTS.iter().enumerate() {
            let (_, data) = outputs[*name]
                .try_extract_tensor::<f32>()
                .map_err(|e| e.to_string())?;
            out[k] = data.to_vec();
        }
        Ok(out)
    }
}
