// The `wan` backend: peak clips are Wan text-to-video generations (libtorch pipelines on the
// Diffusers checkpoint the user has).
#pragma once

#include <memory>
#include <string>

#include "render/backend.h"

namespace beatfarm::render {

struct WanBackendOptions {
  std::string model;            // resolved Diffusers folder
  std::string model_id;         // what the user asked for (recorded in task files)
  std::string dtype = "bf16";   // bf16 | fp32
  std::string device = "auto";  // auto | cpu | cuda
  std::string cpu_offload = "model";
  bool text_encoder_cpu = false;
  int steps = 0;                  // 0: the model's default
  double guidance_scale = -1;     // < 0: the model's default
  double guidance_scale_2 = -1;
  double flow_shift = 0;          // 0: the scheduler's
};

std::unique_ptr<Backend> make_wan_backend(const WanBackendOptions& options);

}  // namespace beatfarm::render
