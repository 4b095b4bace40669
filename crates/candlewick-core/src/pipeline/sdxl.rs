//! What `StableDiffusionXLPipeline` adds to the text-to-image steps besides its prompt encoding
//! ([`super::sdxl_encode_prompt`]): the size conditions (`add_time_ids`) the UNet's `text_time`
//! embedding reads (the options themselves, [`SizeConditions`], are in options.rs),
//! `denoising_start` / `denoising_end` and the layout check. The VAE's upcast is decided at load
//! (`Components::vae_needs_upcasting`).

use std::path::Path;

use super::components::Components;
use super::options::{SizeConditions, MAX_SIDE};
use crate::error::{expected, Error, Result};

/// The largest size condition (pixels): SDXL was trained on sizes up to 4096; a little room.
const MAX_CONDITION: usize = 16 * MAX_SIDE;

/// Which of diffusers' `_get_add_time_ids` a call follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeIds {
    /// `StableDiffusionXLPipeline`: the negatives only when both negative sizes are given.
    TextToImage,
    /// `StableDiffusionXLImg2ImgPipeline`: each negative size defaults to its positive; with
    /// `aesthetic`, the target size is replaced by the aesthetic score (5 conditions).
    ImageToImage { aesthetic: bool },
}

impl SizeConditions {
    /// Each value in range; messages name the option.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("original_size", self.original_size),
            ("target_size", self.target_size),
            ("negative_original_size", self.negative_original_size),
            ("negative_target_size", self.negative_target_size),
        ];
        for (name, size) in sizes {
            if let Some([h, w]) = size {
                if !(1..=MAX_CONDITION).contains(&h) || !(1..=MAX_CONDITION).contains(&w) {
                    let what = format!("[height, width] of integers between 1 and {MAX_CONDITION}");
                    return Err(expected(&what, name, format!("[{h}, {w}]")));
                }
            }
        }
        for (name, score) in
            [("aesthetic_score", self.aesthetic_score), ("negative_aesthetic_score", self.negative_aesthetic_score)]
        {
            if !score.is_finite() || score.abs() > 1e6 {
                return Err(expected("finite number between -1e6 and 1e6", name, score));
            }
        }
        for (name, [top, left]) in [
            ("crops_coords_top_left", self.crops_coords_top_left),
            ("negative_crops_coords_top_left", self.negative_crops_coords_top_left),
        ] {
            if top > MAX_CONDITION || left > MAX_CONDITION {
                let what = format!("[top, left] of integers between 0 and {MAX_CONDITION}");
                return Err(expected(&what, name, format!("[{top}, {left}]")));
            }
        }
        Ok(())
    }

    /// The first option set, for an error on a model without size conditions.
    pub fn first_set(&self) -> Option<&'static str> {
        let d = Self::default();
        [
            ("original_size", self.original_size != d.original_size),
            ("crops_coords_top_left", self.crops_coords_top_left != d.crops_coords_top_left),
            ("target_size", self.target_size != d.target_size),
            ("negative_original_size", self.negative_original_size != d.negative_original_size),
            ("negative_crops_coords_top_left", self.negative_crops_coords_top_left != d.negative_crops_coords_top_left),
            ("negative_target_size", self.negative_target_size != d.negative_target_size),
            ("aesthetic_score", self.aesthetic_score != d.aesthetic_score),
            ("negative_aesthetic_score", self.negative_aesthetic_score != d.negative_aesthetic_score),
        ]
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(name, _)| name)
    }

    /// The conditions as a call with an output of `height` x `width` runs them (unset sizes filled
    /// in; the negatives only when both are given, as they are used).
    pub fn resolved(&self, height: usize, width: usize) -> SizeConditions {
        let output = Some([height, width]);
        let negatives = self.negative_original_size.is_some() && self.negative_target_size.is_some();
        SizeConditions {
            original_size: self.original_size.or(output),
            target_size: self.target_size.or(output),
            negative_original_size: self.negative_original_size.filter(|_| negatives),
            negative_target_size: self.negative_target_size.filter(|_| negatives),
            negative_crops_coords_top_left: if negatives { self.negative_crops_coords_top_left } else { [0, 0] },
            ..self.clone()
        }
    }

    /// diffusers' `_get_add_time_ids` for the conditional and the unconditional rows.
    pub(super) fn time_ids(&self, height: usize, width: usize, mode: TimeIds) -> (Vec<f32>, Vec<f32>) {
        let f = |v: &[usize]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let output = [height, width];
        let (original, target) = (self.original_size.unwrap_or(output), self.target_size.unwrap_or(output));
        let crop = self.crops_coords_top_left;
        let positive = f(&[original[0], original[1], crop[0], crop[1], target[0], target[1]]);
        match mode {
            TimeIds::TextToImage => {
                let negative = match (self.negative_original_size, self.negative_target_size) {
                    (Some(o), Some(t)) => {
                        let c = self.negative_crops_coords_top_left;
                        f(&[o[0], o[1], c[0], c[1], t[0], t[1]])
                    }
                    _ => positive.clone(),
                };
                (positive, negative)
            }
            TimeIds::ImageToImage { aesthetic } => {
                let n_original = self.negative_original_size.unwrap_or(original);
                let n_target = self.negative_target_size.unwrap_or(target);
                if aesthetic {
                    let n_crop = self.negative_crops_coords_top_left;
                    let mut p = f(&[original[0], original[1], crop[0], crop[1]]);
                    p.push(self.aesthetic_score as f32);
                    let mut n = f(&[n_original[0], n_original[1], n_crop[0], n_crop[1]]);
                    n.push(self.negative_aesthetic_score as f32);
                    (p, n)
                } else {
                    (positive, f(&[n_original[0], n_original[1], crop[0], crop[1], n_target[0], n_target[1]]))
                }
            }
        }
    }
}

/// diffusers' `get_timesteps` with `denoising_start` (`StableDiffusionXLImg2ImgPipeline`): the index
/// the run starts at, the timesteps below round(num_train_timesteps * (1 - denoising_start)) (one
/// more for a second-order scheduler when even).
pub(super) fn denoising_start_index(
    timesteps: &[f64],
    denoising_start: f64,
    num_train_timesteps: usize,
    order: usize,
) -> usize {
    let n = num_train_timesteps as f64;
    let cutoff = (n - denoising_start * n).round_ties_even();
    let mut steps = timesteps.iter().filter(|&&t| t < cutoff).count();
    if order == 2 && steps % 2 == 0 {
        steps += 1;
    }
    timesteps.len().saturating_sub(steps)
}

/// How many of `timesteps` run under `denoising_end` (diffusers' `StableDiffusionXLPipeline`: those
/// at or above round(num_train_timesteps * (1 - denoising_end))).
pub(super) fn denoising_end_index(timesteps: &[f64], denoising_end: f64, num_train_timesteps: usize) -> usize {
    let n = num_train_timesteps as f64;
    let cutoff = (n - denoising_end * n).round_ties_even();
    timesteps.iter().filter(|&&t| t >= cutoff).count()
}

/// The UNet and the folder agree: an SDXL UNet (`text_time`) needs both text encoders, and two
/// text encoders need an SDXL UNet.
pub(super) fn check_layout(c: &Components, model_index: &Path, class_name: &str) -> Result<()> {
    let message = match (c.unet.model.takes_text_time(), c.text_encoder_2.is_some()) {
        (true, false) => {
            "the UNet takes SDXL's added conditions (addition_embed_type \"text_time\") but there is no text_encoder_2"
        }
        (false, true) => "there is a text_encoder_2 but the UNet has no addition_embed_type \"text_time\"",
        _ => return Ok(()),
    };
    Err(Error::model(model_index, format!("_class_name is {class_name:?} and {message}")))
}
