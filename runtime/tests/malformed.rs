//! The malformed-file suite (issue: training runtime): for every data format, files made by
//! generators here — truncations, lying headers, wrong magic, bad dtypes, huge declared shapes,
//! non-finite values, ragged CSV, a byte-order mark, empty files — are each rejected with a
//! specific message and without allocating from the lie. Good files round-trip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use fluxc_runtime::data::{self, Transform};
use fluxc_runtime::tensor::{Dtype, Tensor};
use fluxc_runtime::{csv, idx, npy, safetensors};

fn idx_file(code: u8, dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(values);
    b
}

fn rejects(r: Result<impl std::fmt::Debug, String>, want: &str) {
    match r {
        Ok(v) => panic!("accepted, expected an error containing {want:?}: {v:?}"),
        Err(e) => assert!(e.contains(want), "error {e:?} does not mention {want:?}"),
    }
}

#[test]
fn idx_good_files_round_trip() {
    let t = Tensor { dtype: Dtype::U8, shape: vec![2, 2, 3], values: (0..12).map(f64::from).collect() };
    let bytes = idx::encode(&t).unwrap();
    assert_eq!(idx::parse(&bytes).unwrap(), t);
    let f = Tensor { dtype: Dtype::F32, shape: vec![3], values: vec![0.5, -1.0, 2.25] };
    assert_eq!(idx::parse(&idx::encode(&f).unwrap()).unwrap(), f);
}

#[test]
fn idx_malformed_files_are_rejected() {
    rejects(idx::parse(&[]), "empty");
    rejects(idx::parse(&[0, 0, 8]), "shorter than an IDX header");
    rejects(idx::parse(&[1, 0, 8, 1, 0, 0, 0, 1, 7]), "magic");
    rejects(idx::parse(&idx_file(0x42, &[1], &[0])), "unknown IDX value type 0x42");
    rejects(idx::parse(&[0, 0, 8, 0]), "rank of 0");
    rejects(idx::parse(&[0, 0, 8, 200]), "rank of 200");
    rejects(idx::parse(&[0, 0, 8, 2, 0, 0, 0, 2]), "declares 2 sizes");
    // Truncated values, trailing bytes, a shape that would need more than the limit.
    rejects(idx::parse(&idx_file(0x08, &[2, 3], &[1, 2, 3, 4, 5])), "truncated");
    rejects(idx::parse(&idx_file(0x08, &[2], &[1, 2, 3])), "longer than its header says");
    rejects(idx::parse(&idx_file(0x0E, &[65_536, 65_536, 4], &[])), "limit");
    // A u8 file whose values would fill memory as f64: refused before reading them.
    rejects(idx::parse(&idx_file(0x08, &[1 << 15, 1 << 15], &[])), "the limit is 268435456");
    rejects(idx::parse(&idx_file(0x08, &[u32::MAX, u32::MAX, u32::MAX, u32::MAX], &[])), "overflow");
}

#[test]
fn csv_good_file_with_string_labels() {
    let c = csv::parse(b"a,b,kind\n1,2,cat\r\n3.5,-4,dog\n\n", Some("kind")).unwrap();
    assert_eq!(c.features.shape, vec![2, 2]);
    assert_eq!(c.features.values, vec![1.0, 2.0, 3.5, -4.0]);
    assert_eq!(c.labels, vec!["cat", "dog"]);
    let d = data::from_csv(&c, &Transform { classes: Some(2), ..Transform::default() }).unwrap();
    assert_eq!(d.y, vec![1.0, 0.0, 0.0, 1.0]);
    assert_eq!(d.class_names, Some(vec!["cat".to_owned(), "dog".to_owned()]));
}

#[test]
fn csv_malformed_files_are_rejected() {
    rejects(csv::parse(b"", None), "empty");
    rejects(csv::parse(b"\xEF\xBB\xBFa,b\n1,2\n", None), "byte-order mark");
    rejects(csv::parse(b"a,b\n1,\xff\n", None), "line 2: not UTF-8");
    rejects(csv::parse(b"\n\n", None), "no header");
    rejects(csv::parse(b"a,b\n", None), "no rows");
    rejects(csv::parse(b"a\n1\n", None), "fewer than two columns");
    rejects(csv::parse(b"a,,c\n1,2,3\n", None), "column 2 has no name");
    rejects(csv::parse(b"a,a,c\n1,2,3\n", None), "appears twice");
    rejects(csv::parse(b"a,b,c\n1,2,3\n4,5\n", None), "line 3: 2 fields, the header has 3");
    rejects(csv::parse(b"a,b,c\n1,x,3\n", None), "line 2, column 2 (b): \"x\" is not a number");
    rejects(csv::parse(b"a,b,c\n1,NaN,3\n", None), "line 2, column 2 (b): NaN is not a finite number");
    rejects(csv::parse(b"a,b,c\n1,inf,3\n", None), "not a finite number");
    rejects(csv::parse(b"a,b,c\n\"1\",2,3\n", None), "quoted fields");
    rejects(csv::parse(b"a,b,c\n1,2,\n", None), "an empty label");
    rejects(csv::parse(b"a,b\n1,2\n", Some("label")), "no column \"label\" (the columns are a, b)");
}

#[test]
fn labels_are_checked_against_classes() {
    let c = csv::parse(b"a,y\n1,0\n2,3\n", None).unwrap();
    rejects(
        data::from_csv(&c, &Transform { classes: Some(3), ..Transform::default() }),
        "row 2: the label 3 is outside 0..3",
    );
    let s = csv::parse(b"a,y\n1,cat\n2,dog\n3,emu\n", None).unwrap();
    rejects(
        data::from_csv(&s, &Transform { classes: Some(2), ..Transform::default() }),
        "3 distinct values (cat, dog, emu), but `classes = 2`",
    );
    rejects(data::from_csv(&s, &Transform::default()), "holds strings");
    let x = Tensor { dtype: Dtype::F32, shape: vec![2, 2], values: vec![1.0, 2.0, 3.0, f64::NAN] };
    let y = Tensor { dtype: Dtype::U8, shape: vec![2], values: vec![0.0, 1.0] };
    rejects(data::from_tensors(&x, &y, &Transform::default()), "row 2: a non-finite input value");
    let x = Tensor { dtype: Dtype::F32, shape: vec![3, 2], values: vec![0.0; 6] };
    rejects(data::from_tensors(&x, &y, &Transform::default()), "3 input rows but 2 target rows");
    let x = Tensor { dtype: Dtype::F32, shape: vec![2, 2], values: vec![0.0; 4] };
    let y = Tensor { dtype: Dtype::F32, shape: vec![2], values: vec![0.5, 1.0] };
    rejects(data::from_tensors(&x, &y, &Transform { classes: Some(2), ..Transform::default() }), "label 0.5");
    rejects(
        data::from_tensors(&x, &y, &Transform { shape: Some(vec![3]), ..Transform::default() }),
        "declared shape [3] holds 3",
    );
}

#[test]
fn classes_with_target_shape_give_a_one_hot_label_per_position() {
    let x = Tensor { dtype: Dtype::U8, shape: vec![2, 3], values: vec![0.0, 1.0, 2.0, 2.0, 1.0, 0.0] };
    let y = Tensor { dtype: Dtype::U8, shape: vec![2, 3], values: vec![1.0, 2.0, 0.0, 0.0, 2.0, 1.0] };
    let t = Transform { classes: Some(3), target_shape: Some(vec![3]), ..Transform::default() };
    let d = data::from_tensors(&x, &y, &t).unwrap();
    assert_eq!(d.y_shape, vec![3, 3]);
    assert_eq!(d.labels_per_row(), 3);
    assert_eq!(d.class.as_deref(), Some(&[1, 2, 0, 0, 2, 1][..]));
    assert_eq!(&d.y[..9], &[0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    // Selecting rows keeps each row's labels together.
    let second = d.select(&[1]);
    assert_eq!(second.class.as_deref(), Some(&[0, 2, 1][..]));
    assert_eq!(second.y.len(), 9);
    // Without target_shape a row must hold one label; a bad label names its row.
    rejects(
        data::from_tensors(&x, &y, &Transform { classes: Some(3), ..Transform::default() }),
        "declare `target_shape = [3]`",
    );
    rejects(data::from_tensors(&x, &y, &Transform { classes: Some(2), ..t.clone() }), "row 1: the label 2");
    rejects(
        data::from_tensors(&x, &y, &Transform { target_shape: Some(vec![4]), ..t }),
        "declared shape [4] holds 4",
    );
}

#[test]
fn splits_are_seeded_disjoint_and_stable() {
    let a = data::split_rows(100, 0.25, 7);
    assert_eq!(a.len(), 25);
    assert_eq!(a, data::split_rows(100, 0.25, 7));
    assert_ne!(a, data::split_rows(100, 0.25, 8));
    let p = data::permutation(50, 3, 1, 2);
    let mut sorted = p.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_ne!(p, data::permutation(50, 3, 1, 3), "each epoch has its own order");
}

#[test]
fn npy_and_safetensors_lies_are_rejected() {
    rejects(npy::parse(b""), "bad magic");
    let huge = b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'shape': (99999999999, 99999999999, 9999), }\n";
    assert!(npy::parse(huge).is_err());
    // A safetensors header longer than the file, and offsets past the end.
    let mut b = 1_000_000u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    assert!(safetensors::parse(&b).is_err());
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0; 8]);
    assert!(safetensors::parse(&b).is_err());
    let header = br#"{"w":{"dtype":"F32","shape":[9223372036854775807,2],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0; 8]);
    assert!(safetensors::parse(&b).is_err());
}
