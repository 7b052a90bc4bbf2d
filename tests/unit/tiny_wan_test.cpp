// tools/make_tiny_wan writes a model the real loaders and pipeline accept.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/tokenizer.h"
#include "models/wan_pipeline.h"
#include "test_util.h"

namespace beatfarm::models {
namespace {

// Batch elements are independent; only float re-association separates them.
bool test_close(const at::Tensor& a, const at::Tensor& b) {
  return at::allclose(a, b, /*rtol=*/1e-4, /*atol=*/1e-4);
}

std::string make_tiny(const test::TempDir& dir, const std::string& variant,
                      const std::string& extra = "") {
  std::string folder = dir.file(variant);
  std::string log;
  int code = test::run_command(std::string(BEATFARM_MAKE_TINY_WAN) + " --output " + folder +
                                   " --variant " + variant + " " + extra,
                               &log);
  EXPECT_EQ(code, 0) << log;
  return folder;
}

TEST(TinyWan, TwoExpertModelLoadsAndGenerates) {
  test::TempDir dir;
  std::string folder = make_tiny(dir, "wan2.2-a14b");
  for (const char* part : {"model_index.json", "transformer/config.json",
                           "transformer/diffusion_pytorch_model.safetensors",
                           "transformer_2/diffusion_pytorch_model.safetensors", "vae/config.json",
                           "text_encoder/model.safetensors", "tokenizer/spiece.model",
                           "scheduler/scheduler_config.json"})
    EXPECT_TRUE(std::filesystem::exists(folder + "/" + part)) << part;
  WanPipelineOptions options;
  options.dtype = at::kFloat;
  WanT2VPipeline pipeline = WanT2VPipeline::load(folder, options);
  ASSERT_TRUE(pipeline.config().boundary_ratio.has_value());
  EXPECT_DOUBLE_EQ(*pipeline.config().boundary_ratio, 0.875);
  at::Tensor embeds = pipeline.encode_prompts({"neon city lights at night", ""});
  EXPECT_EQ(embeds.sizes(), (at::IntArrayRef{2, 512, 32}));
  // Padding rows are zero; real tokens are not.
  EXPECT_GT(embeds[0][0].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(embeds[0][511].abs().sum().item<double>(), 0.0);
  GenerationParams params;
  params.num_frames = 5;
  params.height = 32;
  params.width = 48;
  params.steps = 3;
  at::Tensor latents = pipeline.initial_latents(1, params, 7);
  at::Tensor video =
      pipeline.generate(embeds.narrow(0, 0, 1), embeds.narrow(0, 1, 1), latents, params);
  EXPECT_EQ(video.sizes(), (at::IntArrayRef{1, 3, 5, 32, 48}));
  EXPECT_TRUE(at::isfinite(video).all().item<bool>());
  // The same seed renders the same frames.
  at::Tensor again = pipeline.generate(embeds.narrow(0, 0, 1), embeds.narrow(0, 1, 1),
                                       pipeline.initial_latents(1, params, 7), params);
  EXPECT_TRUE(at::equal(video, again));
}

TEST(TinyWan, ABatchOfClipsMatchesTheClipsRenderedAlone) {
  test::TempDir dir;
  WanPipelineOptions options;
  options.dtype = at::kFloat;
  WanT2VPipeline pipeline = WanT2VPipeline::load(make_tiny(dir, "wan2.1"), options);
  at::Tensor embeds = pipeline.encode_prompts({"glowing particles", "blurry"});
  GenerationParams params;
  params.num_frames = 5;
  params.height = 32;
  params.width = 48;
  params.steps = 2;
  at::Tensor a = pipeline.initial_latents(1, params, 11),
             b = pipeline.initial_latents(1, params, 12);
  at::Tensor batched =
      pipeline.generate(embeds.narrow(0, 0, 1).expand({2, -1, -1}),
                        embeds.narrow(0, 1, 1).expand({2, -1, -1}), at::cat({a, b}), params);
  at::Tensor alone = pipeline.generate(embeds.narrow(0, 0, 1), embeds.narrow(0, 1, 1), b, params);
  EXPECT_TRUE(test_close(batched[1], alone[0]));
}

TEST(TinyWan, OtherVariantsAndShapesLoad) {
  test::TempDir dir;
  WanPipelineOptions options;
  options.dtype = at::kFloat;
  WanT2VPipeline wan21 =
      WanT2VPipeline::load(make_tiny(dir, "wan2.1", "--heads 6 --layers 1"), options);
  EXPECT_FALSE(wan21.config().boundary_ratio.has_value());
  EXPECT_EQ(wan21.transformer().config().num_attention_heads, 6);
  WanT2VPipeline ti2v = WanT2VPipeline::load(make_tiny(dir, "wan2.2-ti2v"), options);
  EXPECT_TRUE(ti2v.config().expand_timesteps);
  EXPECT_EQ(ti2v.vae().config().scale_factor_spatial, 16);
  std::string log;
  EXPECT_EQ(test::run_command(std::string(BEATFARM_MAKE_TINY_WAN) + " --output " + dir.file("x") +
                                  " --variant sora",
                              &log),
            2);
  EXPECT_NE(log.find("--variant 'sora'"), std::string::npos) << log;
}

TEST(TinyWan, AMissingWeightIsAnErrorNamingIt) {
  test::TempDir dir;
  std::string folder = make_tiny(dir, "wan2.1");
  // Drop one block weight from the transformer.
  WeightFiles weights = WeightFiles::open(folder + "/transformer");
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (const std::string& name : weights.names())
    if (name != "blocks.1.ffn.net.2.weight")
      kept.emplace_back(name, load_tensor(weights, name, at::kFloat).clone());
  save_safetensors(folder + "/transformer/diffusion_pytorch_model.safetensors", kept);
  try {
    WanT2VPipeline::load(folder, WanPipelineOptions{});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.1.ffn.net.2.weight"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace beatfarm::models
