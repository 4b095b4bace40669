//! Components saved in shards, as diffusers' `save_pretrained` writes a component over its
//! `max_shard_size` (10 GB by default; an SDXL UNet in f32): `<stem>-0000i-of-0000n.safetensors`
//! and an index `<stem>.safetensors.index.json` (`.index.fp16.json` for the fp16 variant) holding
//! `{"metadata": {"total_size": ...}, "weight_map": {tensor: shard file}}` — the format of
//! diffusers' `_fetch_index_file` / `_get_checkpoint_shard_files` (diffusers 0.42.1,
//! utils/hub_utils.py), which read only `weight_map` to find the shards. scripts/fixture_sharded.py
//! (run by scripts/make_fixtures.py) checks that diffusers loads this split to the single file's
//! tensors and that its own `save_pretrained` uses these index and shard names.
//!
//! The shards are written here from tiny-sd's UNet (test/fixtures/tiny-sd, scripts/make_fixtures.py)
//! with the safetensors crate; the sharded folder must read to the same tensors, the same image
//! and the same LoRA-fused image as the single file, and every broken index is an error naming
//! the index, the tensor and the shard.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::loaders::lora::LoraSpec;
use candlewick_core::pipeline::{LoadOptions, Observer, StableDiffusionPipeline};
use candlewick_core::weights;
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use serde_json::json;

const STEM: &str = "diffusion_pytorch_model";

/// A copy of tiny-sd whose UNet is split into `shards` files plus an index; removed when dropped.
struct Sharded {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Sharded {
    /// `variant` None shards the full-precision UNet and removes its single files; Some("fp16")
    /// shards the fp16 file under the fp16 names and leaves the plain single file in place.
    fn new(shards: usize, variant: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("tiny-sd");
        common::copy_dir(&common::fixtures().join("tiny-sd"), &root);
        let unet = root.join("unet");
        let single = match variant {
            Some(v) => unet.join(format!("{STEM}.{v}.safetensors")),
            None => unet.join(format!("{STEM}.safetensors")),
        };
        write_shards(&single, shards, variant);
        fs::remove_file(&single).unwrap();
        if variant.is_none() {
            fs::remove_file(unet.join(format!("{STEM}.fp16.safetensors"))).unwrap();
        }
        Sharded { _dir: dir, root }
    }

    fn unet(&self, name: &str) -> PathBuf {
        self.root.join("unet").join(name)
    }

    fn index(&self) -> PathBuf {
        self.unet(&format!("{STEM}.safetensors.index.json"))
    }

    fn edit_index(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut index: serde_json::Value = serde_json::from_slice(&fs::read(self.index()).unwrap()).unwrap();
        edit(&mut index);
        fs::write(self.index(), serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    }

    fn load_error(&self) -> String {
        match StableDiffusionPipeline::load(&self.root, &cpu(DTypeRequest::F32)) {
            Ok(_) => panic!("the broken sharded model loaded"),
            Err(e) => e.to_string(),
        }
    }
}

/// Split `single` into `n` shards, in the order of its sorted tensor names as `save_pretrained`
/// (split_torch_state_dict_into_shards) groups them, and write diffusers' index beside it.
fn write_shards(single: &Path, n: usize, variant: Option<&str>) {
    let bytes = fs::read(single).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = file.names();
    names.sort();
    let per = names.len().div_ceil(n);
    let mut weight_map = BTreeMap::new();
    let mut total_size = 0;
    for (i, chunk) in names.chunks(per).enumerate() {
        let shard = match variant {
            // diffusers 0.42.1's name for a variant's shards (scripts/fixture_sharded.py checks it).
            Some(v) => format!("{STEM}.{v}-{:05}-of-{n:05}.safetensors", i + 1),
            None => format!("{STEM}-{:05}-of-{n:05}.safetensors", i + 1),
        };
        let views: Vec<(&str, TensorView)> = chunk.iter().map(|name| (*name, file.tensor(name).unwrap())).collect();
        for (name, view) in &views {
            total_size += view.data().len();
            weight_map.insert(name.to_string(), shard.clone());
        }
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(metadata), &single.with_file_name(&shard)).unwrap();
    }
    assert_eq!(names.chunks(per).count(), n, "tiny-sd's UNet splits into {n} shards");
    let index = json!({ "metadata": { "total_size": total_size }, "weight_map": weight_map });
    let index_name = match variant {
        Some(v) => format!("{STEM}.safetensors.index.{v}.json"),
        None => format!("{STEM}.safetensors.index.json"),
    };
    fs::write(single.with_file_name(index_name), serde_json::to_vec_pretty(&index).unwrap()).unwrap();
}

fn cpu(dtype: DTypeRequest) -> LoadOptions {
    LoadOptions { device: DeviceRequest::Cpu, dtype, ..Default::default() }
}

fn image(pipe: &StableDiffusionPipeline) -> Vec<u8> {
    pipe.generate(&common::quick_options(), &Observer::new()).unwrap().images.remove(0).data
}

#[test]
fn shards_read_to_the_same_tensors_as_the_single_file() {
    let sharded = Sharded::new(3, None);
    let found = weights::find_weights(&sharded.root.join("unet"), STEM, DType::F32).unwrap();
    assert_eq!(found, sharded.index());
    let from_shards = weights::open_backend(&found).unwrap();
    let single_path = common::fixtures().join("tiny-sd/unet/diffusion_pytorch_model.safetensors");
    let single = weights::open_file(&single_path).unwrap();
    let names = single.names();
    assert!(names.len() > 3);
    for name in &names {
        assert!(from_shards.contains_tensor(name), "{name}");
        let stored = single.dtype(name).unwrap();
        let a = single.tensor(name, None, stored, &Device::Cpu).unwrap().flatten_all().unwrap();
        let b = from_shards.get_unchecked(name, stored, &Device::Cpu).unwrap().flatten_all().unwrap();
        assert_eq!(a.dtype(), b.dtype(), "{name}");
        let (a, b) = (a.to_dtype(DType::F64).unwrap(), b.to_dtype(DType::F64).unwrap());
        let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == b.len(), "{name} differs");
    }
    assert!(!from_shards.contains_tensor("not.a.tensor"));
}

#[test]
fn a_sharded_unet_gives_the_same_image_and_the_same_lora_fusion() {
    let plain = StableDiffusionPipeline::load(&common::fixtures().join("tiny-sd"), &cpu(DTypeRequest::F32)).unwrap();
    let sharded = Sharded::new(3, None);
    let mut pipe = StableDiffusionPipeline::load(&sharded.root, &cpu(DTypeRequest::F32)).unwrap();
    assert_eq!(image(&pipe), image(&plain), "the sharded UNet's image differs");

    // LoRA fusion rebuilds the UNet from the tensors recorded at load, whichever file they came from.
    let lora = vec![LoraSpec { path: common::fixtures().join("single-file/lora_kohya.safetensors"), weight: 0.8 }];
    let mut plain = plain;
    plain.set_loras(&lora).unwrap();
    pipe.set_loras(&lora).unwrap();
    let fused = image(&pipe);
    assert_eq!(fused, image(&plain), "LoRA fused into the sharded UNet differs");
    pipe.set_loras(&[]).unwrap();
    assert_ne!(image(&pipe), fused, "the LoRA changed nothing, so this test could not fail");
}

#[test]
fn the_fp16_index_is_chosen_as_the_fp16_single_file_would_be() {
    // Plain single file + fp16 shards: f16 takes the fp16 index, f32 the plain file.
    let sharded = Sharded::new(2, Some("fp16"));
    let unet = sharded.root.join("unet");
    let fp16_index = unet.join(format!("{STEM}.safetensors.index.fp16.json"));
    assert_eq!(weights::find_weights(&unet, STEM, DType::F16).unwrap(), fp16_index);
    assert_eq!(weights::find_weights(&unet, STEM, DType::F32).unwrap(), unet.join(format!("{STEM}.safetensors")));
    // A single file of the same variant wins over an index.
    fs::copy(
        common::fixtures().join("tiny-sd/unet/diffusion_pytorch_model.fp16.safetensors"),
        unet.join(format!("{STEM}.fp16.safetensors")),
    )
    .unwrap();
    assert_eq!(weights::find_weights(&unet, STEM, DType::F16).unwrap(), unet.join(format!("{STEM}.fp16.safetensors")));
    fs::remove_file(unet.join(format!("{STEM}.fp16.safetensors"))).unwrap();
    // Only the fp16 shards: f32 upcasts them, and the image stays close to the f32 one.
    fs::remove_file(unet.join(format!("{STEM}.safetensors"))).unwrap();
    assert_eq!(weights::find_weights(&unet, STEM, DType::F32).unwrap(), fp16_index);
    let pipe = StableDiffusionPipeline::load(&sharded.root, &cpu(DTypeRequest::F32)).unwrap();
    let plain = StableDiffusionPipeline::load(&common::fixtures().join("tiny-sd"), &cpu(DTypeRequest::F32)).unwrap();
    let (a, b) = (image(&pipe), image(&plain));
    let max = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    assert!(max <= 8, "fp16 shards upcast give an image {max}/255 away from the f32 one");
    // Nothing at all: the error names both index names too.
    for entry in fs::read_dir(&unet).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains(STEM) {
            fs::remove_file(path).unwrap();
        }
    }
    let e = weights::find_weights(&unet, STEM, DType::F32).unwrap_err().to_string();
    assert!(e.contains("diffusion_pytorch_model.safetensors.index.json") && e.contains(".index.fp16.json"), "{e}");
}

#[test]
fn broken_indexes_name_the_index_the_tensor_and_the_shard() {
    let tensor = "conv_in.weight";
    let index_named = |e: &str, sharded: &Sharded| {
        let named = format!("{}: ", sharded.index().display());
        assert!(e.starts_with(&named), "{e:?} should start with {named:?}");
    };

    // A shard the weight_map names is missing.
    let s = Sharded::new(3, None);
    let shard = "diffusion_pytorch_model-00002-of-00003.safetensors";
    fs::remove_file(s.unet(shard)).unwrap();
    let e = s.load_error();
    index_named(&e, &s);
    assert!(e.contains(shard) && e.contains("is not in"), "{e}");

    // The weight_map puts a tensor in a shard that does not hold it.
    let s = Sharded::new(3, None);
    let wrong = "diffusion_pytorch_model-00003-of-00003.safetensors";
    s.edit_index(|index| index["weight_map"][tensor] = json!(wrong));
    let e = s.load_error();
    index_named(&e, &s);
    assert!(
        e.contains(&format!("tensor {tensor} in shard {wrong}")) && e.contains("has no tensor of that name"),
        "{e}"
    );

    // A shard outside the folder (diffusers refuses a path separator too).
    let s = Sharded::new(3, None);
    s.edit_index(|index| index["weight_map"][tensor] = json!("../vae/diffusion_pytorch_model.safetensors"));
    let e = s.load_error();
    index_named(&e, &s);
    assert!(e.contains(tensor) && e.contains("not a file name in the index's folder"), "{e}");

    // A tensor the model needs is missing from the weight_map.
    let s = Sharded::new(3, None);
    s.edit_index(|index| {
        index["weight_map"].as_object_mut().unwrap().remove(tensor);
    });
    let e = s.load_error();
    index_named(&e, &s);
    assert!(e.contains(tensor), "{e}");

    // Not an index: no weight_map.
    let s = Sharded::new(3, None);
    fs::write(s.index(), r#"{"metadata": {}}"#).unwrap();
    let e = s.load_error();
    index_named(&e, &s);
    assert!(e.contains("weight_map"), "{e}");

    // A damaged shard header is named as a damaged single file is (the shard's own path).
    let s = Sharded::new(3, None);
    fs::write(s.unet(shard), [1u8, 2, 3]).unwrap();
    let e = s.load_error();
    let named = format!("{}: ", s.unet(shard).display());
    assert!(e.starts_with(&named) && e.contains("is not a safetensors file"), "{e}");

    // A shard with the wrong shape for a tensor: the error names the index, tensor and shard.
    let s = Sharded::new(3, None);
    let bytes = fs::read(s.unet(shard)).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView)> = file.tensors();
    let (name, view) = views.iter().find(|(_, v)| v.shape().len() == 1 && v.shape()[0] % 2 == 0).cloned().unwrap();
    let half = view.data().len() / 2;
    let shape = vec![view.shape()[0] / 2];
    let data = view.data()[..half].to_vec();
    views.retain(|(n, _)| n != &name);
    views.push((name.clone(), TensorView::new(view.dtype(), shape, &data).unwrap()));
    safetensors::serialize_to_file(views, None, &s.unet(shard)).unwrap();
    let e = s.load_error();
    index_named(&e, &s);
    assert!(e.contains(&name) && e.contains(&format!("(in shard {shard})")), "{e}");
}
