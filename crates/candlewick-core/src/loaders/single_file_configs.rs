//! The configs diffusers' `from_single_file` takes for an SD1.x checkpoint when none is given: those
//! of its default repositories (`stable-diffusion-v1-5/stable-diffusion-v1-5`, and
//! `stable-diffusion-v1-5/stable-diffusion-inpainting` for 9 input channels), which are the
//! values of the original `v1-inference.yaml`. Built in because nothing is downloaded at load.
//! Only the fields that differ from the config structs' diffusers defaults are written.

/// unet/config.json (`in_channels` is set from the checkpoint: 4, or 9 for inpainting).
pub const SD1_UNET: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

/// vae/config.json.
pub const SD1_VAE: &str = r#"{
  "_class_name": "AutoencoderKL",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

/// text_encoder/config.json (openai/clip-vit-large-patch14's text model).
pub const SD1_TEXT_ENCODER: &str = r#"{
  "architectures": ["CLIPTextModel"],
  "bos_token_id": 0,
  "eos_token_id": 2,
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "projection_dim": 768,
  "vocab_size": 49408
}"#;

/// scheduler/scheduler_config.json.
pub const SD1_SCHEDULER: &str = r#"{
  "_class_name": "PNDMScheduler",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null
}"#;

/// model_index.json of a folder `candlewick convert` writes (`{class}` is the pipeline class).
pub fn model_index(class: &str, scheduler_class: &str) -> String {
    format!(
        r#"{{
  "_class_name": "{class}",
  "feature_extractor": [null, null],
  "requires_safety_checker": false,
  "safety_checker": [null, null],
  "scheduler": ["diffusers", "{scheduler_class}"],
  "text_encoder": ["transformers", "CLIPTextModel"],
  "tokenizer": ["transformers", "CLIPTokenizer"],
  "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]
}}
"#
    )
}

/// model_index.json of an SDXL folder `candlewick convert` writes, as diffusers' `save_pretrained`
/// of `StableDiffusionXLPipeline` / `StableDiffusionXLImg2ImgPipeline` (`refiner`: no first
/// tokenizer and text encoder); the flags are the `config` folder's.
pub fn model_index_xl(
    class: &str,
    scheduler_class: &str,
    refiner: bool,
    force_zeros_for_empty_prompt: bool,
    requires_aesthetics_score: bool,
) -> String {
    let first = |library: &str, class: &str| {
        if refiner {
            "[null, null]".to_string()
        } else {
            format!(r#"["{library}", "{class}"]"#)
        }
    };
    // save_pretrained writes the flag for the classes that register it (image to image, inpainting).
    let aesthetics = if class.contains("Img2Img") || class.contains("Inpaint") {
        format!("\n  \"requires_aesthetics_score\": {requires_aesthetics_score},")
    } else {
        String::new()
    };
    format!(
        r#"{{
  "_class_name": "{class}",
  "feature_extractor": [null, null],
  "force_zeros_for_empty_prompt": {force_zeros_for_empty_prompt},
  "image_encoder": [null, null],{aesthetics}
  "scheduler": ["diffusers", "{scheduler_class}"],
  "text_encoder": {},
  "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
  "tokenizer": {},
  "tokenizer_2": ["transformers", "CLIPTokenizer"],
  "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]
}}
"#,
        first("transformers", "CLIPTextModel"),
        first("transformers", "CLIPTokenizer")
    )
}
