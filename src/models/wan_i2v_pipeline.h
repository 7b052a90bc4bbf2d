// Wan image-to-video (Diffusers WanImageToVideoPipeline semantics): Wan2.1 I2V (first frame),
// Wan2.1 FLF2V (first and last frame) and Wan2.2 A14B I2V (no CLIP branch). The denoising loop
// is WanT2VPipeline's; this class builds its image condition: the condition video [image,
// zeros, (last_image)] in [-1, 1] -> VAE posterior mean -> normalised latents, the frame mask
// and the CLIP image embeddings.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/frames.h"
#include "models/clip_vision.h"
#include "models/wan_pipeline.h"

namespace beatfarm::models {

// A Frame (uint8 RGB [H, W, 3]) as a float32 image [1, 3, H, W] in [0, 1].
at::Tensor image_from_frame(const Frame& frame);

// The Diffusers FLF2V recipe for a last frame of another size: scale it to cover width x height
// (ratio max(W/w, H/h), sizes rounded) and centre-crop it to exactly width x height.
// image [1, 3, h, w] float in [0, 1] -> [1, 3, height, width].
at::Tensor cover_and_center_crop(const at::Tensor& image, int64_t height, int64_t width);

// What prepare_condition computed, for the golden checks.
struct ImageConditionIntermediates {
  at::Tensor vae_encode_input;      // [1, 3, F, H, W] in [-1, 1]
  at::Tensor latent_condition_raw;  // [1, z, f, h, w] posterior mean
};

// From the config files alone: `folder` is an image-to-video pipeline (its transformer takes
// the noisy latents, 4 mask channels and the condition latents: in_channels = 2 z_dim + 4).
// InputError saying what it is instead.
void check_image_to_video_folder(const std::string& folder);

class WanImageToVideoPipeline {
 public:
  // A Diffusers folder with model_index.json: text_encoder, tokenizer, transformer,
  // [transformer_2], vae, scheduler and, for Wan2.1 I2V/FLF2V, image_encoder and image_processor.
  static WanImageToVideoPipeline load(const std::string& folder, const WanPipelineOptions& options);
  // From components. The image encoder may be null when image embeddings are supplied to
  // generate (the golden test) or the transformer has no image branch.
  WanImageToVideoPipeline(WanT2VPipeline base, std::shared_ptr<ClipVisionEncoder> image_encoder,
                          const ClipImageProcessorConfig& image_processor);

  // [B, 512, text_dim] float32 (WanT2VPipeline::encode_prompts).
  at::Tensor encode_prompts(const std::vector<std::string>& prompts) {
    return base_.encode_prompts(prompts);
  }
  // Standard normal latents [B, z, f, h, w] from a seed (WanT2VPipeline::initial_latents).
  at::Tensor initial_latents(int batch, const GenerationParams& params, uint64_t seed) const {
    return base_.initial_latents(batch, params, seed);
  }

  // CLIP penultimate hidden states of each image: images float [1, 3, H, W] in [0, 1] or uint8
  // [H, W, 3] -> [N, S, image_dim] float32 (Diffusers' encode_image on N images).
  at::Tensor encode_images(const std::vector<at::Tensor>& images) const;

  // The transformer's condition channels [batch, 4 + z, f, h, w] float32: mask then normalised
  // latents of [image, zeros(F - 1)] (I2V) or [image, zeros(F - 2), last_image] (FLF2V). Images
  // are float [1, 3, H, W] in [0, 1] (or uint8 [H, W, 3]); resized to params.height x width
  // when they differ (antialiased bicubic); a last image of another size is first
  // cover-and-centre-cropped to the first's size.
  at::Tensor prepare_condition(const at::Tensor& image, const at::Tensor& last_image,
                               const GenerationParams& params, int64_t batch,
                               ImageConditionIntermediates* intermediates = nullptr) const;

  // Denoises `latents` [B, z, f, h, w] conditioned on `image` (and `last_image`: FLF2V) and
  // decodes: video [B, 3, F, H, W] in [-1, 1], float32. `image_embeds` [n, S, image_dim]
  // (n = 1, or 2 for FLF2V models: first, last) replaces the CLIP encoding of the images when
  // given; with an FLF2V model and no last image it must be given (the CLIP context of two
  // images while only the first frame is pinned).
  at::Tensor generate(const at::Tensor& prompt_embeds, const at::Tensor& negative_prompt_embeds,
                      const at::Tensor& latents, const at::Tensor& image,
                      const at::Tensor& last_image, const GenerationParams& params,
                      const at::Tensor& image_embeds = {}, const StepCallback& on_step = {},
                      PipelineTrace* trace = nullptr, at::Tensor* vae_decode_input = nullptr,
                      ImageConditionIntermediates* intermediates = nullptr,
                      at::Tensor* condition = nullptr);

  GenerationParams with_defaults(GenerationParams params) const {
    return base_.with_defaults(params);
  }
  // The transformer takes two CLIP images (Wan2.1 FLF2V: pos_embed over 2 x 257 tokens).
  bool two_image_context() const { return base_.transformer().config().pos_embed_seq_len > 0; }
  // The transformer has a CLIP branch (Wan2.1 I2V/FLF2V; not Wan2.2 A14B I2V).
  bool uses_image_embeds() const { return base_.transformer().config().image_dim > 0; }
  bool has_text_encoder() const { return base_.has_text_encoder(); }
  const WanT2VPipeline& base() const { return base_; }
  const WanVae& vae() const { return base_.vae(); }

 private:
  WanT2VPipeline base_;
  std::shared_ptr<ClipVisionEncoder> image_encoder_;
  ClipImageProcessorConfig image_processor_;
};

}  // namespace beatfarm::models
