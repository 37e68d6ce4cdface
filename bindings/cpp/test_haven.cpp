// The C++ binding's test: one member in this process, every wrapper, errors as exceptions.
// Prints "N passed, N failed"; exits non-zero on failure.
#include "haven.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>
#include <mutex>
#include <thread>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (cond) {                                                                     \
            passed++;                                                                   \
        } else {                                                                        \
            failed++;                                                                   \
            std::fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                               \
    } while (0)

static int free_port() {
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) != 0) {
        std::perror("free_port");
        std::exit(2);
    }
    close(fd);
    return ntohs(addr.sin_port);
}

template <typename F> static int code_of(F f) {
    try {
        f();
    } catch (const haven::error &e) {
        return e.code();
    }
    return HAVEN_OK;
}

// The README's C++ example is this function's marked part (tests/ffi_header.rs checks it).
static void readme_example(haven::db &db) {
    // README:begin
    db.put("config/mode", "fast");
    std::optional<std::string> mode = db.get("config/mode");  // std::nullopt if absent
    bool swapped = db.cas("config/mode", std::string_view("fast"), "safe");

    haven::session session = db.session(10000);  // a lease, kept alive in the background
    {
        haven::lock_guard lock(db, session, "backup", 5000);  // waits up to 5 s
        std::printf("mode %s, swapped %d, token %llu\n", mode.value_or("?").c_str(), swapped,
                    static_cast<unsigned long long>(lock.token()));
    }  // released here
    {
        haven::leadership leading = db.campaign(session, "scheduler", "10.0.0.7", 5000);
        leading.proclaim("10.0.0.8");
        std::optional<haven::leader> now = db.leader("scheduler");  // std::nullopt: nobody
        std::printf("leader %s\n", now ? now->value.c_str() : "none");
    }  // resigns here
    // README:end
    CHECK(mode == std::optional<std::string>("fast") && swapped);
}

static void test_coordination(haven::db &db) {
    haven::session s1 = db.session(5000);
    haven::session s2 = db.session(5000);
    CHECK(s1.id() != s2.id() && s1.state() == HAVEN_SESSION_ALIVE);
    uint64_t first = 0;
    {
        haven::lock_guard guard(db, s1, "jobs", 0);
        first = guard.token();
        CHECK(first > 0 && guard.name() == "jobs");
        CHECK(db.check_token("jobs", first));
        CHECK(code_of([&] { haven::lock_guard again(db, s2, "jobs", 0); }) == HAVEN_ERR_TIMEOUT);
        CHECK(code_of([&] { haven::lock_guard again(db, s2, "jobs", 200); }) == HAVEN_ERR_TIMEOUT);
        CHECK(db.locks_json().find("\"name\":\"jobs\"") != std::string::npos);
    }
    CHECK(!db.check_token("jobs", first));
    {
        haven::lock_guard shared_a(db, s1, "jobs", 0, haven::lock_mode::shared);
        haven::lock_guard shared_b(db, s2, "jobs", 0, haven::lock_mode::shared);
        CHECK(shared_a.token() > first && shared_b.token() > first);
        shared_b.unlock();
        CHECK(code_of([&] { shared_b.unlock(); }) == HAVEN_ERR_LOCK_NOT_HELD);
    }
    s2.revoke();
    CHECK(s2.state() == HAVEN_SESSION_LOST);
    CHECK(code_of([&] { haven::lock_guard g(db, s2, "jobs", 0); }) == HAVEN_ERR_SESSION_EXPIRED);

    CHECK(haven_map_create(db.get(), "shards", 4, 2) == HAVEN_OK);
    CHECK(haven_map_join(db.get(), "shards", "a", 1) == HAVEN_OK);
    CHECK(haven_map_join(db.get(), "shards", "b", 1) == HAVEN_OK);
    haven::owners o = db.owners("shards", "user/1");
    CHECK(o.ids.size() == 2 && o.partition < 4 && o.epoch >= 3);
    CHECK(o.ids.size() == 2 && o.ids[0] != o.ids[1]);
    CHECK(code_of([&] { db.owners("nope", "k"); }) == HAVEN_ERR_INVALID_ARGUMENT);

    std::mutex mutex;
    std::condition_variable changed;
    std::vector<haven::watch_event> events;
    std::atomic<bool> other_thread{true};
    const std::thread::id self = std::this_thread::get_id();
    {
        haven::watch w = db.watch("w/", [&](const haven::watch_event &e) {
            if (e.kind == HAVEN_WATCH_PROGRESS) {
                return;
            }
            if (std::this_thread::get_id() == self) {
                other_thread = false;
            }
            std::lock_guard<std::mutex> g(mutex);
            events.push_back(e);
            changed.notify_all();
        });
        db.put("w/1", "one");
        db.remove("w/1");
        std::unique_lock<std::mutex> g(mutex);
        changed.wait(g, [&] { return events.size() >= 2; });
    }
    CHECK(events.size() == 2 && other_thread);
    CHECK(events[0].kind == HAVEN_WATCH_PUT && events[0].key == "w/1" && events[0].value == "one");
    CHECK(events[1].kind == HAVEN_WATCH_DELETE && events[1].revision > events[0].revision);
}

static void test_elections(haven::db &db) {
    haven::session s1 = db.session(5000), s2 = db.session(5000);
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<haven::leader_change> seen;
    std::atomic<bool> other_thread{true};
    const std::thread::id self = std::this_thread::get_id();
    haven::observer o = db.observe("primary", [&](const haven::leader_change &c) {
        if (std::this_thread::get_id() == self) {
            other_thread = false;
        }
        std::lock_guard<std::mutex> g(mutex);
        seen.push_back(c);
        changed.notify_all();
    });
    auto wait_seen = [&](size_t n) {
        std::unique_lock<std::mutex> g(mutex);
        changed.wait(g, [&] { return seen.size() >= n; });
    };
    CHECK(!db.leader("primary").has_value());
    uint64_t first = 0, second = 0;
    {
        haven::leadership l = db.campaign(s1, "primary", "a");
        first = l.token();
        CHECK(first > 0 && l.name() == "primary");
        std::optional<haven::leader> now = db.leader("primary");
        CHECK(now && now->value == "a" && now->token == first && now->session == s1.id());
        l.proclaim("b");
        CHECK(db.leader("primary")->value == "b");
        // A second campaigner times out (withdrawn), then takes over from another thread.
        CHECK(code_of([&] { db.campaign(s2, "primary", "c", 200); }) == HAVEN_ERR_TIMEOUT);
        CHECK(db.leader("primary")->token == first);
        wait_seen(3); // nobody, a, b
        int late = HAVEN_OK;
        std::thread t([&] {
            haven::leadership l2 = db.campaign(s2, "primary", "c");
            second = l2.token();
            l2.resign();
            late = code_of([&] { l2.proclaim("late"); });
        });
        l.resign();
        CHECK(code_of([&] { l.resign(); }) == HAVEN_ERR_LOCK_NOT_HELD);
        t.join();
        CHECK(late == HAVEN_ERR_LOCK_NOT_HELD);
    }
    CHECK(second > first && !db.leader("primary").has_value());
    {
        std::unique_lock<std::mutex> g(mutex);
        changed.wait(g, [&] { return !seen.empty() && seen.back().leader.has_value() == false &&
                                     seen.size() >= 5; });
    }
    o.cancel();
    CHECK(other_thread && seen.size() >= 5);
    CHECK(!seen[0].leader && seen[0].kind == HAVEN_OBSERVE_NO_LEADER);
    CHECK(seen[1].leader && seen[1].leader->value == "a" && seen[1].leader->token == first);
    CHECK(seen[2].leader && seen[2].leader->value == "b" && !seen[2].after_gap);
    bool saw_second = false;
    for (const auto &c : seen) {
        saw_second = saw_second || (c.leader && c.leader->token == second && c.leader->value == "c");
    }
    CHECK(saw_second);
    CHECK(code_of([&] { db.leader(""); }) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(code_of([&] { db.observe("", [](const haven::leader_change &) {}); }) ==
          HAVEN_ERR_INVALID_ARGUMENT);
}

int main() {
    char dir_template[] = "/tmp/haven-cpptest-XXXXXX";
    const char *dir = mkdtemp(dir_template);
    if (dir == nullptr) {
        return 2;
    }
    std::string listen = "127.0.0.1:" + std::to_string(free_port());
    const std::string secret = "sixteen or more bytes of secret";

    CHECK(code_of([] { haven::config().set("colour", "blue"); }) == HAVEN_ERR_INVALID_ARGUMENT);
    try {
        haven::config().set("id", "one");
        CHECK(false);
    } catch (const haven::error &e) {
        CHECK(std::string(e.name()) == "HAVEN_ERR_INVALID_ARGUMENT");
        CHECK(std::string(e.what()).find("id") != std::string::npos);
    }

    {
        haven::config cfg;
        cfg.set("id", "1")
            .set("listen", listen)
            .set("peers", "1=" + listen)
            .set("data_dir", std::string(dir) + "/member")
            .set("secret", secret);
        haven::db db = haven::db::open(cfg);

        db.put("a/1", "one");
        CHECK(db.get("a/1") == std::optional<std::string>("one"));
        CHECK(!db.get("missing").has_value());
        CHECK(db.get("a/1", true) == std::optional<std::string>("one"));
        CHECK(!db.cas("a/1", std::string_view("two"), "x"));
        CHECK(db.cas("a/1", std::string_view("one"), "uno"));
        CHECK(db.cas("a/2", std::nullopt, "dos"));
        CHECK(!db.cas("a/2", std::nullopt, "again"));
        db.put(std::string_view("bin\0key", 7), std::string_view("v\0v", 3));
        CHECK(db.get(std::string_view("bin\0key", 7)) == std::optional<std::string>(std::string("v\0v", 3)));

        std::vector<haven::entry> entries = db.scan("a/");
        CHECK(entries.size() == 2);
        CHECK(entries.size() == 2 && entries[0].key == "a/1" && entries[0].value == "uno");
        CHECK(entries.size() == 2 && entries[1].key == "a/2" && entries[1].value == "dos");
        CHECK(db.remove("a/2"));
        CHECK(!db.remove("a/2"));

        std::string big(4097, 'k');
        CHECK(code_of([&] { db.put(big, "v"); }) == HAVEN_ERR_INVALID_ARGUMENT);
        CHECK(code_of([&] { db.put("", "v"); }) == HAVEN_ERR_INVALID_ARGUMENT);
        CHECK(db.status_json().find("\"role\":\"leader\"") != std::string::npos);
        readme_example(db);
        test_coordination(db);
        test_elections(db);

        // One handle, many threads.
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; t++) {
            threads.emplace_back([&db, t] {
                for (int i = 0; i < 20; i++) {
                    db.put("t/" + std::to_string(t) + "/" + std::to_string(i), "x");
                }
            });
        }
        for (auto &t : threads) {
            t.join();
        }
        CHECK(db.scan("t/").size() == 80);

        {
            haven::db remote = haven::db::connect(listen, secret + "\n");
            CHECK(remote.get("a/1") == std::optional<std::string>("uno"));
            haven::db moved = std::move(remote);
            CHECK(moved.get("a/1") == std::optional<std::string>("uno"));
        }
        CHECK(code_of([&] { haven::db::connect(listen, "a wrong secret of some length"); }) ==
              HAVEN_ERR_AUTH);
        db.close();
    }

    std::string command = std::string("rm -rf '") + dir + "'";
    if (std::system(command.c_str()) != 0) {
        failed++;
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
