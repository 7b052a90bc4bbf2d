// FLF2V transitions: segment planning, retiming, and rendering with a tiny model written by
// tools/make_tiny_wan.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "common/error.h"
#include "render/flf2v_transition.h"
#include "test_util.h"
#include "torch_test_util.h"

namespace beatfarm::render {
namespace {

// One tiny FLF2V model for the whole suite (writing it takes a moment).
const std::string& tiny_flf2v_folder() {
  static test::TempDir dir("beatfarm_flf2v");
  static const std::string folder = [] {
    const std::string path = dir.file("wan2.1-flf2v");
    std::string log;
    const int code = test::run_command(
        std::string(BEATFARM_MAKE_TINY_WAN) + " --output " + path + " --variant wan2.1-flf2v",
        &log);
    if (code != 0) throw std::runtime_error("make_tiny_wan failed: " + log);
    return path;
  }();
  return folder;
}

models::WanPipelineOptions float_options() {
  models::WanPipelineOptions options;
  options.dtype = at::kFloat;
  options.offload = models::Offload::None;
  return options;
}

// A smooth colour field that differs between `phase` values.
Frame test_frame(int height, int width, double phase) {
  Frame frame{height, width, std::vector<uint8_t>(size_t(height) * width * 3)};
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c)
        frame.rgb[(size_t(y) * width + x) * 3 + c] =
            uint8_t(127.5 + 120 * std::sin(phase + 0.2 * x + 0.3 * y + 2.0 * c));
  return frame;
}

TEST(Flf2vTransition, PlansTheFewestEqualSegments) {
  TransitionPlan plan = plan_transition(5, 81);  // 7 frames with both ends -> 9
  EXPECT_EQ(plan.segments, 1);
  EXPECT_EQ(plan.frames_per_segment, 9);
  EXPECT_EQ(plan.generated_inner, 7);
  plan = plan_transition(3, 81);  // exactly 5
  EXPECT_EQ(plan.frames_per_segment, 5);
  EXPECT_EQ(plan.generated_inner, 3);
  EXPECT_EQ(plan_transition(0, 81).frames_per_segment, 5);
  plan = plan_transition(79, 81);  // 81 frames: one full generation
  EXPECT_EQ(plan.segments, 1);
  EXPECT_EQ(plan.frames_per_segment, 81);
  plan = plan_transition(80, 81);  // 82 frames: two segments of 45 sharing a joint
  EXPECT_EQ(plan.segments, 2);
  EXPECT_EQ(plan.frames_per_segment, 45);
  EXPECT_EQ(plan.generated_inner, 87);
  plan = plan_transition(200, 81);  // 201 steps over 3 segments of 68 -> 69 frames
  EXPECT_EQ(plan.segments, 3);
  EXPECT_EQ(plan.frames_per_segment, 69);
  EXPECT_GE(plan.generated_inner, 200);
  EXPECT_THROW(plan_transition(-1, 81), InputError);
  EXPECT_THROW(plan_transition(5, 80), InputError);
  EXPECT_THROW(plan_transition(5, 1), InputError);
}

TEST(Flf2vTransition, RetimingSpreadsTheGeneratedFramesEvenly) {
  // Same count: the generated inner frames themselves (positions 1..n).
  for (const RetimeSample& s : retime_samples(3, 3)) EXPECT_EQ(s.weight, 0.0);
  EXPECT_EQ(retime_samples(3, 3)[2].first, 3);
  // 7 generated -> 5: positions 8/6, 16/6, 24/6, 32/6, 40/6 of [0, 8].
  const std::vector<RetimeSample> down = retime_samples(5, 7);
  ASSERT_EQ(down.size(), 5u);
  EXPECT_EQ(down[0].first, 1);
  EXPECT_EQ(down[0].second, 2);
  EXPECT_NEAR(down[0].weight, 1.0 / 3, 1e-12);
  EXPECT_EQ(down[2].first, 4);
  EXPECT_EQ(down[2].weight, 0.0);
  EXPECT_EQ(down[4].first, 6);
  EXPECT_NEAR(down[4].weight, 2.0 / 3, 1e-12);
  // 3 generated -> 1: the middle one.
  EXPECT_EQ(retime_samples(1, 3)[0].first, 2);
  EXPECT_EQ(retime_samples(1, 3)[0].weight, 0.0);
  // Seeds: the given one first, then distinct derived ones.
  EXPECT_EQ(segment_seed(42, 0), 42u);
  EXPECT_NE(segment_seed(42, 1), 42u);
  EXPECT_NE(segment_seed(42, 1), segment_seed(42, 2));
  EXPECT_EQ(segment_seed(42, 1), segment_seed(42, 1));
}

TEST(Flf2vTransition, RendersFiveInnerFramesWithTheTinyModel) {
  Flf2vTransitionOptions options;
  options.steps = 2;
  Flf2vTransition transition = Flf2vTransition::load(tiny_flf2v_folder(), float_options(), options);
  const Frame from = test_frame(32, 48, 0.0), to = test_frame(32, 48, 2.0);
  std::vector<int> steps_seen;
  FrameStack frames = transition.render(from, to, 5, "neon city at night", "", 11,
                                        [&](int done, int total, double seconds) {
                                          EXPECT_EQ(total, 2);
                                          EXPECT_GE(seconds, 0.0);
                                          steps_seen.push_back(done);
                                        });
  EXPECT_EQ(steps_seen, (std::vector<int>{1, 2}));
  EXPECT_EQ(frames.count, 5);
  EXPECT_EQ(frames.height, 32);
  EXPECT_EQ(frames.width, 48);
  ASSERT_EQ(frames.rgb.size(), size_t(5) * 32 * 48 * 3);
  // Reproducible per seed, different across seeds.
  FrameStack again = transition.render(from, to, 5, "neon city at night", "", 11);
  EXPECT_EQ(frames.rgb, again.rgb);
  FrameStack other = transition.render(from, to, 5, "neon city at night", "", 12);
  EXPECT_NE(frames.rgb, other.rgb);
  // No frames between: nothing to generate.
  EXPECT_EQ(transition.render(from, to, 0, "x", "", 1).count, 0);
}

TEST(Flf2vTransition, ChainsSegmentsWhenTheTransitionIsLong) {
  Flf2vTransitionOptions options;
  options.steps = 2;
  options.max_frames = 5;  // n = 6 -> 8 frames -> two 5-frame segments sharing a joint
  Flf2vTransition transition = Flf2vTransition::load(tiny_flf2v_folder(), float_options(), options);
  // A size that is not a multiple of 16: generated at 32x48, returned at 40x52.
  const Frame from = test_frame(40, 52, 0.5), to = test_frame(40, 52, 2.5);
  int last_done = 0, calls = 0;
  FrameStack frames = transition.render(from, to, 6, "smooth morphing between scenes", "blurry", 5,
                                        [&](int done, int total, double) {
                                          EXPECT_EQ(total, 4);
                                          EXPECT_EQ(done, last_done + 1);
                                          last_done = done;
                                          ++calls;
                                        });
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(frames.count, 6);
  EXPECT_EQ(frames.height, 40);
  EXPECT_EQ(frames.width, 52);
  // A cancelling callback stops the render.
  EXPECT_THROW(transition.render(from, to, 6, "x", "", 5,
                                 [](int done, int, double) {
                                   if (done == 3) throw std::runtime_error("cancelled");
                                 }),
               std::runtime_error);
}

// A Frame as uint8 [H, W, 3].
at::Tensor frame_tensor(const Frame& frame) {
  return at::from_blob(const_cast<uint8_t*>(frame.rgb.data()), {frame.height, frame.width, 3},
                       at::kByte)
      .clone();  // [H, W, 3]
}

// A FrameStack as uint8 [T, H, W, 3].
at::Tensor stack_tensor(const FrameStack& stack) {
  return at::from_blob(const_cast<uint8_t*>(stack.rgb.data()),
                       {stack.count, stack.height, stack.width, 3}, at::kByte)
      .clone();  // [T, H, W, 3]
}

// What render() asks the pipeline for, built by hand: one generation of `num_frames` at the
// frames' size (a multiple of 16, so nothing is resized) from `first` (to `last` when given),
// CLIP context [first, to], noise of `seed`. uint8 frames [G, H, W, 3].
at::Tensor generate_by_hand(models::WanImageToVideoPipeline& pipeline,
                            const Flf2vTransitionOptions& options, const at::Tensor& first,
                            const at::Tensor& last, const at::Tensor& to, int num_frames,
                            const std::string& prompt, const std::string& negative_prompt,
                            uint64_t seed) {
  models::GenerationParams params;
  params.num_frames = num_frames;
  params.height = int(first.size(0));
  params.width = int(first.size(1));
  params.steps = options.steps;
  params.guidance_scale = options.guidance_scale;
  params.flow_shift = options.flow_shift;
  params = pipeline.with_defaults(params);
  const at::Tensor prompts = pipeline.encode_prompts({prompt, negative_prompt});  // [2, 512, D]
  const at::Tensor video = pipeline.generate(
      prompts.narrow(0, 0, 1), prompts.narrow(0, 1, 1), pipeline.initial_latents(1, params, seed),
      first, last, params, pipeline.encode_images({first, to}));  // [1, 3, G, H, W]
  return models::video_to_frames_u8(video)[0];                    // [G, H, W, 3]
}

TEST(Flf2vTransition, OneSegmentIsTheInnerFramesOfOneGeneration) {
  Flf2vTransitionOptions options;
  options.steps = 2;
  Flf2vTransition transition = Flf2vTransition::load(tiny_flf2v_folder(), float_options(), options);
  const Frame from = test_frame(32, 48, 0.0), to = test_frame(32, 48, 2.0);
  // n = 3: one 5-frame generation, its 3 inner frames as they are.
  ASSERT_EQ(plan_transition(3, options.max_frames).generated_inner, 3);
  const FrameStack frames = transition.render(from, to, 3, "neon city at night", "dull", 11);
  const at::Tensor to_image = frame_tensor(to);
  const at::Tensor expected =
      generate_by_hand(transition.pipeline(), options, frame_tensor(from), to_image, to_image, 5,
                       "neon city at night", "dull", 11);  // [5, 32, 48, 3]
  EXPECT_TRUE(at::equal(stack_tensor(frames), expected.narrow(0, 1, 3)));
}

TEST(Flf2vTransition, ChainedSegmentsAndRetimingMatchHandMadeGenerations) {
  Flf2vTransitionOptions options;
  options.steps = 2;
  options.max_frames = 5;
  Flf2vTransition transition = Flf2vTransition::load(tiny_flf2v_folder(), float_options(), options);
  const Frame from = test_frame(32, 48, 0.5), to = test_frame(32, 48, 2.5);
  const std::string prompt = "smooth morphing between scenes", negative = "blurry";
  const uint64_t seed = 5;
  // n = 7 and n = 6 both plan two 5-frame segments: 9 generated frames, 7 inner.
  for (int n : {6, 7}) {
    const TransitionPlan plan = plan_transition(n, options.max_frames);
    ASSERT_EQ(plan.segments, 2);
    ASSERT_EQ(plan.frames_per_segment, 5);
    ASSERT_EQ(plan.generated_inner, 7);
  }
  // By hand: an I2V segment from `from` (CLIP context still [from, to]), then an FLF2V segment
  // from its last frame to `to`, with the second segment's derived seed.
  const at::Tensor to_image = frame_tensor(to);
  const at::Tensor first = generate_by_hand(transition.pipeline(), options, frame_tensor(from), {},
                                            to_image, 5, prompt, negative, segment_seed(seed, 0));
  const at::Tensor joint = first[4].contiguous();  // [32, 48, 3]
  const at::Tensor second = generate_by_hand(transition.pipeline(), options, joint, to_image,
                                             to_image, 5, prompt, negative, segment_seed(seed, 1));
  const at::Tensor generated = at::cat({first, second.narrow(0, 1, 4)}, 0);  // [9, 32, 48, 3]
  ASSERT_FALSE(at::equal(first.narrow(0, 1, 4), second.narrow(0, 1, 4)));

  const at::Tensor seven = stack_tensor(transition.render(from, to, 7, prompt, negative, seed));
  EXPECT_TRUE(at::equal(seven, generated.narrow(0, 1, 7)));

  // n = 6 from 7: output j sits at (j + 1) * 8 / 7 on the generated frames 0..8, blended
  // linearly between its two neighbours (rounded to uint8).
  const at::Tensor six = stack_tensor(transition.render(from, to, 6, prompt, negative, seed));
  ASSERT_EQ(six.size(0), 6);
  const at::Tensor as_double = generated.to(at::kDouble);
  double largest_step = 0;
  for (int j = 0; j < 6; ++j) {
    const double position = (j + 1) * 8.0 / 7.0;
    const int below = int(std::floor(position));
    const double weight = position - below;
    const at::Tensor blend =
        as_double[below] * (1 - weight) + as_double[below + 1] * weight;  // [32, 48, 3]
    const double error = (six[j].to(at::kDouble) - blend).abs().max().item<double>();
    EXPECT_LE(error, 0.5 + 1e-6) << "frame " << j;  // rounding only
    largest_step = std::max(largest_step,
                            (as_double[below + 1] - as_double[below]).abs().max().item<double>());
  }
  // The neighbours differ enough for a wrong pick or weight to show.
  EXPECT_GT(largest_step, 8.0);
}

TEST(Flf2vTransition, RefusesSingleImageModelsAndBadFrames) {
  test::TempDir dir;
  const std::string i2v = dir.file("wan2.1-i2v");
  std::string log;
  ASSERT_EQ(
      test::run_command(
          std::string(BEATFARM_MAKE_TINY_WAN) + " --output " + i2v + " --variant wan2.1-i2v", &log),
      0)
      << log;
  EXPECT_THROW(Flf2vTransition::load(i2v, float_options()), InputError);

  Flf2vTransitionOptions options;
  options.steps = 1;
  Flf2vTransition transition = Flf2vTransition::load(tiny_flf2v_folder(), float_options(), options);
  Frame broken = test_frame(32, 48, 0.0);
  broken.rgb.resize(10);
  EXPECT_THROW(transition.render(broken, test_frame(32, 48, 1.0), 3, "x", "", 1), Error);
  options.max_frames = 8;
  EXPECT_THROW(Flf2vTransition::load(tiny_flf2v_folder(), float_options(), options), InputError);
}

}  // namespace
}  // namespace beatfarm::render
