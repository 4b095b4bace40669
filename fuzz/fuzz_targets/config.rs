//! Config parsing and checking, on any JSON: model_index.json, text_encoder/config.json,
//! unet/config.json, vae/config.json and scheduler_config.json (the first byte picks which).
//! Parsing goes through `config::parse_json` as loading does; a config that parses is then
//! checked the way loading checks it: the scheduler's class is chosen from `_class_name` and built for 1 to 64 steps, and each model is
//! built from zero weights of the shapes it asks for (capped, so that a config asking for huge
//! tensors is refused by the backend instead of exhausting the fuzzer's memory).
#![no_main]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use candlewick_core::config::{parse_json, ModelIndex};
use candlewick_core::models::clip::{ClipTextConfig, ClipTextTransformer};
use candlewick_core::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use candlewick_core::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use candlewick_core::schedulers::SchedulerChoice;
use libfuzzer_sys::fuzz_target;

/// The most values one zero tensor may have in the fuzzer.
const MAX_ELEMENTS: usize = 1 << 16;
/// The most tensors one model may ask for: a weights file holds finitely many, so a config with
/// 10^18 layers fails at the first missing one when loading; here it fails after this many.
const MAX_TENSORS: usize = 2048;

/// Zeros of any requested shape up to MAX_ELEMENTS values, MAX_TENSORS times; an error beyond.
#[derive(Default)]
struct BoundedZeros {
    handed_out: AtomicUsize,
}

impl SimpleBackend for BoundedZeros {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if self.handed_out.fetch_add(1, Ordering::Relaxed) >= MAX_TENSORS {
            candle_core::bail!("cannot find tensor {name}");
        }
        let count = s.dims().iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        match count {
            Some(n) if n <= MAX_ELEMENTS => Tensor::zeros(s, dtype, dev),
            _ => candle_core::bail!("{name}: shape {s:?} is beyond the fuzzer's cap"),
        }
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: no shape given")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn zeros() -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(BoundedZeros::default()), DType::F32, Device::Cpu)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(json) else { return };
    let path = Path::new("config.json");
    match which % 5 {
        0 => {
            let _ = parse_json::<ModelIndex>(path, text);
        }
        1 => {
            if let Ok(cfg) = parse_json::<ClipTextConfig>(path, text) {
                let _ = ClipTextTransformer::new(zeros(), &cfg);
            }
        }
        2 => {
            if let Ok(cfg) = parse_json::<UNet2DConditionConfig>(path, text) {
                let _ = UNet2DConditionModel::new(zeros(), &cfg);
            }
        }
        3 => {
            if let Ok(cfg) = parse_json::<AutoencoderKLConfig>(path, text) {
                let _ = cfg.scale_factor();
                let _ = AutoencoderKL::new(zeros(), &cfg);
            }
        }
        _ => {
            // As loading does: the class from `_class_name`, checked; then set up for 1 to 64 steps.
            if let Ok(cfg) = parse_json::<serde_json::Map<String, serde_json::Value>>(path, text) {
                if let Ok(choice) = SchedulerChoice::from_folder(cfg) {
                    let steps = 1 + usize::from(which / 5) % 64;
                    if let Ok(scheduler) = choice.build(steps) {
                        let _ = scheduler.timesteps();
                    }
                }
            }
        }
    }
});
