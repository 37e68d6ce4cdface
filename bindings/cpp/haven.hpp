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
//   haven::session s = db.session(10000);       // a lease, kept alive in the background
//   { haven::lock_guard g(db, s, "jobs", 5000); use(g.token()); }  // released at scope end
//   haven::watch w = db.watch("jobs/", [](const haven::watch_event &e) { ... });
//   { haven::leadership l = db.campaign(s, "primary", "me"); l.proclaim("me:2"); } // resigns
//
// A db may be used from many threads at once; it is closed by its destructor. Destroy
// sessions, lock guards, leaderships, watches and observers before the db they came from.
#ifndef HAVEN_HPP
#define HAVEN_HPP

#include "haven.h"

#include <cstdint>
#include <functional>
#include <memory>
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

/// Lock modes of `lock_guard`.
enum class lock_mode { exclusive = HAVEN_LOCK_EXCLUSIVE, shared = HAVEN_LOCK_SHARED };

/// A session (lease), kept alive in the background while this object lives; destroying it
/// stops the keepalives (it then expires after its TTL). Movable, not copyable.
class session {
public:
    explicit session(haven_session_t *s) noexcept : s_(s) {}
    session(const session &) = delete;
    session &operator=(const session &) = delete;
    session(session &&other) noexcept : s_(std::exchange(other.s_, nullptr)) {}
    session &operator=(session &&other) noexcept {
        std::swap(s_, other.s_);
        return *this;
    }
    ~session() { haven_session_free(s_); }

    uint64_t id() const {
        uint64_t id = 0;
        detail::check(haven_session_id(s_, &id));
        return id;
    }
    /// HAVEN_SESSION_ALIVE, HAVEN_SESSION_UNKNOWN or HAVEN_SESSION_LOST.
    int state() const {
        int state = 0;
        detail::check(haven_session_state(s_, &state));
        return state;
    }
    /// End it now: its locks are released.
    void revoke() { detail::check(haven_session_revoke(s_)); }
    haven_session_t *get() const noexcept { return s_; }

private:
    haven_session_t *s_ = nullptr;
};

/// One change (or the end) of a watch: the fields of haven_watch_event_t, copied.
struct watch_event {
    int kind;          ///< HAVEN_WATCH_PUT, _DELETE, _PROGRESS or _END
    uint64_t revision; ///< of the change (END: see haven.h)
    std::string key;
    std::string value;
    int code;            ///< HAVEN_OK, or for END why it ended
    std::string message; ///< for END
};

/// A running watch: its callback runs on a thread of the watch's own (see haven_watch). The
/// destructor cancels it and waits for a running callback to return (do not destroy it from
/// inside its own callback). Movable, not copyable.
class watch {
public:
    using callback = std::function<void(const watch_event &)>;

    watch(haven_t *h, std::string_view prefix, uint64_t from_revision, callback fn)
        : fn_(std::make_unique<callback>(std::move(fn))) {
        detail::check(haven_watch(h, detail::bytes(prefix), prefix.size(), from_revision,
                                  &watch::trampoline, fn_.get(), &w_));
    }
    watch(const watch &) = delete;
    watch &operator=(const watch &) = delete;
    watch(watch &&other) noexcept
        : fn_(std::move(other.fn_)), w_(std::exchange(other.w_, nullptr)) {}
    watch &operator=(watch &&other) noexcept {
        std::swap(fn_, other.fn_);
        std::swap(w_, other.w_);
        return *this;
    }
    ~watch() { cancel(); }

    /// Stop it: when this returns no callback runs or will start.
    void cancel() noexcept { haven_watch_cancel(std::exchange(w_, nullptr)); }

private:
    static void trampoline(void *user_data, const haven_watch_event_t *e) {
        watch_event event{e->kind,
                          e->revision,
                          e->key ? std::string(reinterpret_cast<const char *>(e->key), e->key_len)
                                 : std::string(),
                          e->value ? std::string(reinterpret_cast<const char *>(e->value),
                                                 e->value_len)
                                   : std::string(),
                          e->code,
                          e->message ? std::string(e->message) : std::string()};
        try {
            (*static_cast<callback *>(user_data))(event);
        } catch (...) {
            // An exception must not unwind into haven's thread.
        }
    }

    std::unique_ptr<callback> fn_; // stable address: haven holds it as user_data
    haven_watch_t *w_ = nullptr;
};

/// Who leads an election (see haven_leader).
struct leader {
    std::string value;
    uint64_t token;   ///< the leadership's fencing token
    uint64_t session; ///< the leader's session id
};

/// One change (or the end) of an observed election: haven_leader_change_t, copied.
struct leader_change {
    int kind;          ///< HAVEN_OBSERVE_LEADER, _NO_LEADER or _END
    uint64_t revision; ///< of the change
    std::optional<haven::leader> leader; ///< who leads from then on (LEADER only)
    bool after_gap;                      ///< changes before this one may be missing
    int code;                            ///< HAVEN_OK, or for END why it ended
    std::string message;                 ///< for END
};

/// A running observer of an election: its callback runs on a thread of its own (see
/// haven_observe). The destructor cancels it and waits for a running callback to return (do
/// not destroy it from inside its own callback). Movable, not copyable.
class observer {
public:
    using callback = std::function<void(const leader_change &)>;

    observer(haven_t *h, const std::string &name, callback fn)
        : fn_(std::make_unique<callback>(std::move(fn))) {
        detail::check(haven_observe(h, name.c_str(), &observer::trampoline, fn_.get(), &o_));
    }
    observer(const observer &) = delete;
    observer &operator=(const observer &) = delete;
    observer(observer &&other) noexcept
        : fn_(std::move(other.fn_)), o_(std::exchange(other.o_, nullptr)) {}
    observer &operator=(observer &&other) noexcept {
        std::swap(fn_, other.fn_);
        std::swap(o_, other.o_);
        return *this;
    }
    ~observer() { cancel(); }

    /// Stop it: when this returns no callback runs or will start.
    void cancel() noexcept { haven_observe_cancel(std::exchange(o_, nullptr)); }

private:
    static void trampoline(void *user_data, const haven_leader_change_t *c) {
        try {
            leader_change change{c->kind, c->revision, std::nullopt, c->after_gap != 0, c->code,
                                 c->message ? std::string(c->message) : std::string()};
            if (c->kind == HAVEN_OBSERVE_LEADER) {
                change.leader = haven::leader{
                    c->value ? std::string(reinterpret_cast<const char *>(c->value), c->value_len)
                             : std::string(),
                    c->token, c->session};
            }
            (*static_cast<callback *>(user_data))(change);
        } catch (...) {
            // An exception must not unwind into haven's thread.
        }
    }

    std::unique_ptr<callback> fn_; // stable address: haven holds it as user_data
    haven_observe_t *o_ = nullptr;
};

/// Leading an election (from db::campaign): resigns in the destructor (errors ignored there;
/// `resign()` reports them). Movable, not copyable.
class leadership {
public:
    leadership(haven_t *h, std::string name, uint64_t token) noexcept
        : h_(h), name_(std::move(name)), token_(token) {}
    leadership(const leadership &) = delete;
    leadership &operator=(const leadership &) = delete;
    leadership(leadership &&other) noexcept
        : h_(other.h_), name_(std::move(other.name_)), token_(std::exchange(other.token_, 0)) {}
    leadership &operator=(leadership &&) = delete;
    ~leadership() {
        if (token_ != 0) {
            haven_resign(h_, name_.c_str(), token_);
        }
    }

    /// The fencing token of this leadership (strictly increasing per election).
    uint64_t token() const noexcept { return token_; }
    const std::string &name() const noexcept { return name_; }
    /// Publish `value` as the leader's value; throws (HAVEN_ERR_LOCK_NOT_HELD if it is over).
    void proclaim(std::string_view value) {
        detail::check(haven_proclaim(h_, name_.c_str(), token_, detail::bytes(value), value.size()));
    }
    /// Step down now; throws haven::error (HAVEN_ERR_LOCK_NOT_HELD if it was over).
    void resign() { detail::check(haven_resign(h_, name_.c_str(), std::exchange(token_, 0))); }

private:
    haven_t *h_;
    std::string name_;
    uint64_t token_ = 0;
};

/// The owners of a key in a partition map (see haven_owners).
struct owners {
    uint64_t epoch;
    uint32_t partition;
    std::vector<std::string> ids; ///< primary first
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

    /// Connect with options (cluster id, timeouts, TLS: see haven_options_t; start from
    /// haven_options_init).
    static db connect(const std::string &addrs, const std::string &secret,
                      const haven_options_t &options) {
        detail::check_abi();
        haven_t *h = nullptr;
        detail::check(haven_connect_with(addrs.c_str(), secret.c_str(), &options, &h));
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

    /// Grant a session of `ttl_ms`, kept alive in the background while it lives.
    haven::session session(uint64_t ttl_ms) {
        haven_session_t *s = nullptr;
        detail::check(haven_session_grant(h_, ttl_ms, &s));
        return haven::session(s);
    }

    /// Whether `token` is a current grant of lock `name` (a linearizable read).
    bool check_token(const std::string &name, uint64_t token) {
        int valid = 0;
        detail::check(haven_check_token(h_, name.c_str(), token, &valid));
        return valid != 0;
    }

    /// Every lock with holders or waiters, as JSON (see haven_locks_json).
    std::string locks_json() {
        detail::buffer json;
        detail::check(haven_locks_json(h_, &json.buf));
        return json.str();
    }

    /// The owners of `key` in partition map `map`, primary first.
    haven::owners owners(const std::string &map, std::string_view key) {
        detail::buffer records;
        haven::owners out{0, 0, {}};
        detail::check(haven_owners(h_, map.c_str(), detail::bytes(key), key.size(), &out.epoch,
                                   &out.partition, &records.buf));
        size_t offset = 0;
        while (offset < records.buf.len) {
            haven_record_t r;
            detail::check(haven_record_next(&records.buf, &offset, &r));
            out.ids.emplace_back(reinterpret_cast<const char *>(r.key), r.key_len);
        }
        return out;
    }

    /// Watch every key starting with `prefix` (see haven_watch; `fn` runs on the watch's own
    /// thread).
    haven::watch watch(std::string_view prefix, haven::watch::callback fn,
                       uint64_t from_revision = 0) {
        return haven::watch(h_, prefix, from_revision, std::move(fn));
    }

    /// Campaign in election `name` through `s` with `value`; returns once leading (see
    /// haven_campaign: `wait_ms` -1 forever; not leading in time -> haven::error with code
    /// HAVEN_ERR_TIMEOUT, the campaign withdrawn). The leadership resigns when destroyed.
    haven::leadership campaign(haven::session &s, const std::string &name, std::string_view value,
                               int64_t wait_ms = -1) {
        uint64_t token = 0;
        detail::check(haven_campaign(h_, s.get(), name.c_str(), detail::bytes(value), value.size(),
                                     wait_ms, &token));
        return haven::leadership(h_, name, token);
    }

    /// Who leads election `name` (a linearizable read); nullopt if nobody.
    std::optional<haven::leader> leader(const std::string &name) {
        detail::buffer value;
        haven::leader out{std::string(), 0, 0};
        int found = 0;
        detail::check(haven_leader(h_, name.c_str(), &value.buf, &out.token, &out.session, &found));
        if (found == 0) {
            return std::nullopt;
        }
        out.value = value.str();
        return out;
    }

    /// Observe election `name`: the leader now, then every change (see haven_observe; `fn`
    /// runs on the observer's own thread).
    haven::observer observe(const std::string &name, haven::observer::callback fn) {
        return haven::observer(h_, name, std::move(fn));
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


/// A held lock, released by the destructor (errors ignored there; `unlock()` reports them).
/// Waits as haven_lock's `wait_ms` says (0: try, -1: forever); not granted ->
/// haven::error with code HAVEN_ERR_TIMEOUT. Movable, not copyable.
class lock_guard {
public:
    lock_guard(db &d, session &s, std::string name, int64_t wait_ms = -1,
               lock_mode mode = lock_mode::exclusive)
        : h_(d.get()), s_(s.get()), name_(std::move(name)) {
        detail::check(haven_lock(h_, s_, name_.c_str(), static_cast<int>(mode), wait_ms, &token_));
    }
    lock_guard(const lock_guard &) = delete;
    lock_guard &operator=(const lock_guard &) = delete;
    lock_guard(lock_guard &&other) noexcept
        : h_(other.h_), s_(other.s_), name_(std::move(other.name_)),
          token_(std::exchange(other.token_, 0)) {}
    lock_guard &operator=(lock_guard &&) = delete;
    ~lock_guard() {
        if (token_ != 0) {
            haven_unlock(h_, s_, name_.c_str(), token_);
        }
    }

    /// The fencing token of this grant: pass it with every write to the protected resource.
    uint64_t token() const noexcept { return token_; }
    const std::string &name() const noexcept { return name_; }
    /// Release now; throws haven::error (HAVEN_ERR_LOCK_NOT_HELD if the grant was gone).
    void unlock() { detail::check(haven_unlock(h_, s_, name_.c_str(), std::exchange(token_, 0))); }

private:
    haven_t *h_;
    haven_session_t *s_;
    std::string name_;
    uint64_t token_ = 0;
};

} // namespace haven

#endif
