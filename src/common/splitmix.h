// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fully specified mix for seeds, so derived seeds
// are the same with every standard library.
#pragma once

#include <cstdint>

namespace beatfarm {

constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;

inline uint64_t splitmix64(uint64_t x) {
  x += kGoldenGamma;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace beatfarm
