//! Triton's classification extension: `"parameters": {"classification": N}` on a requested
//! output answers, for each row of that output, its top N classes as BYTES
//! `"value:index[:label]"` (value printed with six decimals, as Triton prints it), highest
//! first, ties by the lower index.

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorData};

/// The top `n` classes of each row of `t` (the last dimension holds the classes; a vector is
/// one row). Labels, when given, name the classes by index.
pub fn classify(t: &Tensor, n: usize, labels: Option<&[String]>) -> Result<Tensor> {
    let values = match &t.data {
        TensorData::Bytes(_) | TensorData::Bool(_) => None,
        data => data.to_f64_vec(),
    }
    .ok_or_else(|| {
        Error::bad_request(format!(
            "output `{}` is {}: classification needs numbers (class scores)",
            t.name,
            t.datatype()
        ))
    })?;
    let classes = *t.shape.last().unwrap_or(&1);
    if classes == 0 {
        return Err(Error::bad_request(format!(
            "output `{}` has shape {:?}: no classes to classify",
            t.name, t.shape
        )));
    }
    let k = n.min(classes);
    let mut out = Vec::with_capacity(values.len() / classes * k);
    let mut order: Vec<usize> = Vec::with_capacity(classes);
    for row in values.chunks(classes) {
        order.clear();
        order.extend(0..classes);
        // NaN sorts last; equal scores keep the lower index first.
        order.sort_by(|&a, &b| {
            row[b]
                .partial_cmp(&row[a])
                .unwrap_or_else(|| row[a].is_nan().cmp(&row[b].is_nan()))
        });
        for &i in &order[..k] {
            let mut s = format!("{:.6}:{i}", row[i]);
            if let Some(label) = labels.and_then(|l| l.get(i)) {
                s.push(':');
                s.push_str(label);
            }
            out.push(s.into_bytes());
        }
    }
    let mut shape = t.shape.clone();
    match shape.last_mut() {
        Some(last) => *last = k,
        None => shape.push(k),
    }
    Tensor::new(t.name.clone(), shape, TensorData::Bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes_per_row_with_and_without_labels() {
        let t = Tensor::new(
            "p",
            vec![2, 3],
            TensorData::Fp32(vec![0.1, 0.7, 0.2, 0.5, 0.5, 0.0]),
        )
        .unwrap();
        let labels = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let c = classify(&t, 2, Some(&labels)).unwrap();
        assert_eq!(c.shape, vec![2, 2]);
        let strings: Vec<String> = match c.data {
            TensorData::Bytes(v) => v
                .into_iter()
                .map(|b| String::from_utf8(b).unwrap())
                .collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            strings,
            [
                "0.700000:1:b",
                "0.200000:2:c",
                "0.500000:0:a",
                "0.500000:1:b"
            ]
        );
        // More than there are: all of them; a vector is one row.
        let v = Tensor::new("p", vec![2], TensorData::Int64(vec![3, 9])).unwrap();
        let c = classify(&v, 5, None).unwrap();
        assert_eq!(c.shape, vec![2]);
        assert_eq!(
            c.data,
            TensorData::Bytes(vec![b"9.000000:1".to_vec(), b"3.000000:0".to_vec()])
        );
        let s = Tensor::new("s", vec![1], TensorData::Bytes(vec![b"x".to_vec()])).unwrap();
        assert!(
            classify(&s, 1, None)
                .unwrap_err()
                .message
                .contains("classification needs numbers")
        );
    }
}
