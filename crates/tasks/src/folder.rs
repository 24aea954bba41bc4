//! Image-folder datasets: one sub-folder per class holding PNG or JPEG images (the layout of
//! mini-ImageNet exports and most custom few-shot datasets).

use crate::classes::{ClassDataset, InMemoryClasses};
use crate::error::{io, Error, Result};
use crate::image::{decode, resize_area};
use std::path::Path;

/// How images are preprocessed.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `size` | 84 | output height = width (area resize) |
/// | `grayscale` | false | one luminance channel instead of RGB |
/// | `invert` | false | `1 − value` (e.g. dark ink on white paper → ink = 1) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFolderConfig {
    /// Output height = width.
    pub size: usize,
    /// Luminance only.
    pub grayscale: bool,
    /// Invert values.
    pub invert: bool,
}

impl ImageFolderConfig {
    /// The defaults of the table above (84×84 RGB), burn-style: change a field with the
    /// `with_*` methods.
    pub fn new() -> Self {
        Self {
            size: 84,
            grayscale: false,
            invert: false,
        }
    }

    /// Output height = width.
    pub fn with_size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// Luminance only.
    pub fn with_grayscale(mut self, grayscale: bool) -> Self {
        self.grayscale = grayscale;
        self
    }

    /// Invert values.
    pub fn with_invert(mut self, invert: bool) -> Self {
        self.invert = invert;
        self
    }
}

impl Default for ImageFolderConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// A loaded image folder: the classes (sorted by folder name) and their names.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// The images, `[C, size, size]` each, values in `[0, 1]`.
    pub classes: InMemoryClasses,
    /// Class folder names, in class order.
    pub names: Vec<String>,
}

impl ImageFolder {
    /// The classes `classes` (indices into [`names`](Self::names), in that order), e.g. a
    /// meta-train / validation / test split of the class folders. Each class keeps all of its
    /// images (classes may differ in size).
    ///
    /// Errors: an empty selection or an unknown class.
    pub fn subset(&self, classes: &[usize]) -> Result<Self> {
        if classes.is_empty() {
            return Err(Error::WrongCounts {
                path: std::path::PathBuf::new(),
                reason: "a split of the class folders holds no class".into(),
            });
        }
        let mut blocks = Vec::with_capacity(classes.len());
        let mut names = Vec::with_capacity(classes.len());
        for &c in classes {
            let name = self.names.get(c).ok_or_else(|| {
                metalearn_core::Error::Unsatisfiable(format!(
                    "class {c} of {} class folders",
                    self.names.len()
                ))
            })?;
            let mut block = Vec::new();
            for i in 0..self.classes.class_len(c) {
                self.classes.write_example(c, i, &mut block)?;
            }
            blocks.push(block);
            names.push(name.clone());
        }
        Ok(Self {
            classes: InMemoryClasses::new(self.classes.example_shape().to_vec(), blocks)?,
            names,
        })
    }
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// Every PNG/JPEG file under `dir`, at any depth, sorted (as torchvision's `ImageFolder` does:
/// a class folder may sort its images into subfolders).
pub fn image_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    collect_images(dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// One image file decoded and preprocessed as `config` says: `[channels, size, size]` values in
/// `[0, 1]`. An unreadable or undecodable file is a typed error naming it.
pub fn load_image(path: &Path, config: ImageFolderConfig) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let img = decode(&bytes).map_err(|reason| Error::BadImage {
        path: path.parent().unwrap_or(path).to_path_buf(),
        entry: path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into()),
        reason,
    })?;
    let planes = if config.grayscale {
        vec![img.to_gray()]
    } else {
        (0..3).map(|c| img.channel(c)).collect()
    };
    let mut out = Vec::with_capacity(planes.len() * config.size * config.size);
    for p in planes {
        let r = resize_area(&p, config.size, config.size);
        out.extend(
            r.pixels
                .iter()
                .map(|&v| if config.invert { 1.0 - v } else { v }),
        );
    }
    Ok(out)
}

fn collect_images(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if path.is_file() && is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Load every class folder under `root` (images at any depth inside a class folder belong to
/// it). An empty class folder, an unreadable or undecodable
/// image, or a root without class folders is a typed error.
pub fn load_image_folder(root: &Path, config: ImageFolderConfig) -> Result<ImageFolder> {
    if config.size == 0 {
        return Err(metalearn_core::Error::config("size", "must be ≥ 1").into());
    }
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .map_err(io(root))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(Error::WrongCounts {
            path: root.into(),
            reason: "no class folders".into(),
        });
    }
    let channels = if config.grayscale { 1 } else { 3 };
    let (mut blocks, mut names) = (Vec::new(), Vec::new());
    for dir in dirs {
        let files = image_files(&dir)?;
        if files.is_empty() {
            return Err(Error::WrongCounts {
                path: dir,
                reason: "class folder holds no PNG or JPEG image".into(),
            });
        }
        let mut block = Vec::with_capacity(files.len() * channels * config.size * config.size);
        for f in &files {
            block.extend(load_image(f, config)?);
        }
        names.push(
            dir.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into()),
        );
        blocks.push(block);
    }
    Ok(ImageFolder {
        classes: InMemoryClasses::new(vec![channels, config.size, config.size], blocks)?,
        names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClassDataset, NWayKShot, NWayKShotConfig};
    use metalearn_core::TaskDistribution;
    use std::sync::Arc;

    fn png_rgb(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e = png::Encoder::new(&mut out, w, h);
            e.set_color(png::ColorType::Rgb);
            e.set_depth(png::BitDepth::Eight);
            let mut wr = e.write_header().unwrap();
            let data: Vec<u8> = (0..w * h).flat_map(|_| rgb).collect();
            wr.write_image_data(&data).unwrap();
        }
        out
    }

    #[test]
    fn loads_classes_and_rejects_bad_folders() {
        let root = std::env::temp_dir().join(format!("metalearn-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (c, color) in [("cat", [255, 0, 0]), ("dog", [0, 0, 255])] {
            std::fs::create_dir_all(root.join(c)).unwrap();
            for i in 0..3 {
                std::fs::write(root.join(c).join(format!("{i}.png")), png_rgb(10, 8, color))
                    .unwrap();
            }
            std::fs::write(root.join(c).join("notes.txt"), b"ignored").unwrap();
        }
        let cfg = ImageFolderConfig {
            size: 4,
            ..Default::default()
        };
        // Images one level down inside a class folder belong to that class.
        std::fs::create_dir_all(root.join("dog").join("more")).unwrap();
        std::fs::write(
            root.join("dog").join("more").join("9.png"),
            png_rgb(10, 8, [0, 0, 255]),
        )
        .unwrap();
        let f = load_image_folder(&root, cfg).unwrap();
        assert_eq!(f.names, vec!["cat", "dog"]);
        assert_eq!(f.classes.num_classes(), 2);
        assert_eq!(f.classes.class_len(0), 3);
        assert_eq!(f.classes.class_len(1), 4);
        let mut px = Vec::new();
        f.classes.write_example(0, 0, &mut px).unwrap();
        assert_eq!(px.len(), 3 * 16);
        assert!(px[..16].iter().all(|v| (v - 1.0).abs() < 1e-6)); // red plane
        assert!(px[16..].iter().all(|v| v.abs() < 1e-6));
        // A split keeps whole classes, in the order asked for, with their names.
        let dog = f.subset(&[1]).unwrap();
        assert_eq!(dog.names, vec!["dog"]);
        assert_eq!(dog.classes.class_len(0), 4);
        let mut dog_px = Vec::new();
        dog.classes.write_example(0, 3, &mut dog_px).unwrap();
        let mut orig_px = Vec::new();
        f.classes.write_example(1, 3, &mut orig_px).unwrap();
        assert_eq!(dog_px, orig_px);
        assert!(f.subset(&[]).is_err());
        assert!(f.subset(&[2]).is_err());
        let s = NWayKShot::new(Arc::new(f.classes), NWayKShotConfig::new(2, 1, 2)).unwrap();
        assert_eq!(s.sample(0).unwrap().support.input_shape, vec![2, 3, 4, 4]);

        std::fs::write(root.join("dog").join("3.png"), b"<html>").unwrap();
        assert!(matches!(
            load_image_folder(&root, cfg),
            Err(Error::BadImage { .. })
        ));
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::remove_file(root.join("dog").join("3.png")).unwrap();
        assert!(matches!(
            load_image_folder(&root, cfg),
            Err(Error::WrongCounts { .. })
        ));
    }
}
