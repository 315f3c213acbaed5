// Minimal JSON writing shared by the hooks' to_json() methods (no JSON dependency in the
// installed package). Internal: not part of the documented API.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iomanip>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace torch_geometry {
namespace hooks {
namespace json {

// A double with 17 significant digits (round-trips exactly); NaN and +-inf become null,
// which JSON cannot otherwise express.
inline std::string number(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream os;
  os << std::setprecision(17) << v;
  return os.str();
}

// Length of the well-formed UTF-8 sequence starting at s[i] (1-4) and true, or, where the
// bytes there are not one (stray continuation byte, overlong form, surrogate, > U+10FFFF,
// truncated sequence), the length of their longest valid prefix (at least 1) and false:
// the "maximal subpart" that Unicode (and Python's decoder) replaces by one U+FFFD.
inline std::pair<size_t, bool> utf8_sequence(const std::string& s, size_t i) {
  const auto byte = [&](size_t j) { return static_cast<unsigned char>(s[j]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return {1, true};
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // UTF-16 surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return {1, false};
  }
  size_t j = 1;
  for (; j < n && i + j < s.size(); ++j) {
    const unsigned char b = byte(i + j);
    if (j == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
  }
  return {j, j == n};
}

// A JSON string literal: quotes, backslashes and control characters escaped. JSON text is
// UTF-8, so a byte that is not part of a well-formed UTF-8 sequence (e.g. a message built
// from Latin-1 text) becomes U+FFFD, the replacement character, as Python's
// errors="replace" decoding does; valid multi-byte characters pass through.
inline std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    const auto seq = utf8_sequence(s, i);
    const size_t n = seq.first;
    if (!seq.second) {
      out += "\\ufffd";
      i += n;
      continue;
    }
    if (n > 1) {
      out.append(s, i, n);
      i += n;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
    ++i;
  }
  return out + "\"";
}

inline std::string array(const std::vector<double>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + number(v[i]);
  return out + "]";
}

inline std::string array(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

} // namespace json
} // namespace hooks
} // namespace torch_geometry
