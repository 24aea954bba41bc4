//! Image decoding and preprocessing shared by the image datasets.

/// A grayscale image with values in `[0, 1]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Gray {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height × width` values in `[0, 1]`.
    pub pixels: Vec<f32>,
}

/// An RGB image with values in `[0, 1]`, row-major, channels interleaved.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height × width × 3` values in `[0, 1]`.
    pub pixels: Vec<f32>,
}

impl Rgb {
    /// Luminance (ITU-R BT.601 weights).
    pub fn to_gray(&self) -> Gray {
        Gray {
            width: self.width,
            height: self.height,
            pixels: self
                .pixels
                .chunks_exact(3)
                .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
                .collect(),
        }
    }

    /// One channel as a grayscale image.
    pub fn channel(&self, c: usize) -> Gray {
        Gray {
            width: self.width,
            height: self.height,
            pixels: self.pixels.iter().skip(c).step_by(3).copied().collect(),
        }
    }
}

/// Decode a PNG (any bit depth and colour type) or a JPEG to RGB in `[0, 1]`.
pub fn decode(bytes: &[u8]) -> Result<Rgb, String> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        decode_png(bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes)
    } else {
        Err("neither a PNG nor a JPEG".into())
    }
}

fn decode_png(bytes: &[u8]) -> Result<Rgb, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (w, h) = (info.width as usize, info.height as usize);
    let buf = &buf[..info.buffer_size()];
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("indexed PNG was not expanded".into()),
    };
    if buf.len() != w * h * channels {
        return Err(format!("{} bytes for {w}x{h}x{channels}", buf.len()));
    }
    let mut pixels = Vec::with_capacity(w * h * 3);
    for px in buf.chunks_exact(channels) {
        let v = |i: usize| px[i] as f32 / 255.0;
        match channels {
            1 | 2 => pixels.extend([v(0); 3]),
            _ => pixels.extend([v(0), v(1), v(2)]),
        }
    }
    Ok(Rgb {
        width: w,
        height: h,
        pixels,
    })
}

fn decode_jpeg(bytes: &[u8]) -> Result<Rgb, String> {
    let mut d = jpeg_decoder::Decoder::new(std::io::Cursor::new(bytes));
    let data = d.decode().map_err(|e| e.to_string())?;
    let info = d.info().ok_or("no JPEG header")?;
    let (w, h) = (info.width as usize, info.height as usize);
    let pixels: Vec<f32> = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => data.iter().flat_map(|&v| [v as f32 / 255.0; 3]).collect(),
        jpeg_decoder::PixelFormat::RGB24 => data.iter().map(|&v| v as f32 / 255.0).collect(),
        other => return Err(format!("unsupported JPEG pixel format {other:?}")),
    };
    if pixels.len() != w * h * 3 {
        return Err("JPEG data does not match its header".into());
    }
    Ok(Rgb {
        width: w,
        height: h,
        pixels,
    })
}

/// Resize by area averaging (each output pixel is the mean of the input area it covers, with
/// fractional overlaps weighted) — the anti-aliased downsampling used for Omniglot.
pub fn resize_area(src: &Gray, out_w: usize, out_h: usize) -> Gray {
    let sx = src.width as f64 / out_w as f64;
    let sy = src.height as f64 / out_h as f64;
    let weights = |n_out: usize, scale: f64, n_in: usize| -> Vec<Vec<(usize, f64)>> {
        (0..n_out)
            .map(|o| {
                let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
                let mut w = Vec::new();
                let mut i = a.floor() as usize;
                while (i as f64) < b && i < n_in {
                    let overlap = (b.min(i as f64 + 1.0) - a.max(i as f64)).max(0.0);
                    if overlap > 0.0 {
                        w.push((i, overlap / scale));
                    }
                    i += 1;
                }
                w
            })
            .collect()
    };
    let wx = weights(out_w, sx, src.width);
    let wy = weights(out_h, sy, src.height);
    let mut pixels = vec![0.0f32; out_w * out_h];
    for (oy, ry) in wy.iter().enumerate() {
        for (ox, rx) in wx.iter().enumerate() {
            let mut acc = 0.0f64;
            for &(iy, wyv) in ry {
                for &(ix, wxv) in rx {
                    acc += wyv * wxv * src.pixels[iy * src.width + ix] as f64;
                }
            }
            pixels[oy * out_w + ox] = acc as f32;
        }
    }
    Gray {
        width: out_w,
        height: out_h,
        pixels,
    }
}

/// Rotate a square `size × size` image by `k · 90°` counter-clockwise into `out`.
pub fn rotate90_into(src: &[f32], size: usize, k: usize, out: &mut Vec<f32>) {
    let k = k % 4;
    for r in 0..size {
        for c in 0..size {
            // out[r][c] = src[f(r, c)]
            let (sr, sc) = match k {
                0 => (r, c),
                1 => (c, size - 1 - r),
                2 => (size - 1 - r, size - 1 - c),
                _ => (size - 1 - c, r),
            };
            out.push(src[sr * size + sc]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_resize_preserves_mean_and_constant_images() {
        let src = Gray {
            width: 105,
            height: 105,
            pixels: (0..105 * 105)
                .map(|i| ((i * 37) % 11) as f32 / 10.0)
                .collect(),
        };
        let out = resize_area(&src, 28, 28);
        let m_in: f32 = src.pixels.iter().sum::<f32>() / src.pixels.len() as f32;
        let m_out: f32 = out.pixels.iter().sum::<f32>() / out.pixels.len() as f32;
        assert!((m_in - m_out).abs() < 1e-4);
        let ones = Gray {
            width: 10,
            height: 10,
            pixels: vec![1.0; 100],
        };
        assert!(resize_area(&ones, 3, 3)
            .pixels
            .iter()
            .all(|v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn four_rotations_are_identity_and_one_is_not() {
        let img: Vec<f32> = (0..9).map(|i| i as f32).collect();
        let mut r1 = Vec::new();
        rotate90_into(&img, 3, 1, &mut r1);
        // counter-clockwise: top row becomes the right column read upwards
        assert_eq!(r1, vec![2.0, 5.0, 8.0, 1.0, 4.0, 7.0, 0.0, 3.0, 6.0]);
        let mut cur = img.clone();
        for _ in 0..4 {
            let mut next = Vec::new();
            rotate90_into(&cur, 3, 1, &mut next);
            cur = next;
        }
        assert_eq!(cur, img);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"<html>404</html>").is_err());
        assert!(decode(&[0x89, b'P', b'N', b'G', 0, 0]).is_err());
    }
}
