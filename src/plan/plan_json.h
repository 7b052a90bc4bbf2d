// plan.json: the analysis and the timeline, human readable, and the form in which rank 0
// hands the plan to the other ranks.
#pragma once

#include <nlohmann/json.hpp>

#include "plan/timeline.h"

namespace beatfarm::plan {

nlohmann::json to_json(const Timeline& timeline);
// Throws Error naming the missing or malformed field.
Timeline timeline_from_json(const nlohmann::json& json);

}  // namespace beatfarm::plan
