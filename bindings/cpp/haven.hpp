// haven.hpp: header-only C++17 RAII over the C ABI (include/haven.h). No logic of its own:
// every call is one C call, a non-zero status becomes a haven::error carrying the code.
//
//   haven::config cfg;
//   cfg.set("id", "1").set("listen", "127.0.0.1:7001").set("peers", "1=127.0.0.1:7001")
//      .set("data_dir", "/tmp/h1").set("secret", "sixteen or more bytes");
//   haven::db db = haven::db::open(cfg);       // or haven::db::connect("h:p,h:p", secret)
//   db.put("k", "v");
//   std::optional<std::string> v = db.get("k");
//
// A db may be used from many threads at once; it is closed by its destructor.
#ifndef HAVEN_HPP
#define HAVEN_HPP

#include "haven.h"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace haven {

/// A failed haven call: `code()` is the HAVEN_ERR_* status, `what()` haven's message.
class error : public std::runtime_error {
public:
    error(int code, const std::string &message) : std::runtime_error(message), code_(code) {}
    int code() const noexcept { return code_; }
    /// The code's name, "HAVEN_ERR_TIMEOUT" for example.
    const char *name() const noexcept { return haven_code_name(code_); }

private:
    int code_;
};

namespace detail {
inline void check(int rc) {
    if (rc != HAVEN_OK) {
        throw error(rc, std::string(haven_code_name(rc)) + ": " + haven_last_error());
    }
}

inline const uint8_t *bytes(std::string_view s) {
    return reinterpret_cast<const uint8_t *>(s.data());
}

/// A haven_buf_t freed on scope exit.
struct buffer {
    haven_buf_t buf{nullptr, 0};
    buffer() = default;
    buffer(const buffer &) = delete;
    buffer &operator=(const buffer &) = delete;
    ~buffer() { haven_buf_free(&buf); }
    std::string str() const {
        return buf.len ? std::string(reinterpret_cast<const char *>(buf.data), buf.len)
                       : std::string();
    }
};

inline void check_abi() {
    if (haven_abi_version() != HAVEN_ABI_VERSION) {
        throw error(HAVEN_ERR_UNSUPPORTED_VERSION,
                    "libhaven ABI " + std::to_string(haven_abi_version()) +
                        " does not match haven.h ABI " + std::to_string(HAVEN_ABI_VERSION));
    }
}
} // namespace detail

/// One key and its value from a scan.
struct entry {
    std::string key;
    std::string value;
};

/// A member's settings (see haven_config_set for the keys).
class config {
public:
    config() { detail::check(haven_config_new(&cfg_)); }
    config(const config &) = delete;
    config &operator=(const config &) = delete;
    config(config &&other) noexcept : cfg_(std::exchange(other.cfg_, nullptr)) {}
    config &operator=(config &&other) noexcept {
        std::swap(cfg_, other.cfg_);
        return *this;
    }
    ~config() { haven_config_free(cfg_); }

    config &set(const std::string &key, const std::string &value) {
        detail::check(haven_config_set(cfg_, key.c_str(), value.c_str()));
        return *this;
    }
    const haven_config_t *get() const noexcept { return cfg_; }

private:
    haven_config_t *cfg_ = nullptr;
};

/// A handle: a member in this process or a remote client. Movable, not copyable.
class db {
public:
    /// Become a member in this process.
    static db open(const config &cfg) {
        detail::check_abi();
        haven_t *h = nullptr;
        detail::check(haven_open(cfg.get(), &h));
        return db(h);
    }

    /// Connect to `addrs` ("host:port,host:port") as a remote client.
    static db connect(const std::string &addrs, const std::string &secret) {
        detail::check_abi();
        haven_t *h = nullptr;
        detail::check(haven_connect(addrs.c_str(), secret.c_str(), &h));
        return db(h);
    }

    db(const db &) = delete;
    db &operator=(const db &) = delete;
    db(db &&other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    db &operator=(db &&other) noexcept {
        std::swap(h_, other.h_);
        return *this;
    }
    ~db() { haven_close(h_); }

    /// Close now (the destructor does it otherwise); throws haven::error if a storage failure
    /// had stopped the member.
    void close() { detail::check(haven_close_status(std::exchange(h_, nullptr))); }

    void put(std::string_view key, std::string_view value) {
        detail::check(haven_put(h_, detail::bytes(key), key.size(), detail::bytes(value),
                                value.size()));
    }

    std::optional<std::string> get(std::string_view key, bool stale = false) {
        detail::buffer value;
        int found = 0;
        detail::check(haven_get_with(h_, stale ? HAVEN_READ_STALE : HAVEN_READ_LINEARIZABLE,
                                     detail::bytes(key), key.size(), &value.buf, &found));
        if (!found) {
            return std::nullopt;
        }
        return value.str();
    }

    /// Store `new_value` if the value is `expected` (std::nullopt: if the key is absent).
    bool cas(std::string_view key, std::optional<std::string_view> expected,
             std::string_view new_value) {
        int swapped = 0;
        std::string_view e = expected.value_or(std::string_view());
        detail::check(haven_cas(h_, detail::bytes(key), key.size(), detail::bytes(e), e.size(),
                                expected ? 0 : 1, detail::bytes(new_value), new_value.size(),
                                &swapped));
        return swapped != 0;
    }

    /// Delete `key`; true if it existed.
    bool remove(std::string_view key) {
        int existed = 0;
        detail::check(haven_delete(h_, detail::bytes(key), key.size(), &existed));
        return existed != 0;
    }

    /// Up to `limit` keys starting with `prefix`, in key order.
    std::vector<entry> scan(std::string_view prefix, uint32_t limit = 1000) {
        detail::buffer records;
        size_t count = 0, offset = 0;
        detail::check(haven_scan(h_, detail::bytes(prefix), prefix.size(), limit, &records.buf,
                                 &count, nullptr));
        std::vector<entry> out;
        out.reserve(count);
        while (offset < records.buf.len) {
            haven_record_t r;
            detail::check(haven_record_next(&records.buf, &offset, &r));
            out.push_back({std::string(reinterpret_cast<const char *>(r.key), r.key_len),
                           std::string(reinterpret_cast<const char *>(r.value), r.value_len)});
        }
        return out;
    }

    /// The member's status as JSON (see haven_status_json).
    std::string status_json() {
        detail::buffer json;
        detail::check(haven_status_json(h_, &json.buf));
        return json.str();
    }

    haven_t *get() const noexcept { return h_; }

private:
    explicit db(haven_t *h) : h_(h) {}
    haven_t *h_ = nullptr;
};

} // namespace haven

#endif
