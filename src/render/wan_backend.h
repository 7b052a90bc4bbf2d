// The `wan` backend: peak clips are Wan text-to-video generations (libtorch pipelines on the
// Diffusers checkpoint the user has).
#pragma once

#include <memory>
#include <string>

#include "render/backend.h"

namespace beatfarm::parallel {
class Communicator;
}

namespace beatfarm::render {

struct WanBackendOptions {
  std::string model;            // resolved Diffusers folder
  std::string model_id;         // what the user asked for (recorded in task files)
  std::string flf2v_model;      // resolved FLF2V folder; "" when absent (loaded on first use)
  std::string flf2v_model_id;
  std::string bim_weights;      // BiM-VFI safetensors; "" when absent
  std::string dtype = "bf16";   // bf16 | fp32
  std::string device = "auto";  // auto | cpu | cuda
  std::string cpu_offload = "model";
  bool text_encoder_cpu = false;
  bool vae_tiling = false;  // decode in tiles (split over the tensor-parallel group)
  int steps = 0;                  // 0: the model's default
  double guidance_scale = -1;     // < 0: the model's default
  double guidance_scale_2 = -1;
  double flow_shift = 0;          // 0: the scheduler's
  // Tensor parallelism: the group this rank renders with (null: alone). Every rank of the group
  // makes the backend and renders each task with the same request; the transformer and text
  // encoder are sharded over the group, the VAE is replicated.
  std::shared_ptr<parallel::Communicator> tp_group;
  int cuda_device = -1;  // >= 0: this rank's GPU (one rank per GPU, from the node-local rank)
};

std::unique_ptr<Backend> make_wan_backend(const WanBackendOptions& options);

}  // namespace beatfarm::render
