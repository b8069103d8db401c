//! The engine against the real demo bundle (exported by `make model`).

use std::fs;
use std::path::{Path, PathBuf};

use rankd_kernels::bundle::{sha256_file, GOLDEN_FILE, MANIFEST_FILE};
use rankd_kernels::{
    Bundle, DeviceSpec, EngineConfig, InputError, KernelError, Precision, RankInput, Ranker,
    TorchRanker,
};

fn bundle_dir() -> PathBuf {
    let dir = std::env::var_os("RANKD_TEST_BUNDLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo"));
    assert!(
        dir.join(MANIFEST_FILE).exists(),
        "no demo bundle at {}: run `make model` first",
        dir.display()
    );
    dir
}

fn cpu() -> EngineConfig {
    EngineConfig {
        device: DeviceSpec::Cpu,
        warmup_iterations: 1,
        ..EngineConfig::default()
    }
}

fn load(dir: &Path) -> Result<TorchRanker, KernelError> {
    let bundle = Bundle::open(dir)?;
    TorchRanker::load(&bundle, &cpu()).map(|(r, _)| r)
}

/// A private copy of the bundle whose manifest and files a test may change.
fn copy_bundle() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(bundle_dir()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn reseal(dir: &Path, file: &str) {
    let sha = sha256_file(&dir.join(file)).unwrap();
    edit_json(&dir.join(MANIFEST_FILE), |m| m["files"][file] = sha.into());
}

#[test]
fn batched_ragged_requests_match_single_requests() {
    let bundle = Bundle::open(bundle_dir()).unwrap();
    let (ranker, _) = TorchRanker::load(&bundle, &cpu()).unwrap();
    let cases = &bundle.golden.cases;
    let inputs: Vec<RankInput<'_>> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| RankInput {
            query: &c.query,
            // Cut some lists short so the batch mixes lengths and needs the padding mask.
            candidates: &c.candidates[..c.candidates.len() - (i % 3) * 7],
            top_k: 5 + i,
        })
        .collect();
    let batched = ranker.rank_batch(&inputs).unwrap();
    for (input, got) in inputs.iter().zip(batched) {
        let got = got.unwrap();
        let alone = ranker
            .rank_batch(std::slice::from_ref(input))
            .unwrap()
            .remove(0)
            .unwrap();
        assert_eq!(got.ids, alone.ids);
        for (a, b) in got.scores.iter().zip(&alone.scores) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert_eq!(got.ids.len(), input.top_k.min(input.candidates.len()));
        assert!(got.ids.iter().all(|id| input.candidates.contains(id)));
    }
}

#[test]
fn top_k_beyond_the_candidates_returns_all_of_them_sorted() {
    let ranker = load(&bundle_dir()).unwrap();
    let query = vec![0.25f32; ranker.info().query_dim];
    let candidates = [9i64, 4, 7, 1, 3];
    let got = ranker
        .rank_batch(&[RankInput {
            query: &query,
            candidates: &candidates,
            top_k: 100,
        }])
        .unwrap()
        .remove(0)
        .unwrap();
    let mut ids = got.ids.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 3, 4, 7, 9]);
    assert!(
        got.scores.windows(2).all(|w| w[0] >= w[1]),
        "{:?}",
        got.scores
    );
}

#[test]
fn invalid_input_is_refused_before_libtorch() {
    let ranker = load(&bundle_dir()).unwrap();
    let query = vec![0.0f32; ranker.info().query_dim];
    let bad_id = ranker.info().item_count as i64;
    let err = ranker
        .rank_batch(&[RankInput {
            query: &query,
            candidates: &[0, bad_id],
            top_k: 1,
        }])
        .unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Input(InputError::UnknownId { index: 1, .. })
        ),
        "{err}"
    );
}

#[test]
fn half_precision_on_cpu_is_refused() {
    let bundle = Bundle::open(bundle_dir()).unwrap();
    let cfg = EngineConfig {
        precision: Precision::Fp16,
        ..cpu()
    };
    let err = TorchRanker::load(&bundle, &cfg).err().unwrap();
    assert!(
        matches!(err, KernelError::PrecisionUnsupported { .. }),
        "{err}"
    );
}

#[test]
fn a_manifest_with_the_wrong_query_dim_is_a_shape_error() {
    let dir = copy_bundle();
    edit_json(&dir.path().join(MANIFEST_FILE), |m| {
        m["query_dim"] = 31.into()
    });
    // The golden queries still have 32 features; the warmup forward fails first.
    let err = load(dir.path()).err().unwrap();
    assert!(
        matches!(err, KernelError::Shape { query_dim: 31, .. }),
        "{err}"
    );
}

#[test]
fn a_manifest_with_the_wrong_item_count_is_an_item_table_error() {
    let dir = copy_bundle();
    edit_json(&dir.path().join(MANIFEST_FILE), |m| {
        m["item_count"] = 99_999.into()
    });
    let err = load(dir.path()).err().unwrap();
    assert!(matches!(err, KernelError::ItemTable(_)), "{err}");
}

#[test]
fn a_model_that_disagrees_with_its_golden_set_is_never_served() {
    let dir = copy_bundle();
    edit_json(&dir.path().join(GOLDEN_FILE), |g| {
        let ids = g["cases"][0]["expected_ids"].as_array_mut().unwrap();
        ids.swap(0, 5);
    });
    reseal(dir.path(), GOLDEN_FILE);
    let err = load(dir.path()).err().unwrap();
    assert!(matches!(err, KernelError::Golden { case: 0, .. }), "{err}");
}

#[test]
fn a_file_that_is_not_torchscript_is_named() {
    let dir = copy_bundle();
    fs::write(dir.path().join("model.pt"), b"definitely not a zip archive").unwrap();
    reseal(dir.path(), "model.pt");
    let err = load(dir.path()).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, KernelError::ModelFile { .. }), "{msg}");
    assert!(
        msg.starts_with("model.pt: not a loadable TorchScript module"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn an_int8_bundle_on_a_cuda_configuration_is_refused_with_the_reason() {
    let dir = copy_bundle();
    edit_json(&dir.path().join(MANIFEST_FILE), |m| {
        m["precision"] = "int8".into()
    });
    let bundle = Bundle::open(dir.path()).unwrap();
    let cfg = EngineConfig {
        device: DeviceSpec::Cuda(0),
        ..cpu()
    };
    let err = TorchRanker::load(&bundle, &cfg).err().unwrap();
    assert!(matches!(err, KernelError::Int8OnCuda { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("int8") && msg.contains("CPU only") && msg.contains("cuda:0"),
        "{msg}"
    );
}

#[test]
fn an_item_table_stored_in_another_dtype_than_the_manifest_says_is_named() {
    let dir = copy_bundle();
    edit_json(&dir.path().join(MANIFEST_FILE), |m| {
        m["precision"] = "fp16".into()
    });
    let err = load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("item table") && err.contains("fp16"), "{err}");
}

#[test]
fn the_demo_model_ranks_its_held_out_set_far_better_than_chance() {
    let bundle = Bundle::open(bundle_dir()).unwrap();
    let set = bundle
        .eval_set()
        .unwrap()
        .expect("the demo bundle ships eval.json");
    let ranker = load(&bundle_dir()).unwrap();
    let ranked = rankd_kernels::quality::rankings(&ranker, &set).unwrap();
    let ndcg = rankd_kernels::quality::ndcg(&set, &ranked);
    // The exporter reports about 0.94 for the demo model and about 0.21 for random order.
    assert!(ndcg > 0.85, "NDCG@10 {ndcg}");
    assert!((rankd_kernels::quality::overlap(&ranked, &ranked, set.k) - 1.0).abs() < 1e-12);
}
