// The Wan schedulers against the Diffusers golden traces (tests/data/golden/scheduler/).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "common/error.h"
#include "models/schedulers.h"
#include "test_util.h"
#include "torch_test_util.h"

namespace beatfarm::models {
namespace {

// README: sigmas within one float32 ulp of values <= 1; traces to float re-association.
constexpr double kSigmaAtol = 1e-7;
constexpr double kTraceTolerance = 1e-5;
constexpr double kLongTraceTolerance = 1e-4;  // 50 steps accumulate rounding
constexpr int kLongTraceSteps = 50;

struct GoldenCase {
  std::string folder;  // under golden/scheduler/
  int steps;
};

std::string case_name(const ::testing::TestParamInfo<GoldenCase>& info) {
  return info.param.folder + "_" + std::to_string(info.param.steps);
}

std::vector<GoldenCase> all_cases() {
  std::vector<GoldenCase> cases;
  for (const char* folder :
       {"unipc_shift3", "unipc_shift5", "unipc_shift16", "euler_shift3", "euler_shift5"}) {
    for (int steps : {4, 10, 50}) cases.push_back({folder, steps});
  }
  return cases;
}

double max_abs_error(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

class DiffusionSchedulerGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(DiffusionSchedulerGolden, MatchesDiffusersTrace) {
  const GoldenCase& c = GetParam();
  const std::string folder = "scheduler/" + c.folder;
  const std::string file = folder + "/steps" + std::to_string(c.steps) + ".safetensors";
  auto golden = [&](const std::string& name) { return test::golden_tensor(file, name); };

  std::unique_ptr<Scheduler> scheduler = load_scheduler(test::golden_path(folder));
  const bool unipc = c.folder.rfind("unipc", 0) == 0;
  EXPECT_EQ(scheduler->class_name(),
            unipc ? "UniPCMultistepScheduler" : "FlowMatchEulerDiscreteScheduler");
  scheduler->set_timesteps(c.steps);

  // Timesteps exact (int64 for UniPC, float32 for Euler), sigmas within one ulp.
  const at::Tensor timesteps = golden("timesteps");
  ASSERT_EQ(scheduler->timesteps().scalar_type(), unipc ? at::kLong : at::kFloat);
  EXPECT_TRUE(at::equal(scheduler->timesteps(), timesteps))
      << scheduler->timesteps() << "\nexpected\n"
      << timesteps;
  EXPECT_TRUE(test::all_close(scheduler->sigmas(), golden("sigmas"), kSigmaAtol, 0));

  // Replay: model_output_i = 0.5 * sample_i + noise.
  const double tolerance = c.steps >= kLongTraceSteps ? kLongTraceTolerance : kTraceTolerance;
  const at::Tensor noise = golden("noise");
  const at::Tensor prev_golden = golden("prev_sample");
  at::Tensor x0_golden, corrected_golden, order_golden;
  if (unipc) {
    x0_golden = golden("x0_pred");
    corrected_golden = golden("corrected_sample");
    order_golden = golden("this_order");
  }
  auto* unipc_scheduler = dynamic_cast<UniPCMultistepScheduler*>(scheduler.get());
  at::Tensor sample = golden("sample_0");
  double prev_error = 0, x0_error = 0, corrected_error = 0;
  for (int i = 0; i < c.steps; ++i) {
    const at::Tensor model_output = 0.5 * sample + noise;
    const at::Tensor prev = scheduler->step(model_output, i, sample);
    ASSERT_TRUE(test::all_close(prev, prev_golden[i], tolerance, tolerance)) << "step " << i;
    prev_error = std::max(prev_error, max_abs_error(prev, prev_golden[i]));
    if (unipc) {
      ASSERT_TRUE(test::all_close(unipc_scheduler->x0_pred(), x0_golden[i], tolerance, tolerance))
          << "x0_pred, step " << i;
      ASSERT_TRUE(test::all_close(unipc_scheduler->corrected_sample(), corrected_golden[i],
                                  tolerance, tolerance))
          << "corrected_sample, step " << i;
      EXPECT_EQ(unipc_scheduler->this_order(), order_golden[i].item<int64_t>()) << "step " << i;
      x0_error = std::max(x0_error, max_abs_error(unipc_scheduler->x0_pred(), x0_golden[i]));
      corrected_error = std::max(
          corrected_error, max_abs_error(unipc_scheduler->corrected_sample(), corrected_golden[i]));
    }
    sample = prev;
  }
  if (unipc) {
    // The last step goes to sigma 0 (log(0) = -inf, h = inf): exactly the x0 prediction.
    EXPECT_TRUE(at::equal(sample, unipc_scheduler->x0_pred()));
  }
  std::cout << "[ max err  ] " << c.folder << " steps " << c.steps << ": prev_sample "
            << prev_error;
  if (unipc) std::cout << ", x0_pred " << x0_error << ", corrected_sample " << corrected_error;
  std::cout << "\n";
}

INSTANTIATE_TEST_SUITE_P(DiffusionScheduler, DiffusionSchedulerGolden,
                         ::testing::ValuesIn(all_cases()), case_name);

TEST(DiffusionScheduler, FlowShiftOverrideMatchesThatConfig) {
  for (const std::string kind : {"unipc", "euler"}) {
    std::unique_ptr<Scheduler> scheduler =
        load_scheduler(test::golden_path("scheduler/" + kind + "_shift3/scheduler_config.json"));
    EXPECT_EQ(scheduler->flow_shift(), 3.0);
    scheduler->set_flow_shift(5.0);
    scheduler->set_timesteps(10);
    const std::string file = "scheduler/" + kind + "_shift5/steps10.safetensors";
    EXPECT_TRUE(at::equal(scheduler->timesteps(), test::golden_tensor(file, "timesteps"))) << kind;
    EXPECT_TRUE(
        test::all_close(scheduler->sigmas(), test::golden_tensor(file, "sigmas"), kSigmaAtol, 0))
        << kind;
  }
}

TEST(DiffusionScheduler, DocumentedTimesteps) {
  std::unique_ptr<Scheduler> unipc = load_scheduler(test::golden_path("scheduler/unipc_shift3"));
  unipc->set_timesteps(4);
  EXPECT_TRUE(at::equal(unipc->timesteps(), at::tensor({999, 900, 750, 500}, at::kLong)));
  unipc->set_timesteps(10);
  EXPECT_TRUE(at::equal(unipc->timesteps(),
                        at::tensor({999, 964, 923, 875, 818, 750, 667, 563, 429, 251}, at::kLong)));
}

TEST(DiffusionScheduler, StepsMustBeConsecutive) {
  std::unique_ptr<Scheduler> scheduler =
      load_scheduler(test::golden_path("scheduler/unipc_shift3"));
  const at::Tensor x = at::zeros({1, 4, 1, 2, 2});
  EXPECT_THROW(scheduler->step(x, 0, x), Error);  // before set_timesteps
  scheduler->set_timesteps(4);
  scheduler->step(x, 0, x);
  EXPECT_THROW(scheduler->step(x, 2, x), Error);
  EXPECT_THROW(scheduler->step(x, 4, x), Error);
  scheduler->set_timesteps(4);  // resets
  EXPECT_NO_THROW(scheduler->step(x, 0, x));
}

TEST(DiffusionScheduler, ScaleNoiseInterpolates) {
  std::unique_ptr<Scheduler> scheduler =
      load_scheduler(test::golden_path("scheduler/euler_shift3"));
  scheduler->set_timesteps(4);
  const at::Tensor sample = at::ones({2, 3}), noise = at::full({2, 3}, 3.0);
  const double sigma = scheduler->sigmas()[1].item<double>();
  EXPECT_TRUE(test::all_close(scheduler->scale_noise(sample, 1, noise),
                              at::full({2, 3}, sigma * 3 + (1 - sigma)), 1e-6, 0));
}

std::string load_error(const std::string& json_text) {
  test::TempDir dir;
  std::ofstream(dir.file("scheduler_config.json")) << json_text;
  try {
    load_scheduler(dir.path());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DiffusionScheduler, ConfigErrorsNameTheKey) {
  EXPECT_NE(load_error(R"({"_class_name": "DDIMScheduler"})").find("DDIMScheduler"),
            std::string::npos);
  EXPECT_NE(load_error(R"({"_class_name": "UniPCMultistepScheduler", "use_flow_sigmas": true,
                           "prediction_type": "flow_prediction", "use_karras_sigmas": true})")
                .find("use_karras_sigmas"),
            std::string::npos);
  EXPECT_NE(load_error(R"({"_class_name": "UniPCMultistepScheduler",
                           "prediction_type": "epsilon"})")
                .find("prediction_type"),
            std::string::npos);
  EXPECT_NE(load_error(R"({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": "x"})")
                .find("shift"),
            std::string::npos);
  EXPECT_NE(load_error("{not json").find("scheduler_config.json"), std::string::npos);
  EXPECT_THROW(load_scheduler("/nonexistent/scheduler"), Error);
}

TEST(DiffusionScheduler, NumpyLinspace) {
  const std::vector<double> values = numpy_linspace(1, 0.001, 5);
  const std::vector<double> expected = {1, 0.75025, 0.5005, 0.25075, 0.001};
  ASSERT_EQ(values.size(), expected.size());
  for (size_t i = 0; i < values.size(); ++i) EXPECT_NEAR(values[i], expected[i], 1e-15);
  EXPECT_EQ(values.back(), 0.001);  // the end point is exact
  EXPECT_EQ(numpy_linspace(2, 3, 1), std::vector<double>{2});
  EXPECT_TRUE(numpy_linspace(0, 1, 0).empty());
}

}  // namespace
}  // namespace beatfarm::models
