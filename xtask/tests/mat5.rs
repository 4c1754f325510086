//! The MAT-file reader against files written by scipy.io.savemat (an independent writer),
//! shaped like SBD's `cls/*.mat`: struct `GTcls` with `Boundaries` (cell of sparse),
//! `Segmentation` (uint8 HxW) and `CategoriesPresent`. See fixtures/README.md.

mod common;
use common::fixture;

#[test]
fn segmentation_matches_numpy() {
    let expected: serde_json::Value =
        serde_json::from_slice(&fixture("sbd_expected.json")).unwrap();
    for name in ["sbd_compressed", "sbd_plain"] {
        let labels = xtask::mat5::sbd_segmentation(&fixture(&format!("{name}.mat"))).unwrap();
        let e = &expected[name];
        assert_eq!(labels.height as u64, e["height"].as_u64().unwrap());
        assert_eq!(labels.width as u64, e["width"].as_u64().unwrap());
        let want: Vec<u8> = e["row_major"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(labels.data, want, "{name}");
    }
}

#[test]
fn struct_fields_and_cells_are_parsed() {
    use xtask::mat5::{read_variables, Array};
    let vars = read_variables(&fixture("sbd_compressed.mat")).unwrap();
    let (name, gt) = &vars[0];
    assert_eq!(name, "GTcls");
    let Array::Struct { fields, values, .. } = gt else {
        panic!("not a struct: {gt:?}");
    };
    assert_eq!(fields, &["Boundaries", "Segmentation", "CategoriesPresent"]);
    let Array::Cell { dims, items } = &values[0] else {
        panic!("Boundaries is not a cell");
    };
    assert_eq!(dims, &[20, 1]);
    assert!(items
        .iter()
        .all(|a| matches!(a, Array::Sparse { dims } if dims == &[5, 7])));
}

#[test]
fn broken_files_are_errors_not_panics() {
    let good = fixture("sbd_compressed.mat");
    for cut in [0, 10, 127, 128, 140, good.len() - 5] {
        assert!(
            xtask::mat5::sbd_segmentation(&good[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut flipped = good.clone();
    for b in flipped.iter_mut().skip(136) {
        *b ^= 0x5a;
    }
    assert!(xtask::mat5::sbd_segmentation(&flipped).is_err());
    let plain = fixture("sbd_plain.mat");
    // Corrupt the dimensions of the first array: must be refused, not panic.
    let mut bad = plain.clone();
    bad[0xa0] = 0xff;
    bad[0xa3] = 0x7f;
    let _ = xtask::mat5::sbd_segmentation(&bad);
}
