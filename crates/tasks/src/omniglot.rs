//! Omniglot (Lake et al. 2015): 1623 handwritten characters from 50 alphabets, 20 drawers each.
//!
//! Read straight from the official zips (`images_background.zip`, `images_evaluation.zip`;
//! `<split>/<Alphabet>/characterNN/<id>_<drawer>.png`, 105×105 1-bit PNGs). Preprocessing as in
//! the literature: invert so that ink = 1, resize to 28×28 (configurable) by area averaging, and
//! (optionally) augment classes with 90° rotations — each rotation of a character is a new class
//! (Santoro et al. 2016; Finn et al. 2017).
//!
//! # Data directory
//! An explicit path, else `$METALEARN_DATA`, else `<user cache dir>/metalearn`; the zips live in
//! `<data dir>/omniglot/`. Each zip is checked: an HTML page, a truncated file or a zip with the
//! wrong number of characters or drawers is a typed [`Error`], never a silently smaller dataset.
//!
//! # Cache
//! The preprocessed images are cached in a compact binary file (`omniglot-<size>.bin`, u8
//! pixels) in `$METALEARN_CACHE`, else `<data dir>/omniglot/.cache` when writable, else the user
//! cache dir. The cache records each source zip's length and content sha256 and a sha256 of
//! its own payload: a stale or corrupt cache is detected and rebuilt. Later loads take well under
//! a second.
//!
//! # Splits
//! - [`Omniglot::vinyals_split`]: all 1623 characters in canonical order (background alphabets,
//!   then evaluation alphabets, each sorted by name, characters by number), shuffled with
//!   ChaCha8 seed 1; the first 1100 are meta-training, the next 100 validation (together the
//!   1200 of Vinyals et al. 2016), the remaining 423 meta-test.
//! - [`Omniglot::lake_split`]: background (964) vs. evaluation (659), as in Lake et al.

use crate::classes::ClassDataset;
use crate::error::{io, Error, Result};
use crate::image::{decode, resize_area, rotate90_into};
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One of the official archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipSpec {
    /// File name inside the Omniglot folder.
    pub file: String,
    /// Top-level folder inside the zip.
    pub top: String,
    /// Characters it must hold.
    pub characters: usize,
    /// Images (drawers) per character.
    pub drawers: usize,
    /// Published sha256 (hex), checked after a download.
    pub sha256: Option<String>,
}

impl ZipSpec {
    /// `images_background.zip`: 30 alphabets, 964 characters.
    pub fn background() -> Self {
        Self {
            file: "images_background.zip".into(),
            top: "images_background".into(),
            characters: 964,
            drawers: 20,
            sha256: Some("01e39f1f3b2084b12023a1dce9d5b20a0986abbfae59298c72868e37758d0b7c".into()),
        }
    }

    /// `images_evaluation.zip`: 20 alphabets, 659 characters.
    pub fn evaluation() -> Self {
        Self {
            file: "images_evaluation.zip".into(),
            top: "images_evaluation".into(),
            characters: 659,
            drawers: 20,
            sha256: Some("2b86c17617abe2970f9b106a49c2b4444f6ffc027a4a17a44196e1928409af31".into()),
        }
    }

    /// Where the official zip can be downloaded.
    pub fn url(&self) -> String {
        format!("{OFFICIAL_SOURCE}/{}", self.file)
    }
}

/// Resolve the data directory: `explicit`, else `$METALEARN_DATA`, else the user cache dir.
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("METALEARN_DATA") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("metalearn")
}

/// One character (a class before rotation augmentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Character {
    /// `images_background` or `images_evaluation`.
    pub split: String,
    /// Alphabet folder name.
    pub alphabet: String,
    /// Character folder name (`characterNN`).
    pub name: String,
}

/// How Omniglot's characters are split into meta-train / meta-validation / meta-test
/// ([`Omniglot::split`]); in files spelled `vinyals` and `lake`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OmniglotSplit {
    /// Vinyals et al. (2016): 1,200 characters for training (the last 100 of them for
    /// validation, as in learn2learn), the remaining 423 for testing; rotations add classes.
    Vinyals,
    /// Lake et al. (2015): background alphabets for training (their last 100 characters held
    /// out for validation), evaluation alphabets for testing.
    Lake,
}

/// Loader configuration.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `image_size` | 28 | output height = width (≥ 1) |
/// | `zips` | background + evaluation | archives to read |
/// | `cache` | true | read/write the preprocessed cache |
/// | `cache_dir` | None | where the cache lives (None: `$METALEARN_CACHE`, else next to the data when writable, else the user cache dir) |
#[derive(Debug, Clone)]
pub struct OmniglotConfig {
    /// Output height = width.
    pub image_size: usize,
    /// Archives to read, in order.
    pub zips: Vec<ZipSpec>,
    /// Use the preprocessed cache.
    pub cache: bool,
    /// Explicit cache folder.
    pub cache_dir: Option<PathBuf>,
}

impl OmniglotConfig {
    /// The defaults of the table above (28×28, both zips, cached), burn-style: change a field
    /// with the `with_*` methods.
    pub fn new() -> Self {
        Self {
            image_size: 28,
            zips: vec![ZipSpec::background(), ZipSpec::evaluation()],
            cache: true,
            cache_dir: None,
        }
    }

    /// Output height = width.
    pub fn with_image_size(mut self, image_size: usize) -> Self {
        self.image_size = image_size;
        self
    }

    /// Archives to read, in order.
    pub fn with_zips(mut self, zips: Vec<ZipSpec>) -> Self {
        self.zips = zips;
        self
    }

    /// Read and write the preprocessed cache.
    pub fn with_cache(mut self, cache: bool) -> Self {
        self.cache = cache;
        self
    }

    /// Keep the cache in `dir`.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }
}

impl Default for OmniglotConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The preprocessed Omniglot images (ink = 1), `drawers` per character, u8-quantised.
#[derive(Debug, Clone)]
pub struct Omniglot {
    size: usize,
    drawers: usize,
    characters: Vec<Character>,
    pixels: Vec<u8>,
}

const MAGIC: &[u8; 8] = b"MLOMNI01";

impl Omniglot {
    /// Load from `<data_dir(explicit)>/omniglot/`.
    pub fn load(explicit: Option<&Path>, config: &OmniglotConfig) -> Result<Self> {
        let dir = data_dir(explicit).join("omniglot");
        Self::load_from(&dir, config)
    }

    /// Load from a folder holding the zips.
    pub fn load_from(dir: &Path, config: &OmniglotConfig) -> Result<Self> {
        if config.image_size == 0 {
            return Err(metalearn_core::Error::config("image_size", "must be ≥ 1").into());
        }
        let mut stamps = Vec::new();
        for spec in &config.zips {
            let path = dir.join(&spec.file);
            let meta = std::fs::metadata(&path).map_err(|_| Error::Missing {
                path: path.clone(),
                hint: format!(
                    "download it from {} (`metalearn_tasks::omniglot::download`, or \
                     `cargo xtask bench --download`), or set METALEARN_DATA to a folder holding \
                     omniglot/",
                    spec.url()
                ),
            })?;
            // Keyed on the content, not size and mtime: a zip damaged in place must not be
            // served from the cache (hashing both official zips takes ~0.1 s).
            let digest = file_sha256(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            stamps.push(format!("{}:{}:{digest}", spec.file, meta.len()));
        }
        let key = format!("size={};{}", config.image_size, stamps.join(";"));
        let cache = config.cache.then(|| match &config.cache_dir {
            Some(d) => Some(d.join(format!("omniglot-{}.bin", config.image_size))),
            None => cache_path(dir, config.image_size),
        });
        if let Some(Some(path)) = &cache {
            if let Ok(Some(o)) = read_cache(path, &key) {
                return Ok(o);
            }
        }
        let mut out = Omniglot {
            size: config.image_size,
            drawers: config.zips.first().map_or(20, |z| z.drawers),
            characters: Vec::new(),
            pixels: Vec::new(),
        };
        for spec in &config.zips {
            if spec.drawers != out.drawers {
                return Err(metalearn_core::Error::config(
                    "zips",
                    "all archives must have the same number of drawers",
                )
                .into());
            }
            read_zip(&dir.join(&spec.file), spec, config.image_size, &mut out)?;
        }
        if let Some(Some(path)) = &cache {
            // A cache that cannot be written only costs time on the next load.
            let _ = write_cache(path, &key, &out);
        }
        Ok(out)
    }

    /// Image height = width.
    pub fn image_size(&self) -> usize {
        self.size
    }

    /// Images per character.
    pub fn drawers(&self) -> usize {
        self.drawers
    }

    /// All characters, in canonical order.
    pub fn characters(&self) -> &[Character] {
        &self.characters
    }

    /// Image `drawer` of character `c`, values in `[0, 1]` (ink = 1).
    pub fn image(&self, c: usize, drawer: usize) -> Option<Vec<f32>> {
        let n = self.size * self.size;
        let start = (c * self.drawers + drawer) * n;
        self.pixels
            .get(start..start + n)
            .map(|p| p.iter().map(|&v| v as f32 / 255.0).collect())
    }

    /// The Vinyals et al. split: (train 1100, validation 100, test 423) character indices.
    pub fn vinyals_split(&self) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        let mut idx: Vec<usize> = (0..self.characters.len()).collect();
        idx.shuffle(&mut metalearn_core::seed::rng(1));
        let n = idx.len();
        let (a, b) = (1100.min(n), 1200.min(n));
        (idx[..a].to_vec(), idx[a..b].to_vec(), idx[b..].to_vec())
    }

    /// Lake et al.'s split: (background, evaluation) character indices.
    pub fn lake_split(&self) -> (Vec<usize>, Vec<usize>) {
        (0..self.characters.len()).partition(|&c| self.characters[c].split == "images_background")
    }

    /// The (meta-train, meta-validation, meta-test) classes of `split`, with 90° rotations as
    /// extra classes when `rotations` (as the few-shot papers do for training).
    pub fn split(
        self: &Arc<Self>,
        split: OmniglotSplit,
        rotations: bool,
    ) -> [Arc<OmniglotClasses>; 3] {
        let (train, val, test) = match split {
            OmniglotSplit::Vinyals => self.vinyals_split(),
            OmniglotSplit::Lake => {
                // Background alphabets train; their last 100 characters are held out for
                // validation (as in the Vinyals split); evaluation alphabets test.
                let (mut background, evaluation) = self.lake_split();
                let val = background.split_off(background.len().saturating_sub(100));
                (background, val, evaluation)
            }
        };
        [train, val, test].map(|c| Arc::new(self.classes(c, rotations)))
    }

    /// Character indices of the given alphabets (e.g. for held-out-alphabet evaluation).
    pub fn by_alphabet(&self, alphabets: &[&str]) -> Vec<usize> {
        (0..self.characters.len())
            .filter(|&c| alphabets.contains(&self.characters[c].alphabet.as_str()))
            .collect()
    }

    /// A class dataset over `characters`, with 90° rotations as extra classes when `rotations`.
    pub fn classes(self: &Arc<Self>, characters: Vec<usize>, rotations: bool) -> OmniglotClasses {
        OmniglotClasses {
            data: self.clone(),
            characters,
            rotations: if rotations { 4 } else { 1 },
            shape: vec![1, self.size, self.size],
        }
    }
}

/// A view of Omniglot as classes: character `i` of the view, rotated by `r · 90°`, is class
/// `i · R + r` (`R` = 4 with rotations, 1 without).
#[derive(Debug, Clone)]
pub struct OmniglotClasses {
    data: Arc<Omniglot>,
    characters: Vec<usize>,
    rotations: usize,
    shape: Vec<usize>,
}

impl OmniglotClasses {
    /// The dataset character behind class `class`, and its rotation (multiples of 90°).
    pub fn source(&self, class: usize) -> Option<(usize, usize)> {
        let c = *self.characters.get(class / self.rotations)?;
        Some((c, class % self.rotations))
    }
}

impl ClassDataset for OmniglotClasses {
    fn num_classes(&self) -> usize {
        self.characters.len() * self.rotations
    }
    fn class_len(&self, _class: usize) -> usize {
        self.data.drawers
    }
    fn example_shape(&self) -> &[usize] {
        &self.shape
    }
    fn write_example(
        &self,
        class: usize,
        index: usize,
        out: &mut Vec<f32>,
    ) -> metalearn_core::Result<()> {
        let (c, r) = self
            .source(class)
            .ok_or_else(|| metalearn_core::Error::Unsatisfiable(format!("no class {class}")))?;
        let img = self.data.image(c, index).ok_or_else(|| {
            metalearn_core::Error::Unsatisfiable(format!("class {class} has no image {index}"))
        })?;
        rotate90_into(&img, self.data.size, r, out);
        Ok(())
    }
}

/// sha256 (hex) of a file's content, streamed.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cache_path(dir: &Path, size: usize) -> Option<PathBuf> {
    let name = format!("omniglot-{size}.bin");
    if let Some(p) = std::env::var_os("METALEARN_CACHE") {
        return Some(PathBuf::from(p).join(name));
    }
    let local = dir.join(".cache");
    // Respect a read-only data folder even when running as root (who could write anyway).
    let read_only = std::fs::metadata(dir).is_ok_and(|m| m.permissions().readonly());
    if !read_only && std::fs::create_dir_all(&local).is_ok() {
        let probe = local.join(".write-probe");
        if std::fs::write(&probe, b"").is_ok() {
            let _ = std::fs::remove_file(probe);
            return Some(local.join(name));
        }
    }
    dirs::cache_dir().map(|d| d.join("metalearn").join(name))
}

/// Open `path` as a zip archive; an HTML page, an empty or truncated file is [`Error::NotAZip`]
/// naming what was found.
fn open_zip(path: &Path) -> Result<zip::ZipArchive<std::fs::File>> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut head = [0u8; 512];
    let n = file.read(&mut head).map_err(io(path))?;
    let head = &head[..n];
    if !head.starts_with(b"PK\x03\x04") {
        let text = String::from_utf8_lossy(head).to_ascii_lowercase();
        let reason = if text.contains("<html") || text.contains("<!doctype") {
            "it is an HTML page (a failed or redirected download?)".to_string()
        } else if n == 0 {
            "the file is empty".to_string()
        } else {
            "missing the zip signature".to_string()
        };
        return Err(Error::NotAZip {
            path: path.into(),
            reason,
        });
    }
    let file = std::fs::File::open(path).map_err(io(path))?;
    zip::ZipArchive::new(file).map_err(|e| Error::NotAZip {
        path: path.into(),
        reason: format!("{e} (truncated download?)"),
    })
}

fn read_zip(path: &Path, spec: &ZipSpec, size: usize, out: &mut Omniglot) -> Result<()> {
    let mut archive = open_zip(path)?;
    // (alphabet, character) -> drawer images (sorted by file name)
    let mut chars: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| Error::NotAZip {
            path: path.into(),
            reason: format!("entry {i}: {e}"),
        })?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_string();
        let parts: Vec<&str> = name.split('/').collect();
        if parts.len() != 4 || parts[0] != spec.top || !parts[3].ends_with(".png") {
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| Error::NotAZip {
            path: path.into(),
            reason: format!("cannot read `{name}`: {e} (truncated download?)"),
        })?;
        chars
            .entry((parts[1].to_string(), parts[2].to_string()))
            .or_default()
            .insert(parts[3].to_string(), bytes);
    }
    if chars.len() != spec.characters {
        return Err(Error::WrongCounts {
            path: path.into(),
            reason: format!(
                "expected {} characters under {}/, found {}",
                spec.characters,
                spec.top,
                chars.len()
            ),
        });
    }
    for ((alphabet, name), images) in chars {
        if images.len() != spec.drawers {
            return Err(Error::WrongCounts {
                path: path.into(),
                reason: format!(
                    "{alphabet}/{name} has {} images, expected {}",
                    images.len(),
                    spec.drawers
                ),
            });
        }
        for (file, bytes) in images {
            let img = decode(&bytes).map_err(|reason| Error::BadImage {
                path: path.into(),
                entry: format!("{alphabet}/{name}/{file}"),
                reason,
            })?;
            let mut gray = img.to_gray();
            for v in &mut gray.pixels {
                *v = 1.0 - *v; // ink = 1
            }
            let small = resize_area(&gray, size, size);
            out.pixels.extend(
                small
                    .pixels
                    .iter()
                    .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8),
            );
        }
        out.characters.push(Character {
            split: spec.top.clone(),
            alphabet,
            name,
        });
    }
    Ok(())
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u32).to_le_bytes());
    buf.extend(s.as_bytes());
}

fn write_cache(path: &Path, key: &str, o: &Omniglot) -> std::io::Result<()> {
    let mut payload = Vec::with_capacity(o.pixels.len() + 64 * o.characters.len());
    put_str(&mut payload, key);
    payload.extend((o.size as u32).to_le_bytes());
    payload.extend((o.drawers as u32).to_le_bytes());
    payload.extend((o.characters.len() as u32).to_le_bytes());
    for c in &o.characters {
        put_str(&mut payload, &c.split);
        put_str(&mut payload, &c.alphabet);
        put_str(&mut payload, &c.name);
    }
    payload.extend(&o.pixels);
    let digest = Sha256::digest(&payload);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&digest)?;
        f.write_all(&payload)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// `Ok(None)` for a stale or corrupt cache (then it is rebuilt).
fn read_cache(path: &Path, key: &str) -> std::io::Result<Option<Omniglot>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 40 || &bytes[..8] != MAGIC {
        return Ok(None);
    }
    let payload = &bytes[40..];
    if Sha256::digest(payload).as_slice() != &bytes[8..40] {
        return Ok(None);
    }
    let mut c = Cursor {
        buf: payload,
        pos: 0,
    };
    let parse = |c: &mut Cursor<'_>| -> Option<Omniglot> {
        if c.string()? != key {
            return None;
        }
        let (size, drawers, n) = (c.u32()?, c.u32()?, c.u32()?);
        let mut characters = Vec::with_capacity(n);
        for _ in 0..n {
            characters.push(Character {
                split: c.string()?,
                alphabet: c.string()?,
                name: c.string()?,
            });
        }
        let pixels = c.take(n * drawers * size * size)?.to_vec();
        (c.pos == c.buf.len()).then_some(Omniglot {
            size,
            drawers,
            characters,
            pixels,
        })
    };
    Ok(parse(&mut c))
}

/// Verify a file's sha256 against the expected hex digest.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let found = hex(&Sha256::digest(&bytes));
    if found.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Error::Checksum {
            path: path.into(),
            expected: expected.into(),
            found,
        })
    }
}

/// Where [`download`] fetches the official zips from (Lake et al.'s repository).
pub const OFFICIAL_SOURCE: &str = "https://github.com/brendenlake/omniglot/raw/master/python";

/// Download the official zips that are missing from `<data dir>/omniglot/` (needs `curl` and
/// internet), verifying each against its published sha256 before it is moved into place; a
/// failed or corrupt download leaves nothing behind.
pub fn download(explicit: Option<&Path>, specs: &[ZipSpec]) -> Result<PathBuf> {
    download_from(explicit, specs, OFFICIAL_SOURCE)
}

/// [`download`] from a mirror: `<source>/<file>` for each missing zip (an `http(s)://` or
/// `file://` URL that `curl` can read).
///
/// Integrity: the file is fetched to `<file>.part`, then checked — its sha256 when the spec has
/// one, and in every case that it is a zip archive — before it is renamed into place. An HTTP
/// error, an interrupted transfer, an HTML page or a checksum mismatch is a typed error
/// ([`Error::Missing`], [`Error::NotAZip`], [`Error::Checksum`]) and removes the partial file;
/// zips already in place are kept.
pub fn download_from(explicit: Option<&Path>, specs: &[ZipSpec], source: &str) -> Result<PathBuf> {
    let dir = data_dir(explicit).join("omniglot");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for spec in specs {
        let dest = dir.join(&spec.file);
        if dest.exists() {
            continue;
        }
        let url = format!("{}/{}", source.trim_end_matches('/'), spec.file);
        let tmp = dir.join(format!("{}.part", spec.file));
        let fetched = fetch(&url, &tmp).and_then(|()| {
            if let Some(sum) = &spec.sha256 {
                verify_sha256(&tmp, sum)?;
            }
            check_is_zip(&tmp)
        });
        if let Err(e) = fetched {
            let _ = std::fs::remove_file(&tmp);
            return Err(match e {
                Error::Missing { hint, .. } => Error::Missing { path: dest, hint },
                other => other,
            });
        }
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    }
    Ok(dir)
}

/// `curl` `url` into `to`; failure (HTTP error, interrupted transfer, no curl) is
/// [`Error::Missing`].
fn fetch(url: &str, to: &Path) -> Result<()> {
    let out = std::process::Command::new("curl")
        .args(["-fsSL", "--retry", "3", "-o"])
        .arg(to)
        .arg(url)
        .output()
        .map_err(|e| Error::Missing {
            path: to.into(),
            hint: format!("cannot run curl to download {url}: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Missing {
            path: to.into(),
            hint: format!(
                "download of {url} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// A zip archive's central directory must be readable (catches HTML pages and truncation).
fn check_is_zip(path: &Path) -> Result<()> {
    open_zip(path).map(|_| ())
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use std::io::Write;

    /// A 105×105 1-bit PNG: white background, a black square whose position encodes `mark`.
    pub(crate) fn png(mark: usize) -> Vec<u8> {
        let mut rows = vec![0xFFu8; 14 * 105]; // 105 bits -> 14 bytes per row, 1 = white
        let (r0, c0) = (10 + (mark % 7) * 10, 10 + (mark / 7 % 7) * 10);
        for r in r0..r0 + 15 {
            for c in c0..c0 + 15 {
                rows[r * 14 + c / 8] &= !(0x80 >> (c % 8));
            }
        }
        let mut out = Vec::new();
        {
            let mut e = png::Encoder::new(&mut out, 105, 105);
            e.set_color(png::ColorType::Grayscale);
            e.set_depth(png::BitDepth::One);
            let mut w = e.write_header().unwrap();
            w.write_image_data(&rows).unwrap();
        }
        out
    }

    pub(crate) fn make_zip(path: &Path, top: &str, alphabets: &[(&str, usize)], drawers: usize) {
        let f = std::fs::File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default();
        let mut id = 0;
        for (a, n) in alphabets {
            for c in 1..=*n {
                id += 1;
                for d in 1..=drawers {
                    let name = format!("{top}/{a}/character{c:02}/{id:04}_{d:02}.png");
                    z.start_file(name, opts).unwrap();
                    z.write_all(&png(id * 3 + d)).unwrap();
                }
            }
        }
        z.finish().unwrap();
    }

    pub(crate) fn spec(file: &str, top: &str, characters: usize, drawers: usize) -> ZipSpec {
        ZipSpec {
            file: file.into(),
            top: top.into(),
            characters,
            drawers,
            sha256: None,
        }
    }

    pub(crate) fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("metalearn-omni-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub(crate) fn config(dir: &Path, specs: Vec<ZipSpec>) -> OmniglotConfig {
        OmniglotConfig {
            image_size: 28,
            zips: specs,
            cache: true,
            cache_dir: Some(dir.join(".cache")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::{NWayKShot, NWayKShotConfig};
    use metalearn_core::TaskDistribution;

    #[test]
    fn loads_small_official_layout_with_cache_and_rotations() {
        let dir = temp("ok");
        make_zip(
            &dir.join("bg.zip"),
            "images_background",
            &[("Aaa", 3), ("Bbb", 2)],
            4,
        );
        make_zip(&dir.join("ev.zip"), "images_evaluation", &[("Ccc", 2)], 4);
        let cfg = config(
            &dir,
            vec![
                spec("bg.zip", "images_background", 5, 4),
                spec("ev.zip", "images_evaluation", 2, 4),
            ],
        );
        let o = Omniglot::load_from(&dir, &cfg).unwrap();
        assert_eq!(o.characters().len(), 7);
        assert_eq!(o.characters()[3].alphabet, "Bbb");
        let img = o.image(0, 0).unwrap();
        assert_eq!(img.len(), 28 * 28);
        assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
        // ink = 1: a 15×15 square of 105×105 is ~2% ink; background is 0.
        let ink: f32 = img.iter().sum::<f32>() / img.len() as f32;
        assert!(ink > 0.01 && ink < 0.05, "{ink}");
        let (bg, ev) = o.lake_split();
        assert_eq!((bg.len(), ev.len()), (5, 2));
        // the cache is written and gives the same data
        assert!(dir.join(".cache").join("omniglot-28.bin").exists());
        let again = Omniglot::load_from(&dir, &cfg).unwrap();
        assert_eq!(again.pixels, o.pixels);
        assert_eq!(again.characters, o.characters);
        // a corrupt cache is detected and rebuilt
        let cache = dir.join(".cache").join("omniglot-28.bin");
        let mut bytes = std::fs::read(&cache).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(&cache, bytes).unwrap();
        assert_eq!(Omniglot::load_from(&dir, &cfg).unwrap().pixels, o.pixels);

        let o = Arc::new(o);
        let classes = o.classes((0..7).collect(), true);
        assert_eq!(classes.num_classes(), 28);
        let mut r0 = Vec::new();
        let mut r1 = Vec::new();
        classes.write_example(0, 0, &mut r0).unwrap();
        classes.write_example(1, 0, &mut r1).unwrap();
        assert_ne!(r0, r1, "a rotated character must differ from the original");
        let s = NWayKShot::new(Arc::new(classes), NWayKShotConfig::new(5, 1, 2)).unwrap();
        let ep = s.sample(3).unwrap();
        assert_eq!(ep.support.input_shape, vec![5, 1, 28, 28]);
    }

    #[test]
    fn a_zip_damaged_in_place_is_not_served_from_the_cache() {
        let dir = temp("stale");
        let zip = dir.join("bg.zip");
        make_zip(&zip, "images_background", &[("Aaa", 3)], 4);
        let cfg = config(&dir, vec![spec("bg.zip", "images_background", 3, 4)]);
        let good = Omniglot::load_from(&dir, &cfg).unwrap();
        assert!(dir.join(".cache").join("omniglot-28.bin").exists());
        // Same size, same modification time, different bytes (inside the first image's data).
        let mtime = std::fs::metadata(&zip).unwrap().modified().unwrap();
        let mut bytes = std::fs::read(&zip).unwrap();
        for b in &mut bytes[80..120] {
            *b ^= 0x5A;
        }
        std::fs::write(&zip, &bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&zip)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(std::fs::metadata(&zip).unwrap().modified().unwrap(), mtime);
        // Either the damage is reported (the zip's CRC) or the new bytes are decoded: never the
        // old data from the cache.
        if let Ok(o) = Omniglot::load_from(&dir, &cfg) {
            assert_ne!(o.pixels, good.pixels, "stale cache served");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_archives_are_typed_errors() {
        let dir = temp("bad");
        make_zip(&dir.join("bg.zip"), "images_background", &[("Aaa", 3)], 4);
        let ok = spec("bg.zip", "images_background", 3, 4);
        let mut cfg = config(&dir, vec![ok.clone()]);
        cfg.cache = false;
        // missing class
        let mut want4 = ok.clone();
        want4.characters = 4;
        let r = Omniglot::load_from(&dir, &config(&dir, vec![want4]));
        assert!(matches!(r, Err(Error::WrongCounts { .. })), "{r:?}");
        // missing drawer
        let mut want5 = ok.clone();
        want5.drawers = 5;
        let r = Omniglot::load_from(&dir, &config(&dir, vec![want5]));
        assert!(matches!(r, Err(Error::WrongCounts { .. })), "{r:?}");
        // truncated
        let bytes = std::fs::read(dir.join("bg.zip")).unwrap();
        std::fs::write(dir.join("bg.zip"), &bytes[..bytes.len() / 2]).unwrap();
        let r = Omniglot::load_from(&dir, &cfg);
        assert!(matches!(r, Err(Error::NotAZip { .. })), "{r:?}");
        // HTML instead of zip
        std::fs::write(dir.join("bg.zip"), b"<!DOCTYPE html><html>Not found</html>").unwrap();
        match Omniglot::load_from(&dir, &cfg) {
            Err(Error::NotAZip { reason, .. }) => assert!(reason.contains("HTML")),
            other => panic!("{other:?}"),
        }
        // absent
        std::fs::remove_file(dir.join("bg.zip")).unwrap();
        let r = Omniglot::load_from(&dir, &cfg);
        assert!(matches!(r, Err(Error::Missing { .. })), "{r:?}");
    }
}

/// The download path against a local HTTP server (no internet needed): good archive, HTTP
/// error, interrupted transfer, HTML page, truncated zip, checksum mismatch.
#[cfg(test)]
mod download_tests {
    use super::tests_support::*;
    use super::*;
    use std::io::Write;

    /// Serve `routes` (path, HTTP status, body, declared Content-Length) on 127.0.0.1 from a
    /// background thread; any other path is a 404. Returns the base URL.
    fn serve(routes: Vec<(&'static str, u16, Vec<u8>, Option<usize>)>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (code, body, len) = routes
                    .iter()
                    .find(|r| r.0 == path)
                    .map(|r| (r.1, r.2.clone(), r.3.unwrap_or(r.2.len())))
                    .unwrap_or((404, b"not found".to_vec(), 9));
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} Status\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(&body);
            }
        });
        format!("http://{addr}")
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[test]
    fn downloads_verify_and_never_leave_partial_files() {
        if std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("\n!!!!! SKIPPED: curl is not installed; download test not run !!!!!\n");
            return;
        }
        let src = temp("dl-src");
        make_zip(&src.join("bg.zip"), "images_background", &[("Aaa", 3)], 4);
        let good = std::fs::read(src.join("bg.zip")).unwrap();
        let html = b"<!DOCTYPE html><html><body>Rate limited</body></html>".to_vec();
        let base = serve(vec![
            ("/bg.zip", 200, good.clone(), None),
            ("/html.zip", 200, html.clone(), None),
            ("/cut.zip", 200, good[..good.len() / 2].to_vec(), None),
            ("/short.zip", 200, good[..100].to_vec(), Some(good.len())),
            ("/error.zip", 500, b"oops".to_vec(), None),
        ]);
        let root = temp("dl-root");
        let dir = root.join("omniglot");
        let mut ok = spec("bg.zip", "images_background", 3, 4);
        ok.sha256 = Some(sha256_hex(&good));
        let leftovers = || {
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };

        // A good archive with its checksum: in place, loadable, no partial file.
        assert_eq!(
            download_from(Some(&root), &[ok.clone()], &base).unwrap(),
            dir
        );
        assert_eq!(leftovers(), vec!["bg.zip"]);
        let o = Omniglot::load_from(&dir, &config(&root, vec![ok.clone()])).unwrap();
        assert_eq!(o.characters().len(), 3);

        // Each failure is typed, removes its partial file and keeps what was already saved.
        let cases: Vec<(&str, Option<String>, &str)> = vec![
            ("missing.zip", None, "Missing"),
            ("error.zip", None, "Missing"),
            ("short.zip", None, "Missing"),
            ("html.zip", None, "NotAZip"),
            ("cut.zip", None, "NotAZip"),
            ("html.zip", Some(sha256_hex(&good)), "Checksum"),
        ];
        for (file, sha, want) in cases {
            let mut bad = spec(file, "images_background", 3, 4);
            bad.sha256 = sha;
            let e = download_from(Some(&root), &[ok.clone(), bad], &base).unwrap_err();
            let kind = match &e {
                Error::Missing { .. } => "Missing",
                Error::NotAZip { .. } => "NotAZip",
                Error::Checksum { .. } => "Checksum",
                _ => "other",
            };
            assert_eq!(kind, want, "{file}: {e}");
            assert!(
                e.to_string().contains(file),
                "{file}: error names the file: {e}"
            );
            assert_eq!(leftovers(), vec!["bg.zip"], "{file}");
        }
        // The HTML page says what it is.
        let e = download_from(Some(&root), &[spec("html.zip", "x", 1, 1)], &base).unwrap_err();
        assert!(e.to_string().contains("HTML"), "{e}");
        // An archive already in place is not fetched again (the server no longer has it).
        let gone = serve(vec![]);
        download_from(Some(&root), &[ok], &gone).unwrap();
        assert_eq!(std::fs::read(dir.join("bg.zip")).unwrap(), good);
    }
}
