//! The three networks against diffusers' outputs. The goldens (test/fixtures/goldens/
//! text_encoder.safetensors, unet.safetensors, vae.safetensors) and the tiny model
//! (test/fixtures/tiny-sd) are made by scripts/make_fixtures.py.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candlewick_core::models::clip::{ClipTextConfig, ClipTextTransformer};
use candlewick_core::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use candlewick_core::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use candlewick_core::weights;
use common::{assert_close, fixtures, golden, goldens, load};

const F32_TOL: f32 = 1e-4;
const F16_TOL: f32 = 2e-2;

fn clip_against_goldens(dtype: DType, tol: f32) {
    let (model, _) = load("text_encoder", "model", dtype, ClipTextTransformer::new);
    let g = goldens("text_encoder");
    let n = (0..).take_while(|i| g.contains_key(&format!("input_ids_{i}"))).count();
    assert!(n >= 6, "text_encoder goldens hold {n} prompts");
    let ids: Vec<Tensor> = (0..n).map(|i| golden(&g, &format!("input_ids_{i}"))).collect();
    let ids = Tensor::cat(&ids, 0).and_then(|t| t.to_dtype(DType::U32)).expect("input ids");
    let out = model.forward(&ids).expect("CLIP forward");
    for i in 0..n {
        let got = out.narrow(0, i, 1).expect("row");
        assert_close(
            &format!("last_hidden_state_{i} ({dtype:?})"),
            &got,
            &golden(&g, &format!("last_hidden_state_{i}")),
            tol,
        );
    }
}

#[test]
fn clip_last_hidden_state_f32() {
    clip_against_goldens(DType::F32, F32_TOL);
}

#[test]
fn clip_last_hidden_state_f16() {
    clip_against_goldens(DType::F16, F16_TOL);
}

fn unet_against_goldens(dtype: DType, tol: f32) {
    let (model, _) = load("unet", "diffusion_pytorch_model", dtype, UNet2DConditionModel::new);
    let g = goldens("unet");
    let timestep = golden(&g, "timestep").to_vec1::<f32>().expect("timestep")[0] as f64;
    let sample = golden(&g, "sample").to_dtype(dtype).expect("sample");
    let context = golden(&g, "encoder_hidden_states").to_dtype(dtype).expect("context");
    let out = model.forward(&sample, timestep, &context).expect("UNet forward");
    assert_close(&format!("unet out ({dtype:?})"), &out, &golden(&g, "out"), tol);
}

#[test]
fn unet_forward_f32() {
    unet_against_goldens(DType::F32, F32_TOL);
}

#[test]
fn unet_forward_f16() {
    unet_against_goldens(DType::F16, F16_TOL);
}

fn vae_against_goldens(dtype: DType, tol: f32) {
    let (vae, cfg) = load("vae", "diffusion_pytorch_model", dtype, AutoencoderKL::new);
    let cfg: AutoencoderKLConfig = cfg;
    assert_eq!(cfg.scale_factor(), 2);
    let g = goldens("vae");
    let decoded = vae.decode(&golden(&g, "decode_in").to_dtype(dtype).expect("decode_in")).expect("decode");
    assert_close(&format!("vae decode ({dtype:?})"), &decoded, &golden(&g, "decode_out"), tol);
    let dist = vae.encode(&golden(&g, "encode_in").to_dtype(dtype).expect("encode_in")).expect("encode");
    assert_close(&format!("vae encode mean ({dtype:?})"), &dist.mean, &golden(&g, "encode_mean"), tol);
    assert_close(&format!("vae encode logvar ({dtype:?})"), &dist.logvar, &golden(&g, "encode_logvar"), tol);
}

#[test]
fn vae_decode_encode_f32() {
    vae_against_goldens(DType::F32, F32_TOL);
}

#[test]
fn vae_decode_encode_f16() {
    vae_against_goldens(DType::F16, F16_TOL);
}

/// Latent sizes that are not multiples of the UNet's total downsampling (width 520 px gives
/// 65 latents with SD's VAE): each up block must upsample to its skip connection's size.
#[test]
fn odd_latent_sizes_keep_their_shape() {
    let (unet, _) = load("unet", "diffusion_pytorch_model", DType::F32, UNet2DConditionModel::new);
    let g = goldens("unet");
    let context = golden(&g, "encoder_hidden_states").narrow(0, 0, 1).expect("context");
    let sample = Tensor::randn(0f32, 1f32, (1, 4, 9, 65), &Device::Cpu).expect("sample");
    let out = unet.forward(&sample, 500.0, &context).expect("UNet forward at 9x65");
    assert_eq!(out.dims(), &[1, 4, 9, 65]);
    let (vae, _) = load("vae", "diffusion_pytorch_model", DType::F32, AutoencoderKL::new);
    let image = vae.decode(&sample).expect("VAE decode at 9x65");
    assert_eq!(image.dims(), &[1, 3, 18, 130]);
    let dist = vae.encode(&image).expect("VAE encode at 18x130");
    assert_eq!(dist.mean.dims(), &[1, 4, 9, 65]);
}

fn unet_config_with(key: &str, value: serde_json::Value) -> UNet2DConditionConfig {
    let path = fixtures().join("tiny-sd/unet/config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("unet config")).expect("json");
    json[key] = value;
    serde_json::from_value(json).expect("config parses")
}

fn unet_error(cfg: &UNet2DConditionConfig) -> String {
    match UNet2DConditionModel::new(VarBuilder::zeros(DType::F32, &Device::Cpu), cfg) {
        Ok(_) => panic!("the UNet was built from an unsupported config"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_block_types_are_named_in_the_error() {
    let cfg = unet_config_with("down_block_types", serde_json::json!(["CrossAttnDownBlock2D", "KDownBlock2D"]));
    let msg = unet_error(&cfg);
    assert!(msg.contains("down_block_types[1]") && msg.contains("KDownBlock2D"), "{msg}");

    let cfg = unet_config_with("up_block_types", serde_json::json!(["UpBlock2D", "AttnUpBlock2D"]));
    let msg = unet_error(&cfg);
    assert!(msg.contains("up_block_types[1]") && msg.contains("AttnUpBlock2D"), "{msg}");

    let cfg = unet_config_with("mid_block_type", serde_json::json!("UNetMidBlock2DSimpleCrossAttn"));
    let msg = unet_error(&cfg);
    assert!(msg.contains("mid_block_type") && msg.contains("UNetMidBlock2DSimpleCrossAttn"), "{msg}");

    let mut vae_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tiny-sd/vae/config.json")).expect("vae config"))
            .expect("json");
    vae_json["up_block_types"] = serde_json::json!(["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]);
    let cfg: AutoencoderKLConfig = serde_json::from_value(vae_json).expect("config parses");
    let msg = match AutoencoderKL::new(VarBuilder::zeros(DType::F32, &Device::Cpu), &cfg) {
        Ok(_) => panic!("the VAE was built from an unsupported config"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("up_block_types[1]") && msg.contains("AttnUpDecoderBlock2D"), "{msg}");
}

#[test]
fn unsupported_unet_options_are_named_in_the_error() {
    for (key, value, expect) in [
        ("addition_embed_type", serde_json::json!("image"), "addition_embed_type \"image\""),
        ("addition_embed_type", serde_json::json!("text_time"), "needs addition_time_embed_dim"),
        ("class_embed_type", serde_json::json!("timestep"), "class_embed_type \"timestep\""),
        ("dual_cross_attention", serde_json::json!(true), "dual_cross_attention"),
        ("act_fn", serde_json::json!("tanh"), "act_fn \"tanh\""),
        ("resnet_time_scale_shift", serde_json::json!("spatial"), "resnet_time_scale_shift \"spatial\""),
        (
            "attention_head_dim",
            serde_json::json!([2, 4, 8]),
            "attention_head_dim has 3 entries ([2, 4, 8]) but 2 are needed",
        ),
    ] {
        let msg = unet_error(&unet_config_with(key, value));
        assert!(msg.contains(expect), "{key}: {msg}");
    }
}

#[test]
fn unet_config_defaults_follow_diffusers() {
    let cfg: UNet2DConditionConfig =
        serde_json::from_str(r#"{"sample_size": 64, "some_future_key": 1}"#).expect("parses");
    assert_eq!(cfg.block_out_channels, vec![320, 640, 1280, 1280]);
    assert_eq!(cfg.in_channels, 4);
    assert!(cfg.flip_sin_to_cos && !cfg.use_linear_projection);
    assert_eq!(cfg.mid_block_type.as_deref(), Some("UNetMidBlock2DCrossAttn"));
    let cfg: AutoencoderKLConfig = serde_json::from_str("{}").expect("parses");
    assert_eq!((cfg.scaling_factor, cfg.latent_channels, cfg.scale_factor()), (0.18215, 4, 1));
    let cfg: ClipTextConfig = serde_json::from_str("{}").expect("parses");
    assert_eq!((cfg.hidden_act.as_str(), cfg.max_position_embeddings), ("quick_gelu", 77));
}

#[test]
fn a_missing_tensor_is_named_in_the_error() {
    let src = fixtures().join("tiny-sd/unet/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&src, &Device::Cpu).expect("unet weights");
    let missing = "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight";
    assert!(tensors.remove(missing).is_some(), "{missing} is not in the fixture");
    let dir = std::env::temp_dir().join(format!("candlewick-models-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("diffusion_pytorch_model.safetensors");
    candle_core::safetensors::save(&tensors, &path).expect("write weights");
    let cfg: UNet2DConditionConfig =
        candlewick_core::config::read_json(&fixtures().join("tiny-sd/unet/config.json")).expect("config");
    let vb = weights::open(&path, DType::F32, &Device::Cpu).expect("open");
    let result = weights::with_file(&path, || UNet2DConditionModel::new(vb, &cfg));
    let _ = std::fs::remove_dir_all(&dir);
    let msg = match result {
        Ok(_) => panic!("the UNet was built without {missing}"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains(missing) && msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
}
