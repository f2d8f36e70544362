//! The loaders never panic: random bytes and single-byte mutations of good files through every
//! parser (IDX, CSV, NPY, safetensors) give a value or an error, never a crash.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use fluxc_runtime::tensor::{Dtype, Tensor};
use fluxc_runtime::{csv, idx, npy, safetensors};
use proptest::prelude::*;

fn good_files() -> Vec<Vec<u8>> {
    let t = Tensor { dtype: Dtype::F32, shape: vec![2, 3], values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] };
    let dir = std::env::temp_dir().join(format!("fluxc-never-panics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (np, st) = (dir.join("a.npy"), dir.join("a.safetensors"));
    npy::write(&np, &t).unwrap();
    safetensors::write(
        &st,
        &safetensors::SafeTensors {
            tensors: vec![("w".into(), t.clone())],
            metadata: vec![("k".into(), "v".into())],
        },
    )
    .unwrap();
    let files = vec![
        idx::encode(&t).unwrap(),
        b"a,b,label\n1,2,x\n3.5,4,y\n".to_vec(),
        std::fs::read(&np).unwrap(),
        std::fs::read(&st).unwrap(),
    ];
    let _ = std::fs::remove_dir_all(&dir);
    files
}

fn all_parsers(bytes: &[u8]) {
    let _ = idx::parse(bytes);
    let _ = csv::parse(bytes, None);
    let _ = csv::parse(bytes, Some("label"));
    let _ = npy::parse(bytes);
    let _ = safetensors::parse(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        all_parsers(&bytes);
    }

    #[test]
    fn mutated_good_files(which in 0usize..4, at in any::<usize>(), byte in any::<u8>(), cut in any::<bool>()) {
        let files = good_files();
        let mut f = files[which].clone();
        let i = at % f.len();
        f[i] = byte;
        if cut {
            f.truncate(i);
        }
        all_parsers(&f);
    }
}
