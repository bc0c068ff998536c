//! The `image` transform op: BYTES tensors holding PNG or JPEG files → a normalized FP32 NCHW
//! batch, the input of most vision models.
//!
//! ```yaml
//! decode:
//!   kind: transform
//!   op: image
//!   args: {resize: [72, 72], crop: [64, 64], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
//! ```
//!
//! Each element of the BYTES tensor is one encoded image (any size). Each is decoded (format
//! from its contents), converted to RGB (or grayscale), resized to `resize` with a bilinear
//! filter, center-cropped to `crop` when given, scaled to [0, 1] and normalized per channel as
//! `(x - mean) / std`. Decoding is bounded: images larger than 8192×8192 or needing more than
//! 256 MiB are refused (HTTP 422), so a small compressed file cannot exhaust memory.

use std::io::Cursor;

use image::imageops::{self, FilterType};
use image::{ImageReader, Limits};
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{
    DataType, Error, Event, Result, Signature, Tensor, TensorData, TensorMeta,
};

use crate::transform::Op;

/// The `image` op's args.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageArgs {
    /// `[height, width]` every image is resized to.
    pub resize: Vec<u32>,
    /// `[height, width]` cropped from the center after resizing (default: no crop).
    #[serde(default)]
    pub crop: Option<Vec<u32>>,
    /// Per-channel means subtracted after scaling to [0, 1] (default 0).
    #[serde(default)]
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviations divided by (default 1).
    #[serde(default)]
    pub std: Option<Vec<f64>>,
    /// One gray channel instead of three RGB ones.
    #[serde(default)]
    pub grayscale: bool,
    /// The BYTES tensor of encoded images (default `image`).
    #[serde(default)]
    pub tensor: Option<String>,
    /// The FP32 `[N, C, H, W]` tensor written (default `input`).
    #[serde(default)]
    pub output: Option<String>,
}

const MAX_SIDE: u32 = 8192;
const MAX_ALLOC: u64 = 256 * 1024 * 1024;

impl ImageArgs {
    fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("image")
    }

    fn output(&self) -> &str {
        self.output.as_deref().unwrap_or("input")
    }

    fn channels(&self) -> usize {
        if self.grayscale { 1 } else { 3 }
    }

    /// `(height, width)` of the output.
    fn out_size(&self) -> (u32, u32) {
        match &self.crop {
            Some(c) => (c[0], c[1]),
            None => (self.resize[0], self.resize[1]),
        }
    }

    fn per_channel(&self, values: &Option<Vec<f64>>, default: f64) -> Vec<f64> {
        match values {
            Some(v) if v.len() == 1 => vec![v[0]; self.channels()],
            Some(v) => v.clone(),
            None => vec![default; self.channels()],
        }
    }

    /// Decodes, resizes, crops and normalizes one image into `out` (C×H×W, channel-major).
    fn convert(&self, bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        limits.max_alloc = Some(MAX_ALLOC);
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::unprocessable(e.to_string()))?;
        if reader.format().is_none() {
            return Err(Error::unprocessable("not a PNG or JPEG image"));
        }
        reader.limits(limits);
        let img = reader
            .decode()
            .map_err(|e| Error::unprocessable(e.to_string()))?;
        let (rh, rw) = (self.resize[0], self.resize[1]);
        let (oh, ow) = self.out_size();
        let (x, y) = ((rw - ow) / 2, (rh - oh) / 2);
        let mean = self.per_channel(&self.mean, 0.0);
        let std = self.per_channel(&self.std, 1.0);
        let plane = (oh * ow) as usize;
        let start = out.len();
        out.resize(start + plane * self.channels(), 0.0);
        let pixels: Vec<(u32, u32, Vec<u8>)> = if self.grayscale {
            let resized = imageops::resize(&img.to_luma8(), rw, rh, FilterType::Triangle);
            let cropped = imageops::crop_imm(&resized, x, y, ow, oh).to_image();
            cropped
                .enumerate_pixels()
                .map(|(px, py, p)| (px, py, p.0.to_vec()))
                .collect()
        } else {
            let resized = imageops::resize(&img.to_rgb8(), rw, rh, FilterType::Triangle);
            let cropped = imageops::crop_imm(&resized, x, y, ow, oh).to_image();
            cropped
                .enumerate_pixels()
                .map(|(px, py, p)| (px, py, p.0.to_vec()))
                .collect()
        };
        for (px, py, channels) in pixels {
            let at = (py * ow + px) as usize;
            for (c, v) in channels.into_iter().enumerate() {
                out[start + c * plane + at] = ((v as f64 / 255.0 - mean[c]) / std[c]) as f32;
            }
        }
        Ok(())
    }
}

impl Op for ImageArgs {
    fn check(&self) -> std::result::Result<(), String> {
        let pair = |v: &[u32], what: &str| -> std::result::Result<(), String> {
            if v.len() != 2 || v.contains(&0) || v.iter().any(|&d| d > MAX_SIDE) {
                return Err(format!(
                    "`{what}` must be [height, width], each 1..={MAX_SIDE}"
                ));
            }
            Ok(())
        };
        pair(&self.resize, "resize")?;
        if let Some(c) = &self.crop {
            pair(c, "crop")?;
            if c[0] > self.resize[0] || c[1] > self.resize[1] {
                return Err(format!(
                    "`crop` {c:?} is larger than `resize` {:?}",
                    self.resize
                ));
            }
        }
        for (what, v) in [("mean", &self.mean), ("std", &self.std)] {
            if let Some(v) = v
                && v.len() != 1
                && v.len() != self.channels()
            {
                return Err(format!("`{what}` needs 1 or {} values", self.channels()));
            }
        }
        if self
            .std
            .as_ref()
            .is_some_and(|s| s.iter().any(|x| *x <= 0.0))
        {
            return Err("every `std` must be a positive number".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let t = event.require(self.input())?;
        let TensorData::Bytes(images) = &t.data else {
            return Err(Error::unprocessable(format!(
                "image needs a BYTES tensor of encoded images but `{}` is {}",
                t.name,
                t.datatype()
            )));
        };
        let (oh, ow) = self.out_size();
        let mut out = Vec::with_capacity(images.len() * self.channels() * (oh * ow) as usize);
        for (i, bytes) in images.iter().enumerate() {
            self.convert(bytes, &mut out)
                .map_err(|e| Error::unprocessable(format!("image {i} of `{}`: {e}", t.name)))?;
        }
        let shape = vec![images.len(), self.channels(), oh as usize, ow as usize];
        event.put(Tensor::new(self.output(), shape, TensorData::Fp32(out))?);
        Ok(())
    }

    /// The encoded images, `[N]` BYTES, and whatever else the steps after it take.
    fn takes(&self, after: Option<Vec<TensorMeta>>) -> Option<Vec<TensorMeta>> {
        let mut need: Vec<TensorMeta> = after
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.name != self.output() && t.name != self.input())
            .collect();
        need.insert(0, TensorMeta::new(self.input(), DataType::Bytes, vec![-1]));
        Some(need)
    }

    fn infer(&self, sig: &mut Signature) -> std::result::Result<(), String> {
        match sig.get(self.input()) {
            Some(t) if t.datatype != DataType::Bytes => {
                return Err(format!(
                    "image needs a BYTES tensor of encoded images but `{}` is {}",
                    t.name, t.datatype
                ));
            }
            Some(_) => {}
            None if sig.open => {}
            None => {
                return Err(format!(
                    "no tensor `{}` reaches this step; it gets: {}",
                    self.input(),
                    sig.describe()
                ));
            }
        }
        let (oh, ow) = self.out_size();
        sig.put(TensorMeta::new(
            self.output(),
            DataType::Fp32,
            vec![-1, self.channels() as i64, oh as i64, ow as i64],
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use image::{ImageFormat, Rgb, RgbImage};

    use super::*;

    /// A 4×2 image: left half red, right half blue.
    fn encoded(format: ImageFormat) -> Vec<u8> {
        let img = RgbImage::from_fn(4, 2, |x, _| {
            if x < 2 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn args(yaml: &str) -> ImageArgs {
        let node = marked_yaml::parse_yaml(0, yaml).unwrap();
        let a: ImageArgs = marked_yaml::from_node(&node).unwrap();
        a.check().unwrap();
        a
    }

    fn run(a: &ImageArgs, images: Vec<Vec<u8>>) -> Result<Event> {
        let n = images.len();
        let mut ev = Event::new(
            "i",
            vec![Tensor::new("image", vec![n], TensorData::Bytes(images)).unwrap()],
        );
        a.apply(&mut ev).map(|_| ev)
    }

    #[test]
    fn png_to_normalized_nchw() {
        let a = args("{resize: [2, 4], mean: [0.5], std: [0.5]}");
        let ev = run(
            &a,
            vec![encoded(ImageFormat::Png), encoded(ImageFormat::Png)],
        )
        .unwrap();
        let t = ev.get("input").unwrap();
        assert_eq!(t.shape, vec![2, 3, 2, 4]);
        let TensorData::Fp32(v) = &t.data else {
            panic!()
        };
        // Red channel of image 0, row 0: 1 1 -1 -1 after (x/255 - 0.5)/0.5.
        assert_eq!(&v[0..4], &[1.0, 1.0, -1.0, -1.0]);
        // Blue channel: the opposite.
        assert_eq!(&v[16..20], &[-1.0, -1.0, 1.0, 1.0]);
    }

    #[test]
    fn jpeg_resize_and_center_crop() {
        let a = args("{resize: [4, 8], crop: [2, 2], grayscale: true}");
        let ev = run(&a, vec![encoded(ImageFormat::Jpeg)]).unwrap();
        let t = ev.get("input").unwrap();
        assert_eq!(t.shape, vec![1, 1, 2, 2]);
    }

    #[test]
    fn garbage_is_a_clear_422() {
        let a = args("{resize: [2, 2]}");
        let err = run(
            &a,
            vec![encoded(ImageFormat::Png), b"not an image".to_vec()],
        )
        .unwrap_err();
        assert_eq!(err.kind, servegraph_engine::ErrorKind::Unprocessable);
        assert_eq!(err.message, "image 1 of `image`: not a PNG or JPEG image");
    }

    #[test]
    fn bad_args_are_refused() {
        for (yaml, want) in [
            ("{resize: [2]}", "`resize` must be [height, width]"),
            ("{resize: [2, 2], crop: [3, 3]}", "is larger than `resize`"),
            (
                "{resize: [2, 2], mean: [1, 2]}",
                "`mean` needs 1 or 3 values",
            ),
            (
                "{resize: [2, 2], std: [0]}",
                "every `std` must be a positive number",
            ),
        ] {
            let node = marked_yaml::parse_yaml(0, yaml).unwrap();
            let a: ImageArgs = marked_yaml::from_node(&node).unwrap();
            let err = a.check().unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}
