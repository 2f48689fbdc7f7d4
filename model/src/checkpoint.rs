//! Safetensors checkpoints in the Hugging Face layout: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`.
//!
//! Reading memory-maps every file and copies each tensor once, straight from the mapped bytes
//! into its libtorch storage, converting dtype on the way (f32, f16 or bf16 files); nothing is
//! initialised first. Writing produces what `save_pretrained` produces: `{"format": "pt"}`
//! metadata, and shards plus an index above a size threshold.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, TensorInfo, View};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use crate::error::{io_error, ModelError, Result};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// An opened checkpoint: its mapped files and where each tensor lives.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<MappedFile>,
    /// tensor name -> index into `files`
    locations: HashMap<String, usize>,
}

struct MappedFile {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of the tensor data (after the 8-byte length and the JSON header).
    data_start: usize,
    metadata: Metadata,
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`, preferring the sharded index when both layouts exist.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        let file_names: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(io_error(&index_path))?;
            let weight_map = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|index| index.get("weight_map").cloned())
                .and_then(|map| serde_json::from_value::<BTreeMap<String, String>>(map).ok())
                .ok_or_else(|| ModelError::Weights {
                    path: index_path.clone(),
                    message: "malformed index: expected {\"weight_map\": {tensor: file}}".into(),
                })?;
            let mut names: Vec<String> = weight_map.into_values().collect();
            names.sort();
            names.dedup();
            names
        } else if dir.join(SINGLE_FILE).exists() {
            vec![SINGLE_FILE.to_string()]
        } else {
            return Err(ModelError::NoWeights { dir: dir.to_path_buf() });
        };

        for name in &file_names {
            if !dir.join(name).is_file() {
                return Err(ModelError::Weights {
                    path: index_path.clone(),
                    message: format!("shard {name} listed in the index is missing"),
                });
            }
        }
        Self::open_files(dir, file_names.iter().map(|name| dir.join(name)).collect())
    }

    /// Opens one safetensors file (a LoRA adapter's `adapter_model.safetensors`).
    pub fn open_file(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::open_files(&dir, vec![path.to_path_buf()])
    }

    fn open_files(dir: &Path, paths: Vec<PathBuf>) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut locations = HashMap::new();
        for path in paths {
            let file = File::open(&path).map_err(io_error(&path))?;
            // SAFETY: the map is read-only and lives as long as this Checkpoint; we copy every
            // tensor out of it before the Checkpoint is dropped.
            let map = unsafe { Mmap::map(&file) }.map_err(io_error(&path))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| ModelError::Weights {
                path: path.clone(),
                message: format!("not a valid safetensors file: {e}"),
            })?;
            for tensor_name in metadata.tensors().keys() {
                locations.insert(tensor_name.clone(), files.len());
            }
            files.push(MappedFile { path, map, data_start: 8 + header_len, metadata });
        }
        Ok(Self { dir: dir.to_path_buf(), files, locations })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.locations.contains_key(name)
    }

    /// The names of all tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.locations.keys().map(String::as_str).collect();
        names.sort();
        names
    }

    /// Reads tensor `name`, checks its shape, and returns it as `kind` on `device`.
    pub fn tensor(&self, name: &str, shape: &[i64], kind: Kind, device: Device) -> Result<Tensor> {
        let &file_index = self
            .locations
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.to_string(), dir: self.dir.clone() })?;
        let file = &self.files[file_index];
        let info: &TensorInfo = file.metadata.info(name).expect("location comes from this metadata");
        let found: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        if found != shape {
            return Err(ModelError::ShapeMismatch { name: name.to_string(), expected: shape.to_vec(), found });
        }
        let stored_kind = kind_of(info.dtype).ok_or_else(|| ModelError::Weights {
            path: file.path.clone(),
            message: format!("tensor {name} has dtype {:?}; only F32, F16 and BF16 are supported", info.dtype),
        })?;
        let (start, end) = info.data_offsets;
        let bytes = &file.map[file.data_start + start..file.data_start + end];
        let tensor = Tensor::f_from_data_size(bytes, shape, stored_kind)?;
        Ok(tensor.f_to_kind(kind)?.f_to_device(device)?)
    }
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        _ => None,
    }
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    match kind {
        Kind::Float => Some(Dtype::F32),
        Kind::Half => Some(Dtype::F16),
        Kind::BFloat16 => Some(Dtype::BF16),
        _ => None,
    }
}

/// The name transformers gives a dtype in config.json.
pub fn torch_dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        _ => "float32",
    }
}

/// A tensor copied to host memory, ready to be serialised.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl HostTensor {
    fn new(tensor: &Tensor, kind: Kind) -> Result<Self> {
        let dtype = dtype_of(kind).ok_or_else(|| ModelError::Input(format!("cannot save tensors as {kind:?}")))?;
        let tensor = tensor.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(kind)?.f_contiguous()?;
        let numel = tensor.numel();
        let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
        tensor.f_copy_data_u8(&mut bytes, numel)?;
        Ok(Self { dtype, shape: tensor.size().iter().map(|&d| d as usize).collect(), bytes })
    }
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `tensors` (Hugging Face names) into `dir` as `kind`: one `model.safetensors` when the
/// total is at most `max_shard_bytes`, else `model-0000i-of-0000n.safetensors` shards and
/// `model.safetensors.index.json`. Weight files of an earlier save that the new one does not
/// overwrite are removed afterwards, so the folder never holds two disagreeing checkpoints.
/// Callers that need a save to be atomic write into a fresh folder and rename it.
pub fn write_safetensors(dir: &Path, tensors: &[(String, Tensor)], kind: Kind, max_shard_bytes: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().map(|(n, t)| (n, t)).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let bytes_of = |t: &Tensor| (t.numel() * kind.elt_size_in_bytes()) as u64;
    let total: u64 = sorted.iter().map(|(_, t)| bytes_of(t)).sum();

    // Greedy packing in name order, as transformers' `shard_checkpoint` does.
    let mut shards: Vec<Vec<(&String, &Tensor)>> = vec![vec![]];
    let mut current = 0u64;
    for (name, tensor) in sorted {
        let size = bytes_of(tensor);
        if current > 0 && current + size > max_shard_bytes {
            shards.push(vec![]);
            current = 0;
        }
        current += size;
        shards.last_mut().expect("never empty").push((name, tensor));
    }

    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file_name =
            if count == 1 { SINGLE_FILE.to_string() } else { format!("model-{:05}-of-{count:05}.safetensors", i + 1) };
        serialize(&dir.join(&file_name), shard, kind)?;
        for (name, _) in shard {
            weight_map.insert((*name).clone(), file_name.clone());
        }
    }
    if count > 1 {
        let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        let path = dir.join(INDEX_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&index).expect("json") + "\n").map_err(io_error(&path))?;
    }
    let written: Vec<&String> = weight_map.values().collect();
    remove_stale_weight_files(dir, |name| written.iter().any(|w| *w == name) || (name == INDEX_FILE && count > 1))
}

/// Writes `tensors` into one safetensors file at `path` as `kind`, with `save_pretrained`'s
/// metadata (a LoRA adapter's `adapter_model.safetensors`).
pub fn write_safetensors_file(path: &Path, tensors: &[(String, Tensor)], kind: Kind) -> Result<()> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().map(|(n, t)| (n, t)).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    serialize(path, &sorted, kind)
}

fn serialize(path: &Path, tensors: &[(&String, &Tensor)], kind: Kind) -> Result<()> {
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let host: Vec<(String, HostTensor)> =
        tensors.iter().map(|(n, t)| Ok(((*n).clone(), HostTensor::new(t, kind)?))).collect::<Result<_>>()?;
    safetensors::tensor::serialize_to_file(host.iter().map(|(n, t)| (n.as_str(), t)), metadata, path)
        .map_err(|e| ModelError::Weights { path: path.to_path_buf(), message: e.to_string() })
}

fn remove_stale_weight_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_shard = name.starts_with("model-") && name.contains("-of-") && name.ends_with(".safetensors");
        if (name == SINGLE_FILE || name == INDEX_FILE || is_shard) && !keep(name) {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}
