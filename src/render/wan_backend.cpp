#include "render/wan_backend.h"

#include <ATen/Context.h>

#include <chrono>
#include <cstring>
#include <map>

#include "common/error.h"
#include "common/log.h"
#include "models/wan_pipeline.h"
#include "interp/bim_vfi.h"
#include "interp/flow_interp.h"
#include "render/flf2v_transition.h"

namespace beatfarm::render {
namespace {

at::Device pick_device(const std::string& name) {
  if (name == "cpu") return at::kCPU;
  if (name == "cuda") {
    if (!at::hasCUDA())
      throw InputError("--device cuda: this libtorch has no CUDA or no GPU is visible");
    return at::kCUDA;
  }
  return at::hasCUDA() ? at::Device(at::kCUDA) : at::Device(at::kCPU);
}

class WanBackend : public Backend {
 public:
  explicit WanBackend(const WanBackendOptions& options)
      : options_(options) {
    models::WanPipelineOptions pipeline;
    if (options.dtype == "bf16")
      pipeline.dtype = at::kBFloat16;
    else if (options.dtype == "fp32")
      pipeline.dtype = at::kFloat;
    else
      throw InputError(str("--dtype '", options.dtype, "' is not one of bf16|fp32"));
    pipeline.device = pick_device(options.device);
    if (pipeline.device.is_cuda() && options.cuda_device >= 0)
      pipeline.device = at::Device(at::kCUDA, at::DeviceIndex(options.cuda_device));
    pipeline.tp = models::tensor_parallel(options.tp_group);
    pipeline.offload = models::offload_from_string(options.cpu_offload);
    pipeline.text_encoder_on_cpu = options.text_encoder_cpu;
    pipeline_options_ = pipeline;
    const auto start = std::chrono::steady_clock::now();
    pipeline_ = std::make_unique<models::WanT2VPipeline>(
        models::WanT2VPipeline::load(options.model, pipeline));
    if (!pipeline_->has_text_encoder())
      throw InputError(str("model '", options.model_id,
                           "' has no text_encoder/tokenizer: it cannot encode prompts"));
    params_.steps = options.steps;
    params_.guidance_scale = options.guidance_scale;
    params_.guidance_scale_2 = options.guidance_scale_2;
    params_.flow_shift = options.flow_shift;
    params_ = pipeline_->with_defaults(params_);
    log_info("wan: loaded ", options.model_id, " on ", pipeline.device.str(), " (", options.dtype,
             ", offload ", options.cpu_offload,
             pipeline.tp.active() ? str(", tensor-parallel rank ", pipeline.tp.rank, " of ",
                                        pipeline.tp.size)
                                  : std::string(),
             ") in ",
             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
             " s; ", params_.steps, " steps, guidance ", params_.guidance_scale);
  }

  std::string name() const override { return "wan"; }
  std::string model_id() const override { return options_.model_id; }
  int steps() const override { return params_.steps; }

  FrameStack render_peak(const PeakRequest& request, const ProgressFn& progress) override {
    return generate(request, {request.seed}, progress);
  }

  // --batch-size: the clips of one task go through the transformer as one batch.
  FrameStack render_peaks(const PeakRequest& request, const ProgressFn& progress) override {
    if (request.clip_seeds.empty()) return render_peak(request, progress);
    return generate(request, request.clip_seeds, progress);
  }

  // Transitions by their planned method; each model is loaded on first use (peaks are
  // dispatched first, so a rank loads the FLF2V model once it is done with T2V).
  FrameStack render_transition(const TransitionRequest& request,
                               const ProgressFn& progress) override {
    if (request.method == "flf2v") {
      if (!flf2v_) {
        if (options_.flf2v_model.empty())
          throw InputError(str(request.name, ": --flf2v-model '", options_.flf2v_model_id,
                               "' is not available"));
        Flf2vTransitionOptions transition;
        transition.steps = options_.steps;
        transition.guidance_scale = options_.guidance_scale;
        transition.flow_shift = options_.flow_shift;
        const auto start = std::chrono::steady_clock::now();
        flf2v_ = std::make_unique<Flf2vTransition>(
            Flf2vTransition::load(options_.flf2v_model, pipeline_options_, transition));
        log_info("wan: loaded ", options_.flf2v_model_id, " (FLF2V) in ",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                 " s");
      }
      return flf2v_->render(request.from, request.to, request.frames, request.prompt,
                            request.negative_prompt, request.seed, progress);
    }
    if (request.method == "bim") {
      if (!bim_) {
        if (options_.bim_weights.empty())
          throw InputError(str(request.name, ": BiM-VFI needs --bim-weights"));
        bim_ = std::make_unique<interp::BimVfi>(
            interp::BimVfi::load(options_.bim_weights, pipeline_options_.device));
        log_info("wan: loaded BiM-VFI from ", options_.bim_weights);
      }
      FrameStack frames = bim_->between(request.from, request.to, request.frames);
      if (progress) progress(request.frames, request.frames, 0.0);
      return frames;
    }
    if (request.method == "flow") {
      FrameStack frames = interp::interpolate_flow(request.from, request.to, request.frames);
      if (progress) progress(request.frames, request.frames, 0.0);
      return frames;
    }
    throw Error(str(request.name, ": the wan backend has no transition method '", request.method,
                    "'"));
  }

 private:
  // One clip per seed, each from its own seeded noise, denoised together.
  FrameStack generate(const PeakRequest& request, const std::vector<uint64_t>& seeds,
                      const ProgressFn& progress) {
    models::GenerationParams params = params_;
    params.num_frames = request.frames;
    params.height = request.height;
    params.width = request.width;
    const int64_t clips = int64_t(seeds.size());
    std::vector<at::Tensor> noise;
    for (uint64_t seed : seeds) noise.push_back(pipeline_->initial_latents(1, params, seed));
    const at::Tensor latents = at::cat(noise, 0);  // [clips, z, f, h, w]
    const at::Tensor positive = embeddings(request.prompt).expand({clips, -1, -1});
    const at::Tensor negative = params.guidance_scale > 1.0
                                    ? embeddings(request.negative_prompt).expand({clips, -1, -1})
                                    : at::Tensor();
    at::Tensor video = pipeline_->generate(positive, negative, latents, params,
                                           [&](int step, int steps, double seconds) {
                                             if (progress) progress(step, steps, seconds);
                                           });
    at::Tensor frames = models::video_to_frames_u8(video);  // [clips, F, H, W, 3]
    if (frames.size(1) != request.frames || frames.size(2) != request.height ||
        frames.size(3) != request.width)
      throw Error(str(request.name, ": the pipeline made ", frames.size(1), "x", frames.size(2),
                      "x", frames.size(3), " frames, expected ", request.frames, "x",
                      request.height, "x", request.width));
    frames =
        frames.reshape({clips * request.frames, request.height, request.width, 3}).contiguous();
    FrameStack stack(int(frames.size(0)), request.height, request.width);
    std::memcpy(stack.rgb.data(), frames.data_ptr<uint8_t>(), stack.rgb.size());
    return stack;
  }

  // A job has few distinct prompts: encode each once per rank.
  at::Tensor embeddings(const std::string& prompt) {
    auto found = embeddings_.find(prompt);
    if (found != embeddings_.end()) return found->second;
    at::Tensor embeds = pipeline_->encode_prompts({prompt});
    embeddings_.emplace(prompt, embeds);
    return embeds;
  }

  WanBackendOptions options_;
  std::unique_ptr<models::WanT2VPipeline> pipeline_;
  models::WanPipelineOptions pipeline_options_;
  std::unique_ptr<Flf2vTransition> flf2v_;
  std::unique_ptr<interp::BimVfi> bim_;
  models::GenerationParams params_;
  std::map<std::string, at::Tensor> embeddings_;
};

}  // namespace

std::unique_ptr<Backend> make_wan_backend(const WanBackendOptions& options) {
  return std::make_unique<WanBackend>(options);
}

}  // namespace beatfarm::render
