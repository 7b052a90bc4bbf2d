// The preview backend: procedural, deterministic, beat-reactive visuals with no model
// weights. It is an animatic for checking the cut against the music before paying for GPU
// hours, not an imitation of Wan.
#pragma once

#include <memory>

#include "render/backend.h"

namespace beatfarm::render {

std::unique_ptr<Backend> make_preview_backend();

// The looks the preview knows; any other style (custom prompts) is mapped onto one of
// them by a hash of the prompt text.
const std::vector<std::string>& preview_styles();

}  // namespace beatfarm::render
